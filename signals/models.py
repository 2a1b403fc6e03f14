from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone


class MetricSource(models.Model):
    """Where a measurement reads its number: the built-in store or a Prometheus server."""

    class Kind(models.TextChoices):
        BUILTIN = "builtin", "built-in store"
        PROMETHEUS = "prometheus", "Prometheus"

    class AuthScheme(models.TextChoices):
        NONE = "", "none"
        BEARER = "bearer", "bearer token"
        BASIC = "basic", "basic auth"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.BUILTIN)
    url = models.URLField(blank=True, help_text="base URL of the Prometheus HTTP API")
    # Credentials are never stored: the secret (bearer token or basic-auth password) is read from
    # the environment variable `auth_secret_ref` names ("env:PROM_TOKEN") at each query.
    auth_scheme = models.CharField(
        max_length=10, choices=AuthScheme.choices, default=AuthScheme.NONE, blank=True
    )
    auth_username = models.CharField(max_length=200, blank=True, help_text="basic auth only")
    auth_secret_ref = models.CharField(
        max_length=200, blank=True, help_text="where the secret is: env:NAME"
    )
    auth_header = models.CharField(
        max_length=1000,
        blank=True,
        help_text="legacy, set from a Python shell only: sent verbatim as the Authorization "
        "header; cleared when credentials are set as a reference",
    )
    timeout_seconds = models.FloatField(default=5.0, validators=[MinValueValidator(0.1)])
    verify_tls = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Retired: no new SLO or step may name it; what already reads it keeps reading it.
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [("manage_metric_source", "Register, change, test and retire metric sources")]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(kind="prometheus") | ~models.Q(url=""),
                name="metric_source_prometheus_needs_url",
            ),
            models.CheckConstraint(
                condition=models.Q(timeout_seconds__gt=0),
                name="metric_source_timeout_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def __repr__(self) -> str:
        # Never print the auth header: it is a credential.
        return f"<MetricSource {self.pk} {self.name!r} {self.kind}>"

    @property
    def is_retired(self) -> bool:
        return self.retired_at is not None


class Sample(models.Model):
    """One observation in the built-in store.

    `label_key` is the canonical JSON of `labels` (sorted keys, no spaces), so one series is one
    (name, label_key) pair and queries can group and index by it without JSON operators.
    """

    name = models.CharField(max_length=200)
    labels = models.JSONField(default=dict)
    label_key = models.CharField(max_length=1000)
    timestamp = models.DateTimeField()
    value = models.FloatField()

    class Meta:
        indexes = [
            # name + window over every series: the query scans one name's window, then
            # matches label sets once per distinct label_key.
            models.Index(fields=["name", "timestamp"], name="sample_name_time"),
        ]
        constraints = [
            # One value per series and instant: a client retrying a batch (its answer lost to a
            # timeout or a broker outage) never doubles a sample. Also the index for one series
            # over a window (rate, exact label sets).
            models.UniqueConstraint(
                fields=["name", "label_key", "timestamp"], name="sample_series_time_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.label_key} {self.value} @ {self.timestamp.isoformat()}"


class SLO(models.Model):
    """A service level objective. What it declares is stored; what it is now (SLI, budget, burn
    rates) is computed from its per-minute rollup (`SLIBucket`), never typed in."""

    class Kind(models.TextChoices):
        RATIO = "ratio", "ratio (good / total events)"
        THRESHOLD = "threshold", "threshold (per-minute value against a limit)"

    class Budgeting(models.TextChoices):
        OCCURRENCES = "Occurrences", "occurrences"
        TIMESLICES = "Timeslices", "time slices"

    name = models.SlugField(max_length=63, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    service = models.CharField(max_length=80, db_index=True)
    owner = models.CharField(max_length=80, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # The OpenSLO indicator, as `signals.slo_spec.SLISpec` fields (metric refs as dicts).
    indicator = models.JSONField(default=dict)
    indicator_name = models.CharField(max_length=63, blank=True)
    source = models.ForeignKey(
        MetricSource, null=True, blank=True, on_delete=models.PROTECT, related_name="slos"
    )
    objective = models.FloatField(help_text="target as a fraction, e.g. 0.999")
    objective_name = models.CharField(max_length=100, blank=True)
    window_seconds = models.PositiveIntegerField()
    rolling = models.BooleanField(default=True)
    window_text = models.CharField(max_length=10, blank=True)
    calendar_start = models.CharField(max_length=40, blank=True)
    calendar_timezone = models.CharField(max_length=64, blank=True)
    budgeting = models.CharField(
        max_length=12, choices=Budgeting.choices, default=Budgeting.OCCURRENCES
    )
    time_slice_target = models.FloatField(null=True, blank=True)
    threshold_op = models.CharField(max_length=3, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    alert_min_events = models.PositiveIntegerField(default=20)
    # The rollup covers [rolled_up_from, rolled_up_to); its end is the "now" every computed
    # number refers to.
    rolled_up_from = models.DateTimeField(null=True, blank=True)
    rolled_up_to = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["service", "name"]
        permissions = [("manage_slo", "Import and change SLOs")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(objective__gt=0) & models.Q(objective__lt=1),
                name="slo_objective_between_0_and_1",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or self.name

    @property
    def title(self) -> str:
        return self.display_name or self.name

    @property
    def error_budget(self) -> float:
        """The share of events (or slices) allowed to be bad."""
        return 1.0 - self.objective


class SLIBucket(models.Model):
    """One closed minute of an SLO: its good and total units (events, or time slices), and running
    totals since the first bucket, so any window's count is two index lookups, not a scan."""

    slo = models.ForeignKey(SLO, on_delete=models.CASCADE, related_name="buckets")
    end = models.DateTimeField(
        help_text="end of the minute (exclusive); the minute is [end-60s, end)"
    )
    good = models.FloatField(default=0)
    total = models.FloatField(default=0)
    cum_good = models.FloatField(default=0)
    cum_total = models.FloatField(default=0)
    # The per-minute number of a threshold SLI and, from the built-in store, the minute's latency
    # percentiles; None when the minute had no samples.
    value = models.FloatField(null=True, blank=True)
    p99 = models.FloatField(null=True, blank=True)
    p999 = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["slo", "end"], name="sli_bucket_one_per_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.slo_id}@{self.end.isoformat()} {self.good}/{self.total}"


class SLOAlert(models.Model):
    """A multiwindow burn-rate alert: open while both windows burn faster than its rate."""

    class Severity(models.TextChoices):
        PAGE = "page", "page"
        TICKET = "ticket", "ticket"

    slo = models.ForeignKey(SLO, on_delete=models.CASCADE, related_name="alerts")
    severity = models.CharField(max_length=6, choices=Severity.choices)
    long_window_seconds = models.PositiveIntegerField()
    short_window_seconds = models.PositiveIntegerField()
    burn_rate_threshold = models.FloatField()
    long_burn_rate = models.FloatField(help_text="at opening")
    short_burn_rate = models.FloatField(help_text="at opening")
    peak_burn_rate = models.FloatField()
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["slo", "long_window_seconds"],
                condition=models.Q(resolved_at__isnull=True),
                name="slo_alert_one_open_per_rule",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.slo} {self.severity} {self.burn_rate_threshold:g}x"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
