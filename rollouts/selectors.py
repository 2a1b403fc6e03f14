"""Reads for rollouts pages and APIs, with their joins applied."""

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Prefetch, Q
from django.shortcuts import get_object_or_404

from ledger.models import LedgerEntry
from rollouts.charts import canary_chart
from rollouts.models import Deviation, Flag, FlagConsumer, Plan, Step, StepTarget, Verification
from rollouts.rules import action_blockers, lockstep_members, start_blocker
from rollouts.verification_spec import stored_measurements
from signals.canary import CanaryJudgement

STEP_BUTTONS = [
    ("start", "Start"),
    ("advance", "Advance"),
    ("fail", "Fail"),
    ("revert", "Revert"),
    ("retry", "Retry"),
    ("skip", "Skip"),
]


@dataclass
class StepRow:
    step: Step
    depends_on: list[str]
    blockers: dict[str, str | None]
    targets: list[StepTarget]
    lockstep: list[str] = field(default_factory=list)

    @property
    def verification(self) -> Verification | None:
        """The step's latest verification run (prefetched newest first)."""
        runs = getattr(self.step, "runs", None)
        return runs[0] if runs else None

    @property
    def buttons(self) -> list[dict[str, str | None]]:
        return [
            {"action": a, "label": label, "reason": self.blockers[a]} for a, label in STEP_BUTTONS
        ]


def _deps(*plans: Plan) -> dict[int, list[int]]:
    """Step id -> ids it depends on, for all steps of `plans`, in one query."""
    deps: dict[int, list[int]] = defaultdict(list)
    for from_id, to_id in Step.depends_on.through.objects.filter(
        from_step__plan__in=plans
    ).values_list("from_step_id", "to_step_id"):
        deps[from_id].append(to_id)
    return deps


def plan_steps(plan: Plan) -> tuple[list[Step], dict[int, list[int]]]:
    steps = list(
        plan.steps.select_related("flag", "flag__current")
        .prefetch_related(
            Prefetch("step_targets", queryset=StepTarget.objects.select_related("target")),
            Prefetch(
                "verifications",
                queryset=Verification.objects.order_by("-started_at", "-pk"),
                to_attr="runs",
            ),
        )
        .order_by("position")
    )
    return steps, _deps(plan)


def step_blockers(*, step: Step) -> dict[str, str | None]:
    """Why each action on one step is refused now (the step page), without rendering the plan."""
    steps, deps = plan_steps(step.plan)
    return action_blockers(
        next(s for s in steps if s.pk == step.pk), plan=step.plan, siblings=steps, deps=deps
    )


def plan_live_context(*, plan_id: int) -> dict[str, Any]:
    """What the live parts of the plan page show: status, steps with their disabled reasons, deviations."""
    plan = Plan.objects.get(pk=plan_id)
    steps, deps = plan_steps(plan)
    by_id = {s.pk: s for s in steps}
    rows = [
        StepRow(
            step=s,
            depends_on=[by_id[d].key for d in deps.get(s.pk, [])],
            blockers=action_blockers(s, plan=plan, siblings=steps, deps=deps),
            targets=list(s.step_targets.all()),
            lockstep=[m.key for m in lockstep_members(s, steps) if m.pk != s.pk],
        )
        for s in steps
    ]
    deviations = list(
        plan.deviations.select_related("step", "flag_version").filter(status=Deviation.Status.OPEN)
    )
    from rollouts import charts

    graph = (
        charts.figure_html(charts.dependency_graph(steps, deps), div_id="dependency-graph")
        if steps
        else ""
    )
    return {
        "plan": plan,
        "rows": rows,
        "deviations": deviations,
        "graph": graph,
        "paths": plan_paths(plan, steps),
        "live": True,
    }


def plan_get(*, key: str) -> Plan:
    return get_object_or_404(Plan, key=key)


def plan_paths(plan: Plan, steps: list[Step]) -> dict[str, Any]:
    """Declared order beside the order steps actually started in (from the ledger)."""
    declared = [s.key for s in steps]
    started = list(
        LedgerEntry.objects.filter(plan_id=plan.pk, action="step.running")
        .order_by("seq")
        .values_list("payload", "seq", "created_at")
    )
    actual, seen = [], set()
    position = {k: i for i, k in enumerate(declared)}
    for payload, seq, created_at in started:
        key = payload.get("step")
        # Started ahead of a step declared earlier that had not started yet: legal when the two are
        # independent, but worth showing, because the declared order said otherwise.
        ahead = [k for k in declared[: position.get(key, 0)] if k not in seen]
        actual.append(
            {"key": key, "seq": seq, "at": created_at, "ahead_of": ahead, "restart": key in seen}
        )
        seen.add(key)
    return {"declared": declared, "actual": actual}


def portfolio(*, team: str = "", status: str = "") -> list[dict[str, Any]]:
    plans = Plan.objects.annotate(
        total=Count("steps", distinct=True),
        done=Count("steps", filter=Q(steps__status__in=["done", "skipped"]), distinct=True),
        open_deviations=Count("deviations", filter=Q(deviations__status="open"), distinct=True),
    ).order_by("status", "name")
    if status:
        plans = plans.filter(status=status)
    plans = list(plans)
    all_deps = _deps(*plans)
    steps_by_plan: dict[int, list[Step]] = defaultdict(list)
    for step in Step.objects.filter(plan__in=plans).order_by("position"):
        steps_by_plan[step.plan_id].append(step)
    rows = []
    for plan in plans:
        steps = steps_by_plan[plan.pk]
        teams = sorted({plan.owner, *plan.teams, *(s.owner_team for s in steps)})
        if team and team not in teams:
            continue
        current = [s for s in steps if s.status in Step.ACTIVE]
        ready = [s for s in steps if s.status == Step.Status.READY]
        waiting = next(
            (s for s in steps if s.status in {Step.Status.PENDING, Step.Status.READY}), None
        )
        blocker = (
            start_blocker(waiting, plan=plan, siblings=steps, deps=all_deps) if waiting else None
        )
        rows.append(
            {
                "plan": plan,
                "teams": teams,
                "current": current,
                "ready": ready,
                "blocked": waiting if blocker else None,
                "blocker": blocker,
                "failed": [s for s in steps if s.status == Step.Status.FAILED],
                "progress": round(100 * plan.done / plan.total) if plan.total else 0,
            }
        )
    return rows


