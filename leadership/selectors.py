"""Reads for the leadership pages: SLOs worst first, one SLO over its window with what touched
it, and the plans at risk."""

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, Max, Q
from django.db.models.functions import Trunc, TruncWeek
from django.urls import reverse
from django.utils import timezone

from core.text import percent_text
from incidents.models import ActionItem, Incident
from incidents.selectors import incident_held_plans
from ledger.models import LedgerEntry
from rollouts.gates import budget_gate_blockers
from rollouts.models import (
    Assumption,
    Decision,
    Deviation,
    FlagVersion,
    Plan,
    Step,
    Verification,
)
from rollouts.plan_spec import step_metric_sources
from rollouts.rules import (
    decision_needed,
    decision_needed_reason,
    top_assumption,
    top_untested_reason,
)
from rollouts.selectors import assumptions_for_plans
from rollouts.thrash import plans_thrashing
from signals.models import SLO, MetricSource, SLIBucket
from signals.services import slo_spec_of
from signals.slo_spec import MetricRef, sli_warnings
from signals.slos import BURN_WINDOWS, SLOStatus, slo_alerts_describe, slo_statuses

# Burn-rate lines drawn over the window: the long windows of the three alert rules.
CHART_BURN_WINDOWS = ("1h", "6h", "3d")
OVERVIEW_BURN_WINDOWS = ("5m", "1h", "6h", "3d")
STEP_MARKS = ("step.running", "step.failed", "step.reverted", "step.done")
# A step's own flag versions show as its transitions; seeded versions are a starting state.
FLAG_MARKS_EXCLUDE = (FlagVersion.Source.PLAN, FlagVersion.Source.SEED)
FAILING = {
    Verification.Status.FAILED,
    Verification.Status.ERROR,
    Verification.Status.INCONCLUSIVE,
}


def slo_overview() -> list[SLOStatus]:
    """Every SLO with its SLI, budget, burn rates and open alerts, worst first. Three queries."""
    return sorted(slo_statuses(SLO.objects.select_related("source")), key=lambda s: s.worst_first)


def _resolution_seconds(window_seconds: float) -> int:
    if window_seconds <= 86400:
        return 60
    if window_seconds <= 7 * 86400:
        return 600
    return 3600


@dataclass
class SLOSeries:
    """Points over the window at one resolution: what the SLO page charts."""

    resolution_seconds: int
    ends: list[datetime] = field(default_factory=list)
    sli: list[float | None] = field(default_factory=list)
    budget_remaining: list[float | None] = field(default_factory=list)
    burn_rates: dict[str, list[float | None]] = field(default_factory=dict)
    latency_ends: list[datetime] = field(default_factory=list)
    p99: list[float | None] = field(default_factory=list)
    p999: list[float | None] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)


