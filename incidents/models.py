"""Incidents: the commander's record. One hypothesis and one change at a time, every change with
its revert, and a timeline that is append-only and numbered per incident."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Incident(models.Model):
    class Severity(models.IntegerChoices):
        SEV1 = 1, "SEV1"
        SEV2 = 2, "SEV2"
        SEV3 = 3, "SEV3"
        SEV4 = 4, "SEV4"

    class Status(models.TextChoices):
        DECLARED = "declared"
        INVESTIGATING = "investigating"
        MITIGATED = "mitigated"
        RESOLVED = "resolved"
        POSTMORTEM = "postmortem"

    class Source(models.TextChoices):
        CONSOLE = "console"
        API = "api"
        ALERTMANAGER = "alertmanager"
        VERIFICATION = "verification", "failed step verification"
        SLO = "slo", "SLO burn-rate alert"

    # A mitigated incident can flare up again; a resolved one can be reopened.
    TRANSITIONS: dict[str, set[str]] = {
        "declared": {"investigating", "mitigated", "resolved"},
        "investigating": {"mitigated", "resolved"},
        "mitigated": {"investigating", "resolved"},
        "resolved": {"investigating", "postmortem"},
        "postmortem": set(),
    }
    OPEN = {"declared", "investigating", "mitigated"}
    # Minutes the commander may stay silent before the console reminds them (None: no reminder).
    NARRATION_MINUTES = {1: 10, 2: 20, 3: 60, 4: None}

    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True)
    severity = models.PositiveSmallIntegerField(choices=Severity.choices)
    status = models.CharField(max_length=14, choices=Status.choices, default=Status.DECLARED)
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.CONSOLE)
    services = models.JSONField(default=list, blank=True, help_text="services involved")
    plans = models.ManyToManyField("rollouts.Plan", blank=True, related_name="incidents")
    steps = models.ManyToManyField("rollouts.Step", blank=True, related_name="incidents")
    flags = models.ManyToManyField("rollouts.Flag", blank=True, related_name="incidents")
    slo_alert = models.ForeignKey(
        "signals.SLOAlert",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="incidents",
        help_text="the burn-rate alert this incident was declared from",
    )
    narration_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="remind the commander after this much silence"
    )
    detected_at = models.DateTimeField()
    declared_at = models.DateTimeField(default=timezone.now)
    mitigated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_narration_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(default=0, help_text="timeline entries so far")
    declared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    impact = models.TextField(blank=True)
    root_cause = models.TextField(blank=True)

    class Meta:
        ordering = ["-declared_at", "-pk"]
        permissions = [
            ("narrate", "Can post to an incident's timeline"),
            ("command", "Can command incidents: status, hypotheses, changes, flag reverts"),
            ("break_glass", "Can flip pre-authorized break-glass switches"),
        ]

    def __str__(self) -> str:
        return f"INC-{self.pk} {self.title}"

    @property
    def stream(self) -> str:
        return f"incident:{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN


class RoleAssignment(models.Model):
    """Who held which role, from when to when: a handover ends one row and starts another."""

    class Role(models.TextChoices):
        COMMANDER = "commander"
        SCRIBE = "scribe"
        COMMUNICATIONS = "communications"
        SME = "sme", "subject-matter expert"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="roles")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices)
    assumed_at = models.DateTimeField(default=timezone.now)
    renounced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["assumed_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident"],
                condition=models.Q(role="commander", renounced_at__isnull=True),
                name="one_commander_per_incident",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} of {self.incident_id}"


class TimelineEntry(models.Model):
    """Append-only: a correction is a new entry pointing at the one it corrects."""

    class Kind(models.TextChoices):
        NARRATION = "narration"
        STATUS = "status"
        HYPOTHESIS = "hypothesis"
        CHANGE = "change"
        VERIFICATION = "verification"
        REVERT = "revert"
        FLAG = "flag", "flag flip"
        BREAK_GLASS = "break_glass", "break-glass"
        ALERT = "alert"
        ROLE = "role"
        SYSTEM = "system"
        DECISION = "decision"

    SYSTEM_KINDS = {"alert", "system", "role"}

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="timeline")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=12, choices=Kind.choices)
    text = models.TextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    author_label = models.CharField(max_length=150)
    corrects = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="corrections"
    )
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["incident", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["incident", "seq"], name="timeline_seq_unique")
        ]

    def __str__(self) -> str:
        return f"{self.incident_id}#{self.seq} {self.kind}"

    @property
    def is_system(self) -> bool:
        return self.kind in self.SYSTEM_KINDS


class Hypothesis(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        CONFIRMED = "confirmed"
        REJECTED = "rejected"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="hypotheses")
    statement = models.CharField(max_length=500)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident"], condition=models.Q(status="open"), name="one_open_hypothesis"
            )
        ]

    def __str__(self) -> str:
        return self.statement


class Change(models.Model):
    """One change to the system under a hypothesis, with its expected effect and its revert."""

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "in progress"
        HELD = "held", "better: held"
        REVERTED = "reverted", "not better: reverted"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="changes")
    hypothesis = models.ForeignKey(Hypothesis, on_delete=models.PROTECT, related_name="changes")
    description = models.CharField(max_length=500)
    expected_effect = models.CharField(max_length=500)
    revert_plan = models.CharField(max_length=500)
    flag = models.ForeignKey(
        "rollouts.Flag", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    flag_version = models.ForeignKey(
        "rollouts.FlagVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="the version this change made, when it is a flag flip",
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.IN_PROGRESS)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    verification_note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["started_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident"],
                condition=models.Q(status="in_progress"),
                name="one_change_in_progress",
            )
        ]

    def __str__(self) -> str:
        return self.description


class Alert(models.Model):
    """An Alertmanager alert, deduplicated by fingerprint: it opened or joined one incident."""

    class Status(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="alerts")
    fingerprint = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=8, choices=Status.choices)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    generator_url = models.URLField(max_length=1000, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["starts_at", "pk"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class ActionItem(models.Model):
    """A follow-up after the incident, with an owner, a due date and a done state."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="action_items")
    title = models.CharField(max_length=300)
    owner = models.CharField(max_length=150)
    due_on = models.DateField(null=True, blank=True)
    done = models.BooleanField(default=False)
    done_at = models.DateTimeField(null=True, blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.title


class BreakGlassSwitch(models.Model):
    """A kill-switch flag pre-authorized for incidents: flipping it needs no approval, and is loud."""

    flag = models.OneToOneField(
        "rollouts.Flag", on_delete=models.PROTECT, related_name="break_glass"
    )
    label = models.CharField(max_length=100, help_text="what flipping it does, e.g. shed load")
    allowed_users = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="+", blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["label"]

    def __str__(self) -> str:
        return self.label


class PlanRelease(models.Model):
    """The commander let a plan that this incident holds start steps again: a recorded call."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="releases")
    plan = models.ForeignKey("rollouts.Plan", on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=300)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    released_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["incident", "plan"], name="plan_released_once")
        ]

    def __str__(self) -> str:
        return f"INC-{self.incident_id} released plan {self.plan_id}"
