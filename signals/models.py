from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone


class MetricSource(models.Model):
    """Where a measurement reads its number: the built-in store or a Prometheus server."""

    class Kind(models.TextChoices):
        BUILTIN = "builtin", "built-in store"
        PROMETHEUS = "prometheus", "Prometheus"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.BUILTIN)
    url = models.URLField(blank=True, help_text="base URL of the Prometheus HTTP API")
    auth_header = models.CharField(
        max_length=1000,
        blank=True,
        help_text="sent verbatim as the Authorization header, e.g. 'Bearer …'",
    )
    timeout_seconds = models.FloatField(default=5.0, validators=[MinValueValidator(0.1)])
    verify_tls = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
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
            # one series over a window (rate, exact label sets).
            models.Index(fields=["name", "label_key", "timestamp"], name="sample_series_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.label_key} {self.value} @ {self.timestamp.isoformat()}"