def slo_series(status: SLOStatus) -> SLOSeries:
    """The window's points from the running totals at each resolution step (one query), plus the
    latency percentiles, as the worst minute of each step (one aggregate query)."""
    slo, at = status.slo, status.at
    if at is None or status.window_start is None:
        return SLOSeries(resolution_seconds=60)
    step = _resolution_seconds((at - status.window_start).total_seconds())
    longest = max(BURN_WINDOWS[w] for w in CHART_BURN_WINDOWS)
    rows = SLIBucket.objects.filter(
        slo=slo, end__gt=status.window_start - timedelta(seconds=longest), end__lte=at
    )
    # The latest minute is always a point, so the chart reaches "now" between two steps; it needs
    # the running totals one burn window before it, and every point needs the window's start.
    off_grid = [at, status.window_start] + [
        at - timedelta(seconds=BURN_WINDOWS[w]) for w in CHART_BURN_WINDOWS
    ]
    if step == 3600:
        rows = rows.filter(Q(end__minute=0) | Q(end__in=off_grid))
    elif step == 600:
        rows = rows.filter(Q(end__minute__in=range(0, 60, 10)) | Q(end__in=off_grid))
    cumulative = {
        end: (good, total) for end, good, total in rows.values_list("end", "cum_good", "cum_total")
    }
    series = SLOSeries(resolution_seconds=step)

    def totals_at(moment: datetime) -> tuple[float, float] | None:
        # Before the first rolled-up minute the running totals are 0, as `slo_statuses` counts
        # them: a young SLO's burn lines and first SLI point need that, not "no data".
        if slo.rolled_up_from is not None and moment <= slo.rolled_up_from:
            return (0.0, 0.0)
        return cumulative.get(moment)

    window_good, window_total = totals_at(status.window_start) or (0.0, 0.0)
    budget = slo.error_budget * status.window.total
    previous = None
    points = (e for e in cumulative if e > status.window_start)
    for end in sorted(e for e in points if e == at or e.timestamp() % step == 0):
        good, total = cumulative[end]
        series.ends.append(end)
        before = totals_at(end - timedelta(seconds=step)) or previous
        if before and total - before[1] > 0:
            series.sli.append((good - before[0]) / (total - before[1]))
        else:
            series.sli.append(None)
        bad_so_far = (total - window_total) - (good - window_good)
        series.budget_remaining.append(1 - bad_so_far / budget if budget > 0 else None)
        for label in CHART_BURN_WINDOWS:
            then = totals_at(end - timedelta(seconds=BURN_WINDOWS[label]))
            rate = None
            if then and total - then[1] > 0:
                ratio = (good - then[0]) / (total - then[1])
                rate = (1 - ratio) / slo.error_budget
            series.burn_rates.setdefault(label, []).append(rate)
        previous = (good, total)
    latency = SLIBucket.objects.filter(slo=slo, end__gt=status.window_start, end__lte=at)
    # Like the SLI points, a latency point is labelled with the end of the interval it covers
    # (the last, partial one with "now"), so a spike lines up with the marker that caused it.
    if step == 3600:
        points = [
            (start + timedelta(hours=1), *worst)
            for start, *worst in latency.annotate(
                hour=Trunc(F("end") - timedelta(minutes=1), "hour")
            )
            .values("hour")
            .annotate(p99_max=Max("p99"), p999_max=Max("p999"), value_max=Max("value"))
            .values_list("hour", "p99_max", "p999_max", "value_max")
            .order_by("hour")
        ]
    else:
        points = _worst_per_step(
            latency.exclude(p99__isnull=True, value__isnull=True)
            .values_list("end", "p99", "p999", "value")
            .order_by("end"),
            step,
        )
    for end, p99, p999, value in points:
        series.latency_ends.append(min(end, at))
        series.p99.append(p99)
        series.p999.append(p999)
        series.value.append(value)
    return series


def _worst_per_step(
    rows: Iterable[tuple[datetime, float | None, float | None, float | None]], step: int
) -> list[tuple[datetime, float | None, float | None, float | None]]:
    """The largest of each column per `step` seconds, keyed by the end of each interval (rollup
    rows, at most a week of minutes)."""
    worst: dict[datetime, list[float | None]] = {}
    for end, *values in rows:
        minute_start = end - timedelta(minutes=1)
        key = minute_start - timedelta(seconds=minute_start.timestamp() % step - step)
        kept = worst.setdefault(key, [None, None, None])
        for i, value in enumerate(values):
            if value is not None and (kept[i] is None or value > kept[i]):
                kept[i] = value
    return [(end, *values) for end, values in sorted(worst.items())]


@dataclass(frozen=True)
class Marker:
    at: datetime
    kind: str  # "step", "flag" or "incident"
    text: str
    url: str


def slo_touching_steps(slo: SLO) -> list[Step]:
    """Steps that ship the SLO's service or are gated by its budget."""
    return list(
        Step.objects.filter(Q(service=slo.service) | Q(budget_slo=slo))
        .select_related("plan")
        .order_by("plan__key", "position")
    )


