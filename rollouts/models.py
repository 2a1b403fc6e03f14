"""Plans of ordered steps, feature flags with immutable versions, and who has converged on what."""

import json
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from core.text import percent_text


class Plan(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        ACTIVE = "active"
        PAUSED = "paused"
        COMPLETED = "completed"
        KILLED = "killed"

    class AssumptionPolicy(models.TextChoices):
        WARN = "warn", "warn: starting before the top assumption is probed is recorded"
        REFUSE = "refuse", "refuse: probe the top assumption before any other step starts"

    TRANSITIONS: dict[str, set[str]] = {
        "draft": {"active", "killed"},
        "active": {"paused", "completed", "killed"},
        "paused": {"active", "killed"},
        "completed": set(),
        "killed": set(),
    }
    CLOSED = {"completed", "killed"}  # nothing moves any more: no steps, assumptions or calls

    key = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    goal = models.TextField(blank=True)
    owner = models.CharField(max_length=80, help_text="owning team")
    teams = models.JSONField(default=list, help_text="teams involved, besides the step owners")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    spec_digest = models.CharField(
        max_length=64, blank=True, help_text="hash of the last applied plan file"
    )
    assumption_policy = models.CharField(
        max_length=8,
        choices=AssumptionPolicy.choices,
        default=AssumptionPolicy.WARN,
        help_text="what starting a non-probe step does while the top-ranked assumption is untested",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        permissions = [("manage_plan", "Can create plans and drive their steps")]

    def __str__(self) -> str:
        return self.name

    @property
    def stream(self) -> str:
        return f"plan:{self.pk}"

    @property
    def is_closed(self) -> bool:
        return self.status in self.CLOSED

    @property
    def starts_nothing(self) -> bool:
        return self.status != self.Status.ACTIVE


class Target(models.Model):
    """A region or environment a change must reach, e.g. eu-west or prod."""

    class Kind(models.TextChoices):
        REGION = "region"
        ENVIRONMENT = "environment"

    name = models.SlugField(max_length=60, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.REGION)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Flag(models.Model):
    class Kind(models.TextChoices):
        RELEASE = "release"
        KILL_SWITCH = "kill_switch", "kill switch"
        EXPERIMENT = "experiment"

    key = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.RELEASE)
    owner = models.CharField(max_length=80, help_text="owning team")
    current = models.OneToOneField(
        "FlagVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["key"]
        permissions = [("flip_flag", "Can change or revert a feature flag")]

    def __str__(self) -> str:
        return self.key

    @property
    def stream(self) -> str:
        return f"flag:{self.pk}"


class FlagConfigRevision(models.Model):
    """One row: the revision of the whole flag configuration, bumped under a lock by every new
    flag version. OFREP ETags and consumer convergence are expressed in it; a sequence id would
    not do, because ids can commit out of order."""

    revision = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"flag config r{self.revision}"


class FlagVersion(models.Model):
    """One immutable configuration of a flag. A change or a revert is a new version."""

    class Source(models.TextChoices):
        PLAN = "plan", "plan step"
        BOARD = "board", "flags board"
        API = "api"
        ADMIN = "admin"
        INCIDENT = "incident", "incident console"
        SEED = "seed"

    flag = models.ForeignKey(Flag, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    enabled = models.BooleanField(default=False)
    rollout_percentage = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    variants = models.JSONField(
        default=dict, help_text='variant name -> value, e.g. {"on": true, "off": false}'
    )
    on_variant = models.CharField(
        max_length=60, default="on", help_text="served inside the rollout"
    )
    off_variant = models.CharField(
        max_length=60, default="off", help_text="served outside it or when disabled"
    )
    rules = models.JSONField(
        default=list,
        help_text='targeting rules, first match wins: [{"attribute": "country", "op": "in", "values": ["NL"], "variant": "on"}]',
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.CharField(max_length=300)
    source = models.CharField(max_length=10, choices=Source.choices)
    step = models.ForeignKey(
        "Step", null=True, blank=True, on_delete=models.PROTECT, related_name="flag_versions"
    )
    restored_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    config_revision = models.PositiveBigIntegerField(
        help_text="flag-config revision this version took effect at"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["flag", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["flag", "number"], name="flag_version_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.flag_id} v{self.number}"

    def settings_dict(self) -> dict:
        """The evaluated configuration, comparable between versions (history diffs, restores)."""
        return {
            "enabled": self.enabled,
            "rollout_percentage": float(self.rollout_percentage),
            "variants": self.variants,
            "on_variant": self.on_variant,
            "off_variant": self.off_variant,
            "rules": self.rules,
        }

    @property
    def exposure(self) -> Decimal:
        """The share of traffic the percentage rollout serves the on variant: 0 when disabled."""
        return self.rollout_percentage if self.enabled else Decimal(0)

    def _exposing_rules(self) -> set[str]:
        if not self.enabled:
            return set()
        return {
            json.dumps(rule, sort_keys=True)
            for rule in self.rules
            if isinstance(rule, dict) and rule.get("variant") != self.off_variant
        }

    def exposes_more_than(self, other: "FlagVersion | None") -> bool:
        """True when this version serves a non-off variant to someone `other` does not: a higher
        rollout percentage, or a targeting rule `other` lacks. No version exposes nothing."""
        if other is None:
            return self.exposure > 0 or bool(self._exposing_rules())
        return self.exposure > other.exposure or bool(
            self._exposing_rules() - other._exposing_rules()
        )

    def settings_text(self) -> str:
        """ "on at 25%", "off", "on at 5% + 2 rules": what a person reads before it applies."""
        if not self.enabled:
            return "off"
        text = f"on at {percent_text(self.rollout_percentage)}"
        if self.rules:
            text += f" + {len(self.rules)} rule{'s' if len(self.rules) != 1 else ''}"
        return text


class Step(models.Model):
    class Kind(models.TextChoices):
        FLAG_RAMP = "flag_ramp", "flag ramp"
        DEPLOY = "deploy"
        MANUAL = "manual", "manual change"
        EXPAND = "expand", "migration: expand"
        MIGRATE = "migrate", "migration: migrate"
        CONTRACT = "contract", "migration: contract"
        PROBE = "probe"

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        RUNNING = "running"
        VERIFYING = "verifying"
        CONVERGING = "converging"
        DONE = "done"
        FAILED = "failed"
        REVERTED = "reverted"
        SKIPPED = "skipped"

    class OnFail(models.TextChoices):
        SET_FLAG_PERCENTAGE = "set_flag_percentage", "set the step's flag to a percentage"
        RESTORE_PREVIOUS_FLAG = "restore_previous_flag", "restore the previous flag version"
        PAUSE_PLAN = "pause_plan", "pause the plan"
        FAIL_AND_PAGE = "fail_and_page", "mark failed and page"

    # Allowed moves; the service checks the rules (dependencies, lockstep, plan state) on top.
    TRANSITIONS: dict[str, set[str]] = {
        "pending": {"ready", "skipped"},
        "ready": {"running", "pending", "skipped"},
        "running": {"verifying", "failed", "reverted"},
        "verifying": {"converging", "failed", "reverted"},
        "converging": {"done", "failed", "reverted"},
        "done": {"reverted"},
        "failed": {"reverted", "ready"},
        "reverted": {"ready"},
        "skipped": set(),
    }
    ACTIVE = {"running", "verifying", "converging"}

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="steps")
    key = models.SlugField(max_length=80)
    title = models.CharField(max_length=200)
    owner_team = models.CharField(max_length=80)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    position = models.PositiveIntegerField(help_text="declared order within the plan")
    depends_on = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="dependents"
    )
    lockstep_group = models.SlugField(max_length=60, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    service = models.CharField(max_length=80, blank=True, help_text="service a deploy step ships")
    flag = models.ForeignKey(
        Flag, null=True, blank=True, on_delete=models.PROTECT, related_name="steps"
    )
    flag_percentage = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="where a flag ramp takes the flag",
    )
    rollback_command = models.CharField(max_length=300, blank=True)
    runbook_url = models.URLField(blank=True)
    pass_condition = models.TextField(blank=True)
    fail_condition = models.TextField(blank=True)
    on_fail = models.CharField(max_length=24, choices=OnFail.choices, blank=True)
    on_fail_percentage = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    measurements = models.JSONField(
        default=dict,
        blank=True,
        help_text="measurement name -> query (signals.measurements plan-file form)",
    )
    # Argo Rollouts analysis semantics; Argo's defaults where it has them.
    verify_interval_seconds = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1)]
    )
    verify_count = models.PositiveIntegerField(
        default=3,
        validators=[MinValueValidator(1)],
        help_text="evaluations that make a successful verification",
    )
    verify_initial_delay_seconds = models.PositiveIntegerField(default=0)
    failure_limit = models.PositiveIntegerField(
        default=0, help_text="failed evaluations tolerated; one more fails the verification"
    )
    consecutive_error_limit = models.PositiveIntegerField(default=4)
    inconclusive_limit = models.PositiveIntegerField(default=0)
    canary = models.JSONField(
        default=dict, blank=True, help_text="canary check: metrics compared canary vs baseline"
    )
    convergence = models.JSONField(
        default=dict,
        blank=True,
        help_text="per-target convergence predicate: a measurement with {target} and a condition",
    )
    budget_slo = models.ForeignKey(
        "signals.SLO",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="gated_steps",
        help_text="error budget gate: the SLO whose remaining budget the step needs",
    )
    budget_min_remaining = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="percent of the budget that must be left, strictly more, for the step to start",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempt_flag_version = models.ForeignKey(
        FlagVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="a flag ramp's flag version when this attempt started: what its revert restores",
    )
    targets = models.ManyToManyField(Target, through="StepTarget", related_name="steps")

    class Meta:
        ordering = ["plan", "position"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "key"], name="step_key_unique_per_plan"),
            models.UniqueConstraint(
                fields=["plan", "position"], name="step_position_unique_per_plan"
            ),
            models.CheckConstraint(
                condition=models.Q(budget_slo__isnull=True, budget_min_remaining__isnull=True)
                | models.Q(budget_slo__isnull=False, budget_min_remaining__isnull=False),
                name="step_budget_gate_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan.key}/{self.key}"

    @property
    def has_verification(self) -> bool:
        return bool(
            self.pass_condition.strip()
            and self.fail_condition.strip()
            and self.on_fail
            and self.measurements
        )


class StepTarget(models.Model):
    """Convergence of one step in one target: confirmed by consumers' fetches, a webhook or a person."""

    class State(models.TextChoices):
        PENDING = "pending"
        CONVERGED = "converged"
        FAILED = "failed"

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="step_targets")
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    converged_at = models.DateTimeField(null=True, blank=True)
    confirmed_by = models.CharField(max_length=150, blank=True)
    last_check = models.JSONField(
        default=dict, blank=True, help_text="the convergence predicate's last reading here"
    )

    class Meta:
        ordering = ["step", "target__name"]
        constraints = [
            models.UniqueConstraint(fields=["step", "target"], name="step_target_unique")
        ]

    def __str__(self) -> str:
        return f"{self.step} @ {self.target}: {self.state}"