def portfolio_teams() -> list[str]:
    teams = set(Plan.objects.values_list("owner", flat=True)) | set(
        Step.objects.values_list("owner_team", flat=True)
    )
    for plan_teams in Plan.objects.values_list("teams", flat=True):
        teams.update(plan_teams)
    return sorted(t for t in teams if t)


def step_page(*, plan_key: str, step_key: str) -> dict[str, Any]:
    plan = plan_get(key=plan_key)
    step = get_object_or_404(
        Step.objects.select_related("plan", "flag", "flag__current").prefetch_related("depends_on"),
        plan=plan,
        key=step_key,
    )
    targets = list(step.step_targets.select_related("target"))
    consumers: dict[str, list[dict[str, Any]]] = {}
    revision = None
    if step.kind == Step.Kind.FLAG_RAMP:
        latest = step.flag_versions.order_by("-number").first()
        revision = latest.config_revision if latest else None
        for consumer in FlagConsumer.objects.filter(
            target__in=[t.target for t in targets]
        ).select_related("target"):
            holds = revision is not None and consumer.held_revision >= revision
            took = (
                (consumer.held_since - latest.created_at).total_seconds()
                if holds
                and latest
                and consumer.held_since
                and consumer.held_since >= latest.created_at
                else None
            )
            consumers.setdefault(consumer.target.name, []).append(
                {"consumer": consumer, "holds": holds, "took": took}
            )
    for row in targets:
        row.consumer_rows = consumers.get(row.target.name, [])
    return {
        "plan": plan,
        "step": step,
        "targets": targets,
        "revision": revision,
        "flag_versions": list(
            step.flag.versions.select_related("author", "step").order_by("-number")[:20]
        )
        if step.flag_id
        else [],
        "ledger": list(LedgerEntry.objects.filter(step_id=step.pk).order_by("-seq")[:100]),
    }


def flags_board(*, only: Flag | None = None) -> list[dict[str, Any]]:
    flags = Flag.objects.select_related("current", "current__author").order_by("key")
    flags = list(flags.filter(pk=only.pk) if only else flags)
    owners: dict[int, Step] = {}
    for step in (
        Step.objects.filter(flag__in=flags, plan__status__in=["active", "paused", "draft"])
        .select_related("plan")
        .order_by("plan_id", "position")
    ):
        if step.status not in {"done", "skipped"}:
            owners.setdefault(step.flag_id, step)
    consumers = list(FlagConsumer.objects.all())
    return [
        {
            "flag": flag,
            "version": flag.current,
            "owner_step": owners.get(flag.pk),
            "holding": sum(
                1
                for c in consumers
                if flag.current and c.held_revision >= flag.current.config_revision
            ),
            "consumers": len(consumers),
        }
        for flag in flags
    ]


def flag_history(*, key: str) -> dict[str, Any]:
    flag = get_object_or_404(Flag.objects.select_related("current"), key=key)
    versions = list(
        flag.versions.select_related("author", "step", "step__plan", "restored_from").order_by(
            "-number"
        )
    )
    rows = []
    for version, older in zip(versions, [*versions[1:], None], strict=True):
        after, before = version.settings_dict(), older.settings_dict() if older else {}
        diff = [
            {"field": k, "before": before.get(k), "after": after.get(k)}
            for k in after
            if before.get(k) != after.get(k)
        ]
        rows.append({"version": version, "diff": diff})
    return {"flag": flag, "rows": rows}


def flag_board_row(*, flag: Flag) -> dict[str, Any]:
    return {"row": flags_board(only=flag)[0], "live": True}


def step_verification_context(*, step_id: int) -> dict[str, Any]:
    """The verification section of the step page: what is checked, the current run, its recent
    evaluations with the numbers and queries they saw, and the latest canary comparison."""
    step = Step.objects.select_related("plan").get(pk=step_id)
    verification = step.verifications.select_related("concluded_by").first()
    evaluations = list(verification.evaluations.all()[:10]) if verification else []
    canary_html = ""
    latest_canary = next((e for e in evaluations if e.canary), None)
    if latest_canary is not None:
        judgement = CanaryJudgement.from_dict(latest_canary.canary)
        distributions = {
            name: (list(pair[0]), list(pair[1]))
            for name, pair in latest_canary.canary.get("distributions", {}).items()
        }
        canary_html = canary_chart(judgement, distributions, div_id=f"canary-chart-{step.pk}")
    measurements = stored_measurements(step.measurements) if step.measurements else {}
    return {
        "step": step,
        "verification": verification,
        "run_number": step.verifications.count(),
        "evaluations": evaluations,
        "measurements": [
            {
                "spec": spec,
                "canary_query": spec.describe(),
                "baseline_query": spec.describe(baseline=True) if spec.has_baseline else "",
            }
            for spec in measurements.values()
        ],
        "canary_metrics": list(step.canary.get("metrics", {})) if step.canary else [],
        "canary_chart": canary_html,
        "latest_canary": latest_canary,
    }