def slo_markers(slo: SLO, *, start: datetime, end: datetime, steps: list[Step]) -> list[Marker]:
    """What changed when: step transitions of the touching steps, changes to their flags made
    outside those transitions (the flags board, the API, an incident console), and incidents on
    the service."""
    by_id = {s.pk: s for s in steps}
    markers = []
    versions = list(
        FlagVersion.objects.filter(
            flag_id__in={s.flag_id for s in steps if s.flag_id},
            created_at__gte=start,
            created_at__lte=end,
        )
        .exclude(source__in=FLAG_MARKS_EXCLUDE)
        .exclude(number=1)  # created, not yet serving anyone: not a change to what users get
        .select_related("flag")
        .order_by("created_at")
    )
    outside_step = set(
        Deviation.objects.filter(flag_version__in=versions).values_list(
            "flag_version_id", flat=True
        )
    )
    for version in versions:
        state = f"on {percent_text(version.rollout_percentage)}" if version.enabled else "off"
        markers.append(
            Marker(
                version.created_at,
                "flag",
                f"{version.flag.key} v{version.number}: {state} from the "
                f"{version.get_source_display()}"
                + (", outside its step" if version.pk in outside_step else "")
                + f" ({version.reason})",
                reverse("flag-detail", args=[version.flag.key]),
            )
        )
    for entry in LedgerEntry.objects.filter(
        step_id__in=by_id, action__in=STEP_MARKS, created_at__gte=start, created_at__lte=end
    ).order_by("seq"):
        step = by_id[entry.step_id]
        markers.append(
            Marker(
                entry.created_at,
                "step",
                f"{step.plan.key}/{step.key} {entry.action.removeprefix('step.')}",
                reverse("step-detail", args=[step.plan.key, step.key]),
            )
        )
    incidents = Incident.objects.filter(
        declared_at__gte=start, declared_at__lte=end
    ).select_related("slo_alert")
    for incident in incidents.order_by("declared_at"):
        from_alert = incident.slo_alert is not None and incident.slo_alert.slo_id == slo.pk
        if from_alert or slo.service in incident.services:
            markers.append(
                Marker(
                    incident.declared_at,
                    "incident",
                    f"INC-{incident.pk} {incident.get_severity_display()}: {incident.title}",
                    reverse("incident-console", args=[incident.pk]),
                )
            )
    return sorted(markers, key=lambda m: m.at)


def slo_page(*, name: str, with_history: bool = True) -> dict[str, Any] | None:
    """What the SLO page shows. Without history: the numbers and alerts its 30 s refresh
    redraws; with it, also the definition, the steps gated by the budget and what changed."""
    slo = SLO.objects.select_related("source").filter(name=name).first()
    if slo is None:
        return None
    status = slo_statuses([slo])[0]
    alerts = list(slo.alerts.order_by("-opened_at")[:20])
    incidents = {
        i.slo_alert_id: i for i in Incident.objects.filter(slo_alert__in=[a.pk for a in alerts])
    }
    page = {
        "slo": slo,
        "status": status,
        "alerts": [(a, incidents.get(a.pk)) for a in alerts],
        "rules": slo_alerts_describe(slo),
    }
    if not with_history:
        return page
    steps = slo_touching_steps(slo)
    gated = [s for s in steps if s.budget_slo_id == slo.pk]
    page |= {
        "queries": [
            (key, MetricRef.from_dict(slo.indicator[key]).describe())
            for key in ("good", "bad", "total", "metric")
            if key in slo.indicator
        ],
        # Up to now, not to the last rolled-up minute: a step that failed a moment ago is news
        # even before its minute closes.
        "markers": (
            slo_markers(slo, start=status.window_start, end=timezone.now(), steps=steps)
            if status.at
            else []
        ),
        "gated_steps": gated,
        "gate_blockers": budget_gate_blockers(gated),
        "warnings": sli_warnings(slo_spec_of(slo).indicator),
    }
    return page