class FlagConsumer(models.Model):
    """A registered OFREP client (an API token, a name, a target). Convergence is counted over these."""

    name = models.CharField(max_length=100, unique=True)
    token = models.OneToOneField(
        "accounts.ApiToken", on_delete=models.PROTECT, related_name="flag_consumer"
    )
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="consumers")
    held_revision = models.PositiveBigIntegerField(
        default=0, help_text="flag-config revision last served to it"
    )
    held_since = models.DateTimeField(
        null=True, blank=True, help_text="when it first fetched held_revision"
    )
    last_fetch_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["target__name", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.target})"


class Deviation(models.Model):
    """A change made outside the plan's path: recorded, surfaced, then reconciled by a person."""

    class Kind(models.TextChoices):
        FLAG_CHANGE = "flag_change", "flag changed outside its step"
        DEPLOY = "deploy", "deploy out of sequence"

    class Status(models.TextChoices):
        OPEN = "open"
        ACCEPTED = "accepted"
        REVERTED = "reverted"

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="deviations")
    step = models.ForeignKey(
        Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="deviations"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices)
    summary = models.CharField(max_length=300)
    detail = models.JSONField(default=dict)
    flag_version = models.ForeignKey(
        FlagVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    detected_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-detected_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.summary}"


class Verification(models.Model):
    """One run of a step's verification (an Argo AnalysisRun). It keeps the exact conditions,
    queries and limits it was started with, so a later edit of the step cannot rewrite history."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCESSFUL = "successful"
        FAILED = "failed"
        ERROR = "error"
        INCONCLUSIVE = "inconclusive"
        CANCELLED = "cancelled"

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="verifications")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    pass_condition = models.TextField()
    fail_condition = models.TextField()
    measurements = models.JSONField(default=dict)
    canary = models.JSONField(default=dict, blank=True)
    on_fail = models.CharField(max_length=24, choices=Step.OnFail.choices)
    on_fail_percentage = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    interval_seconds = models.PositiveIntegerField()
    count = models.PositiveIntegerField()
    failure_limit = models.PositiveIntegerField()
    consecutive_error_limit = models.PositiveIntegerField()
    inconclusive_limit = models.PositiveIntegerField()
    measured = models.PositiveIntegerField(default=0, help_text="evaluations recorded")
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    consecutive_errors = models.PositiveIntegerField(default=0)
    inconclusive = models.PositiveIntegerField(default=0)
    next_due_at = models.DateTimeField(null=True, blank=True)
    breach_pending_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="a breaching sample arrived then and no evaluation has judged it yet",
    )
    conclusion = models.CharField(max_length=500, blank=True)
    concluded_by = models.OneToOneField(
        "Evaluation", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(
        max_length=300, blank=True, help_text="what the on-fail or fail-safe action did"
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["status", "next_due_at"], name="verification_due")]

    def __str__(self) -> str:
        return f"verification {self.pk} of {self.step_id}: {self.status}"

    @property
    def stream(self) -> str:
        return f"step:{self.step_id}"


class Evaluation(models.Model):
    """One evaluation of a verification: the numbers it saw, the queries that gave them, the verdict."""

    class Outcome(models.TextChoices):
        PASS = "pass"
        FAIL = "fail"
        INCONCLUSIVE = "inconclusive"
        ERROR = "error"

    class Trigger(models.TextChoices):
        INTERVAL = "interval"
        INGEST = "ingest", "breaching sample"
        MANUAL = "manual"

    verification = models.ForeignKey(
        Verification, on_delete=models.CASCADE, related_name="evaluations"
    )
    sequence = models.PositiveIntegerField()
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    readings = models.JSONField(
        default=dict, help_text='name -> {"canary": {value, query, problem}, "baseline": {...}}'
    )
    canary = models.JSONField(default=dict, blank=True, help_text="canary judgement")
    reason = models.CharField(max_length=500)
    evaluated_at = models.DateTimeField(default=timezone.now)
    duration_seconds = models.FloatField(
        null=True, blank=True, help_text="from the start of measuring to the verdict written"
    )
    revert_seconds = models.FloatField(
        null=True,
        blank=True,
        help_text="its action reverted the step's flag this long after the breach was detected",
    )

    class Meta:
        ordering = ["verification", "-sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["verification", "sequence"], name="evaluation_sequence_unique"
            )
        ]

    def __str__(self) -> str:
        return f"evaluation {self.verification_id}#{self.sequence}: {self.outcome}"


class VerificationWatch(models.Model):
    """A metric a running verification's fail condition reads: ingesting a sample of it triggers
    an evaluation at once instead of at the next interval."""

    verification = models.ForeignKey(Verification, on_delete=models.CASCADE, related_name="watches")
    metric = models.CharField(max_length=200, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["verification", "metric"], name="watch_unique")
        ]

    def __str__(self) -> str:
        return f"{self.verification_id} watches {self.metric}"


# Rank = impact x uncertainty, as the database orders by it.
ASSUMPTION_RANK = models.F("impact") * models.F("uncertainty")


class Assumption(models.Model):
    """A load-bearing belief of a plan, ranked by impact if false x uncertainty, with the cheapest
    probe that would kill it. A probe step's verification, or a person with evidence, settles it."""

    class Status(models.TextChoices):
        UNTESTED = "untested"
        HOLDING = "holding"
        FALSIFIED = "falsified"

    SCORE_MIN, SCORE_MAX = 1, 5

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="assumptions")
    statement = models.TextField(help_text="what must be true for the plan to work")
    impact = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(SCORE_MIN), MaxValueValidator(SCORE_MAX)],
        help_text="how bad it is for the plan if this is false, 1 (barely) to 5 (fatal)",
    )
    uncertainty = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(SCORE_MIN), MaxValueValidator(SCORE_MAX)],
        help_text="how unsure we are that it holds, 1 (near certain) to 5 (a guess)",
    )
    probe = models.TextField(help_text="the cheapest test that would show it false")
    probe_cost = models.CharField(
        max_length=100, blank=True, help_text='what the probe costs, e.g. "2 days"'
    )
    # Removing an unstarted probe step from the plan file unlinks it; the assumption stays.
    probe_step = models.ForeignKey(
        Step,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="probed_assumptions",
        help_text="a step of the plan whose verification decides the assumption",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNTESTED)
    evidence = models.TextField(blank=True)
    evidence_evaluation = models.ForeignKey(
        Evaluation, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status_changed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = [ASSUMPTION_RANK.desc(), "-impact", "created_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(impact__gte=1, impact__lte=5), name="assumption_impact_1_to_5"
            ),
            models.CheckConstraint(
                condition=models.Q(uncertainty__gte=1, uncertainty__lte=5),
                name="assumption_uncertainty_1_to_5",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.statement[:60]} (rank {self.rank}, {self.status})"

    @property
    def rank(self) -> int:
        return self.impact * self.uncertainty


class Decision(models.Model):
    """One adapt / persist / kill call on a plan (or a call in an incident): what we believed,
    what reality showed, what we decided and why. Append-only: a correction is a new decision
    that `corrects` the old one; nothing updates a row after it is written."""

    class Decided(models.TextChoices):
        ADAPT = "adapt"
        PERSIST = "persist"
        KILL = "kill"
        OTHER = "other", "other (see label)"

    DECISIVE_QUESTION = "Knowing what we know now, would we choose this plan from scratch today?"

    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="decisions"
    )
    step = models.ForeignKey(
        Step, null=True, blank=True, on_delete=models.PROTECT, related_name="decisions"
    )
    # `incidents` sits above `rollouts`, so the incident is referenced by id only.
    incident_id = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    believed = models.TextField(help_text="what we believed")
    observed = models.TextField(help_text="what reality showed")
    decided = models.CharField(max_length=10, choices=Decided.choices)
    label = models.CharField(
        max_length=100, blank=True, help_text="the decision in a few words; required for other"
    )
    why = models.TextField()
    would_choose_again = models.BooleanField(
        null=True, blank=True, help_text="answer to the decisive question; empty when not answered"
    )
    slo = models.ForeignKey(
        "signals.SLO", null=True, blank=True, on_delete=models.PROTECT, related_name="decisions"
    )
    evaluation = models.ForeignKey(
        Evaluation, null=True, blank=True, on_delete=models.PROTECT, related_name="decisions"
    )
    assumption = models.ForeignKey(
        Assumption, null=True, blank=True, on_delete=models.PROTECT, related_name="decisions"
    )
    corrects = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="corrections"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(plan__isnull=False) | models.Q(incident_id__isnull=False),
                name="decision_on_plan_or_incident",
            ),
            models.CheckConstraint(
                condition=~models.Q(decided="other") | ~models.Q(label=""),
                name="decision_other_needs_label",
            ),
        ]

    def __str__(self) -> str:
        return f"decision {self.pk}: {self.label or self.decided}"