@dataclass
class PlanRisk:
    plan: Plan
    reasons: list[tuple[str, str]]  # (kind, sentence)

    @property
    def kinds(self) -> list[str]:
        return sorted({kind for kind, _ in self.reasons})


def plans_at_risk() -> list[PlanRisk]:
    """Active and paused plans whose next step is held by an error budget, whose top assumption is
    untested or whose falsified assumption awaits a decision, with open deviations, or with
    failing verifications. A fixed number of queries whatever the number of plans."""
    plans = {
        p.pk: p
        for p in Plan.objects.filter(status__in=[Plan.Status.ACTIVE, Plan.Status.PAUSED]).order_by(
            "key"
        )
    }
    risks: dict[int, list[tuple[str, str]]] = {pk: [] for pk in plans}
    waiting = list(
        Step.objects.filter(
            plan_id__in=plans,
            status__in=[Step.Status.PENDING, Step.Status.READY],
            budget_slo__isnull=False,
        ).select_related("budget_slo")
    )
    by_id = {s.pk: s for s in waiting}
    for step_id, reason in budget_gate_blockers(waiting).items():
        step = by_id[step_id]
        risks[step.plan_id].append(("budget", f"{step.key}: {reason}"))
    assumptions = assumptions_for_plans(plans)
    for plan_id, ranked in assumptions.items():
        for assumption in decision_needed(ranked):
            risks[plan_id].append(("decision", decision_needed_reason(assumption)))
        top = top_assumption(ranked)
        if top is not None and top.status == Assumption.Status.UNTESTED:
            risks[plan_id].append(("assumption", top_untested_reason(top)))
    for deviation in Deviation.objects.filter(
        plan_id__in=plans, status=Deviation.Status.OPEN
    ).select_related("step"):
        risks[deviation.plan_id].append(("deviation", f"open deviation: {deviation.summary}"))
    checked = Verification.objects.filter(
        step__plan_id__in=plans,
        step__status__in=[Step.Status.FAILED, Step.Status.RUNNING, Step.Status.VERIFYING],
    ).select_related("step")
    latest: dict[int, Verification] = {}
    for verification in checked.order_by("started_at", "pk"):
        latest[verification.step_id] = verification
    for verification in latest.values():
        if verification.status in FAILING:
            risks[verification.step.plan_id].append(
                ("verification", f"{verification.step.key}: verification {verification.status}")
            )
    for incident in Incident.objects.filter(status__in=Incident.OPEN).order_by("pk"):
        for held in incident_held_plans(incident):
            if held["plan"].pk not in plans:
                continue
            release = held["release"]
            state = (
                f"released by {release.released_by.get_username()}: {release.reason}"
                if release
                else "no step starts until it resolves or its commander releases the plan"
            )
            risks[held["plan"].pk].append(
                (
                    "incident",
                    f"INC-{incident.pk} {incident.get_severity_display()} {incident.status}: "
                    f"{incident.title} ({state})",
                )
            )
    return [PlanRisk(plans[pk], reasons) for pk, reasons in risks.items() if reasons]


def open_action_items() -> list[ActionItem]:
    """Follow-ups not done, across incidents: overdue and soonest due first, undated last."""
    return list(
        ActionItem.objects.filter(done=False)
        .select_related("incident")
        .order_by(F("due_on").asc(nulls_last=True), "created_at", "pk")
    )


PERIODS = {"7d": 7, "30d": 30, "90d": 90, "all": None}


def plans_needing_decision() -> list[tuple[Plan, str]]:
    """Plans (not finished) with a falsified assumption no decision has answered, and why."""
    plans = {
        p.pk: p
        for p in Plan.objects.exclude(status__in=[Plan.Status.COMPLETED, Plan.Status.KILLED])
    }
    return [
        (plans[plan_id], decision_needed_reason(assumption))
        for plan_id, ranked in assumptions_for_plans(plans).items()
        for assumption in decision_needed(ranked)
    ]


def plans_thrashing_now() -> list[tuple[Plan, str]]:
    """Plans whose calls keep changing course (`rollouts.thrash`), with why, by name."""
    plans = {p.pk: p for p in Plan.objects.filter(decisions__isnull=False).distinct()}
    flagged = plans_thrashing(plans)
    return sorted(((plans[pk], why) for pk, why in flagged.items()), key=lambda r: r[0].name)


@dataclass
class DecisionsView:
    decisions: list[Decision]
    weekly: list[dict[str, Any]]  # {"week": date, "decided": str, "count": int}
    teams: list[str]
    totals: dict[str, int]


def decisions_overview(*, team: str = "", decided: str = "", period: str = "90d") -> DecisionsView:
    """Every decision across programs, newest first, filtered by the owning team, the call and
    the period; with weekly counts per call for the chart (one aggregate query)."""
    rows = Decision.objects.select_related("plan", "author", "step", "slo", "corrects")
    days = PERIODS.get(period, PERIODS["90d"])
    if days is not None:
        rows = rows.filter(created_at__gte=timezone.now() - timedelta(days=days))
    if team:
        rows = rows.filter(plan__owner=team)
    if decided:
        rows = rows.filter(decided=decided)
    weekly = list(
        rows.annotate(week=TruncWeek("created_at"))
        .values("week", "decided")
        .annotate(count=Count("pk"))
        .order_by("week", "decided")
    )
    totals = {
        row["decided"]: row["count"]
        for row in rows.values("decided").annotate(count=Count("pk")).order_by()
    }
    teams = sorted(set(Plan.objects.values_list("owner", flat=True)))
    return DecisionsView(list(rows.order_by("-created_at", "-pk")[:200]), weekly, teams, totals)


# --- metric sources ------------------------------------------------------------------------------

# A step in one of these may not read its sources again; any other may.
_STEP_FINISHED = ("done", "skipped")
_PLAN_FINISHED = ("completed", "killed")


def metric_source_users(source: MetricSource) -> list[str]:
    """Who reads `source`: its SLOs ("SLO checkout-availability") and the steps that may still
    run ("step identity-migration/cutover (running)"), in that order."""
    users = [f"SLO {name}" for name in source.slos.order_by("name").values_list("name", flat=True)]
    steps = (
        Step.objects.exclude(status__in=_STEP_FINISHED)
        .exclude(plan__status__in=_PLAN_FINISHED)
        .select_related("plan")
        .only("key", "status", "measurements", "canary", "convergence", "plan__key")
        .order_by("plan__key", "position")
    )
    users += [
        f"step {step.plan.key}/{step.key} ({step.status})"
        for step in steps
        if source.name
        in step_metric_sources(
            measurements=step.measurements, canary=step.canary, convergence=step.convergence
        )
    ]
    return users


def metric_source_as_dict(source: MetricSource, *, users: list[str]) -> dict[str, Any]:
    """A source as the API and the command show it. Never a secret: the reference says where
    the secret is (and whether this process has it); a legacy header is only said to exist."""
    variable = source.auth_secret_ref.removeprefix("env:")
    return {
        "name": source.name,
        "kind": source.kind,
        "url": source.url,
        "timeout_seconds": source.timeout_seconds,
        "verify_tls": source.verify_tls,
        "auth": {
            "scheme": source.auth_scheme or "none",
            "username": source.auth_username,
            "secret_ref": source.auth_secret_ref,
            "secret_set": bool(variable and os.environ.get(variable)),
            "legacy_header": bool(source.auth_header),
        },
        "retired_at": source.retired_at.isoformat() if source.retired_at else None,
        "created_at": source.created_at.isoformat(),
        "read_by": users,
    }


def metric_sources_listed() -> list[tuple[MetricSource, list[str]]]:
    """Every source with who reads it: active ones first, then retired, each by name."""
    sources = MetricSource.objects.order_by(F("retired_at").asc(nulls_first=True), "name")
    return [(source, metric_source_users(source)) for source in sources]
