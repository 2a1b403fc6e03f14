"""Reads for rollouts pages and APIs, with their joins applied."""

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Max, Prefetch, Q
from django.shortcuts import get_object_or_404
from django.urls import reverse

from core.markdown import md_text
from core.text import clip
from ledger.models import LedgerEntry
from rollouts.charts import canary_chart
from rollouts.gates import (
    blockers_of,
    budget_gate_blockers,
    budget_gates,
    plan_hold_reason,
    plan_holds,
)
from rollouts.models import (
    Assumption,
    Decision,
    Deviation,
    Evaluation,
    Flag,
    FlagConsumer,
    FlagVersion,
    Plan,
    Step,
    StepTarget,
    Verification,
    VerificationWatch,
)
from rollouts.rules import (
    WorstCase,
    action_blockers,
    decision_needed,
    decision_needed_reason,
    lockstep_members,
    probe_text,
    revert_raise_refusal,
    start_blocker,
    start_warning,
    top_assumption,
    top_untested_reason,
    worst_case,
)
from rollouts.thrash import plans_thrashing
from rollouts.verification_spec import canary_parse, stored_measurements
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
    # Under the warn policy: why starting now goes ahead of probing the top assumption.
    warning: str | None = None
    worst: WorstCase | None = None

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
        plan.steps.select_related("flag", "flag__current", "budget_slo", "attempt_flag_version")
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


def assumptions_for_plans(plan_ids: Iterable[int]) -> dict[int, list[Assumption]]:
    """Plan id -> its assumptions ranked, each with `decided_at` (the latest decision that
    references it) and its probe step: what `rollouts.rules` reads. One query for all plans;
    every id asked for is in the answer."""
    ids = list(plan_ids)
    grouped: dict[int, list[Assumption]] = {pk: [] for pk in ids}
    rows = (
        Assumption.objects.filter(plan_id__in=ids)
        .select_related(
            "probe_step",
            "created_by",
            "status_changed_by",
            "evidence_evaluation__verification__step",
        )
        .annotate(decided_at=Max("decisions__created_at"))
        # An aggregate drops Meta.ordering from the query: ask for the ranking again.
        .order_by(*Assumption._meta.ordering)
    )
    for assumption in rows:
        grouped[assumption.plan_id].append(assumption)
    return grouped


@dataclass
class AssumptionRow:
    assumption: Assumption
    top: bool
    needs_decision: str | None
    evidence_url: str | None

    @property
    def probe(self) -> str:
        return probe_text(self.assumption)


def _evaluation_url(plan: Plan, evaluation: Any) -> str:
    step = evaluation.verification.step
    return reverse("step-detail", args=[plan.key, step.key]) + f"#evaluation-{evaluation.pk}"


def assumptions_context(plan: Plan, assumptions: list[Assumption]) -> dict[str, Any]:
    """The plan page's Assumptions card and "decision needed" banner (none on a closed plan:
    nothing it would start is left to hold)."""
    pending = [] if plan.is_closed else decision_needed(assumptions)
    top = top_assumption(assumptions)
    rows = [
        AssumptionRow(
            assumption=a,
            top=top is not None and a.pk == top.pk,
            needs_decision=decision_needed_reason(a) if a in pending else None,
            evidence_url=_evaluation_url(plan, a.evidence_evaluation)
            if a.evidence_evaluation_id
            else None,
        )
        for a in assumptions
    ]
    return {
        "assumption_rows": rows,
        "decision_needed": [
            {"assumption": a, "reason": decision_needed_reason(a)} for a in pending
        ],
        "top_untested": top_untested_reason(top)
        if top is not None and top.status == Assumption.Status.UNTESTED
        else None,
    }


def step_actions(*, step: Step) -> dict[str, Any]:
    """The step page's actions: why each is refused now, the step's error budget gate read now,
    and whether a gate is all that holds the start (its own or a lockstep partner's: `held_by`),
    which is when it may be overridden; and, under the warn policy, the warning a start carries
    while the top assumption is untested. One `slo_statuses` batch for the plan's gates."""
    steps, deps = plan_steps(step.plan)
    loaded = next(s for s in steps if s.pk == step.pk)
    assumptions = assumptions_for_plans([step.plan_id])[step.plan_id]
    gates = budget_gates(steps)
    budget = blockers_of(gates)
    held = plan_hold_reason(plan_holds([step.plan])[step.plan_id])
    blockers = action_blockers(
        loaded,
        plan=step.plan,
        siblings=steps,
        deps=deps,
        budget=budget,
        assumptions=assumptions,
        held=held,
    )
    gate_holds = blockers["start"] is not None and (
        start_blocker(
            loaded,
            plan=step.plan,
            siblings=steps,
            deps=deps,
            assumptions=assumptions,
            held=held,
        )
        is None
    )
    members = lockstep_members(loaded, steps) if gate_holds else []
    held_by = next((gates[m.pk] for m in members if m.pk in budget), None)
    return {
        "blockers": blockers,
        "gate": gates.get(step.pk),
        "gate_holds_start": gate_holds,
        "held_by": held_by,
        "start_warning": start_warning(
            loaded, plan=step.plan, siblings=steps, assumptions=assumptions
        ),
    }


INGEST_REVERTS_READ = 200


def _ingest_revert_p99() -> float | None:
    """p99 of breach-to-revert over the latest reverts a breaching sample triggered."""
    took = sorted(
        Evaluation.objects.filter(trigger=Evaluation.Trigger.INGEST, revert_seconds__isnull=False)
        .order_by("-pk")
        .values_list("revert_seconds", flat=True)[:INGEST_REVERTS_READ]
    )
    return took[min(len(took) - 1, math.ceil(0.99 * len(took)) - 1)] if took else None


def worst_cases(steps: Iterable[Step]) -> dict[int, WorstCase]:
    """Step id -> its worst case, for the flag steps whose verification is running (steps
    loaded by `plan_steps`: latest run first in `runs`)."""
    running = {s.pk: s.runs[0] for s in steps if getattr(s, "runs", None)}
    running = {k: v for k, v in running.items() if v.status == Verification.Status.RUNNING}
    if not running:
        return {}
    watched = set(
        VerificationWatch.objects.filter(
            verification_id__in=[v.pk for v in running.values()]
        ).values_list("verification_id", flat=True)
    )
    p99 = _ingest_revert_p99() if watched else None
    found = {}
    for step in steps:
        run = running.get(step.pk)
        case = worst_case(step, run, watched=run is not None and run.pk in watched, ingest_p99=p99)
        if case is not None:
            found[step.pk] = case
    return found


def plan_pause(plan: Plan) -> dict[str, Any] | None:
    """Why a paused plan is paused: since when, by whom, the reason, and the evaluation whose
    conclusion paused it (when a verification did), read from the ledger entry that paused it."""
    if plan.status != Plan.Status.PAUSED:
        return None
    entry = (
        LedgerEntry.objects.filter(
            plan_id=plan.pk, action="plan.paused", subject_type="rollouts.plan"
        )
        .order_by("-seq")
        .first()
    )
    if entry is None:
        return None
    evaluation_id = entry.payload.get("evaluation")
    evaluation = (
        Evaluation.objects.select_related("verification__step").filter(pk=evaluation_id).first()
        if evaluation_id
        else None
    )
    return {
        "since": entry.created_at,
        "by": entry.actor_label,
        "reason": entry.payload.get("reason", ""),
        "evaluation": evaluation,
        "evaluation_url": _evaluation_url(plan, evaluation) if evaluation else "",
    }


def plan_live_context(*, plan_id: int) -> dict[str, Any]:
    """What the live parts of the plan page show: status, steps with their disabled reasons, deviations."""
    plan = Plan.objects.get(pk=plan_id)
    steps, deps = plan_steps(plan)
    by_id = {s.pk: s for s in steps}
    budget = budget_gate_blockers(steps)
    assumptions = assumptions_for_plans([plan.pk])[plan.pk]
    holds = plan_holds([plan])[plan.pk]
    held = plan_hold_reason(holds)
    worst = worst_cases(steps)
    rows = [
        StepRow(
            step=s,
            depends_on=[by_id[d].key for d in deps.get(s.pk, [])],
            blockers=action_blockers(
                s,
                plan=plan,
                siblings=steps,
                deps=deps,
                budget=budget,
                assumptions=assumptions,
                held=held,
            ),
            targets=list(s.step_targets.all()),
            lockstep=[m.key for m in lockstep_members(s, steps) if m.pk != s.pk],
            warning=start_warning(s, plan=plan, siblings=steps, assumptions=assumptions),
            worst=worst.get(s.pk),
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
        "pause": plan_pause(plan),
        "holds": holds,
        "rows": rows,
        "deviations": deviations,
        "graph": graph,
        "paths": plan_paths(plan, steps),
        **assumptions_context(plan, assumptions),
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
    all_steps = list(
        Step.objects.filter(plan__in=plans)
        .select_related("budget_slo", "flag__current", "attempt_flag_version")
        .prefetch_related(
            Prefetch(
                "verifications",
                queryset=Verification.objects.filter(status=Verification.Status.RUNNING),
                to_attr="runs",
            )
        )
        .order_by("position")
    )
    for step in all_steps:
        steps_by_plan[step.plan_id].append(step)
    budget = budget_gate_blockers(all_steps)
    assumptions = assumptions_for_plans(p.pk for p in plans)
    holds = plan_holds(plans)
    worst = worst_cases(all_steps)
    thrashing = plans_thrashing(plans)
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
            start_blocker(
                waiting,
                plan=plan,
                siblings=steps,
                deps=all_deps,
                budget=budget,
                assumptions=assumptions[plan.pk],
                held=plan_hold_reason(holds[plan.pk]),
            )
            if waiting
            else None
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
                "thrash": thrashing.get(plan.pk),
                "holds": holds[plan.pk],
                "worst": max(
                    ((s, worst[s.pk]) for s in steps if s.pk in worst),
                    key=lambda pair: pair[1].weight,
                    default=None,
                ),
                "decision_needed": not plan.is_closed
                and bool(decision_needed(assumptions[plan.pk])),
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


def flag_revert_previews(
    flags: Iterable[Flag],
) -> dict[int, tuple[FlagVersion | None, str | None]]:
    """For each flag (with `current` loaded): the version a one-click revert would apply, and
    why the revert is refused when it would raise exposure (`rules.revert_raise_refusal`, the
    words `flag_revert` refuses with). One query."""
    flags = list(flags)
    # The version before the current one: numbers are gapless per flag.
    earlier = Q(pk__in=[])
    for flag in flags:
        if flag.current:
            earlier |= Q(flag_id=flag.pk, number=flag.current.number - 1)
    previous = {v.flag_id: v for v in FlagVersion.objects.filter(earlier)}
    return {
        flag.pk: (
            previous.get(flag.pk),
            revert_raise_refusal(current=flag.current, target=previous[flag.pk])
            if flag.pk in previous
            else None,
        )
        for flag in flags
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
    reverts = flag_revert_previews(flags)
    return [
        {
            "flag": flag,
            "version": flag.current,
            "revert_to": reverts[flag.pk][0],
            "revert_refused": reverts[flag.pk][1],
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
    revision = flag.current.config_revision if flag.current else 0
    consumers = [
        {"consumer": c, "holds_current": c.held_revision >= revision}
        for c in FlagConsumer.objects.select_related("target")
    ]
    return {
        "flag": flag,
        "rows": rows,
        "consumers": consumers,
        "holding": sum(1 for c in consumers if c["holds_current"]),
    }


def flag_board_row(*, flag: Flag) -> dict[str, Any]:
    return {"row": flags_board(only=flag)[0], "live": True}


def step_verification_context(*, step_id: int) -> dict[str, Any]:
    """The verification section of the step page: what is checked, the current run, its recent
    evaluations with the numbers and queries they saw, and the latest canary comparison."""
    step = Step.objects.select_related("plan", "flag__current", "attempt_flag_version").get(
        pk=step_id
    )
    verification = step.verifications.select_related("concluded_by").first()
    step.runs = [verification] if verification else []
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
    canary = canary_parse(step.canary)[0] if step.canary else None
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
        "canary_spec": canary,
        "canary_rows": [
            {
                "metric": metric,
                "query": measurement.describe(),
                "baseline_query": measurement.describe(baseline=True)
                if measurement.has_baseline
                else "",
            }
            for metric, measurement in (canary.metrics if canary else ())
        ],
        "canary_chart": canary_html,
        "latest_canary": latest_canary,
        "worst": worst_cases([step]).get(step.pk),
    }


# --- the decision log ---------------------------------------------------------------------------


@dataclass
class DecisionRow:
    decision: Decision
    # What prompted it, as (kind, label, url): assumption, step, evaluation, SLO, incident.
    links: list[tuple[str, str, str]]
    corrected_by: list[int]

    @property
    def superseded(self) -> bool:
        return bool(self.corrected_by)


def decision_links(decision: Decision, *, plan: Plan | None = None) -> list[tuple[str, str, str]]:
    """What prompted a decision, each as (kind, label, url). Expects the relations loaded
    (`plan_decisions` does)."""
    links: list[tuple[str, str, str]] = []
    plan = plan or decision.plan
    if decision.assumption_id and plan is not None:
        a = decision.assumption
        links.append(
            (
                "assumption",
                f"assumption '{clip(a.statement, 80)}' ({a.status})",
                reverse("plan-detail", args=[plan.key]) + f"#assumption-{a.pk}",
            )
        )
    if decision.step_id and plan is not None:
        links.append(
            (
                "step",
                f"step {decision.step.key}",
                reverse("step-detail", args=[plan.key, decision.step.key]),
            )
        )
    if decision.evaluation_id and plan is not None:
        e = decision.evaluation
        links.append(
            (
                "evaluation",
                f"evaluation {e.verification_id}#{e.sequence} of {e.verification.step.key} "
                f"({e.outcome})",
                _evaluation_url(plan, e),
            )
        )
    if decision.slo_id:
        links.append(("slo", f"SLO {decision.slo.name}", f"/slos/{decision.slo.name}/"))
    if decision.incident_id:
        links.append(
            ("incident", f"incident #{decision.incident_id}", f"/incidents/{decision.incident_id}/")
        )
    return links


def plan_decisions(*, plan: Plan) -> dict[str, Any]:
    """The decision page: the plan's decisions oldest first (the direction its path reads, so a
    correction sits below what it corrects), each with what prompted it and which later entries
    correct it; beside them the plan's declared and actual path."""
    decisions = list(
        plan.decisions.select_related(
            "author",
            "step",
            "assumption",
            "slo",
            "evaluation__verification__step",
            "corrects",
        ).order_by("created_at", "pk")
    )
    corrected_by: dict[int, list[int]] = defaultdict(list)
    for d in decisions:
        if d.corrects_id:
            corrected_by[d.corrects_id].append(d.pk)
    steps, _ = plan_steps(plan)
    latest_adapt = next(
        (
            d
            for d in reversed(decisions)
            if d.decided == Decision.Decided.ADAPT and d.pk not in corrected_by
        ),
        None,
    )
    return {
        "plan": plan,
        "rows": [
            DecisionRow(
                decision=d,
                links=decision_links(d, plan=plan),
                corrected_by=corrected_by.get(d.pk, []),
            )
            for d in decisions
        ],
        "paths": plan_paths(plan, steps),
        "steps": steps,
        "assumptions": assumptions_for_plans([plan.pk])[plan.pk],
        "latest_adapt": latest_adapt,
        "thrash": plans_thrashing([plan]).get(plan.pk),
    }


def plan_decisions_markdown(*, plan: Plan, base_url: str = "") -> str:
    """The plan's decision log as Markdown, oldest first, with what prompted each entry and
    which entry a correction corrects. `base_url` makes the links absolute."""
    context = plan_decisions(plan=plan)
    rows: list[DecisionRow] = context["rows"]
    lines = [
        f"# Decision log: {md_text(plan.name)} (`{plan.key}`)",
        "",
        f"Plan status: {plan.status}. {len(rows)} decision{'s' if len(rows) != 1 else ''}, "
        "oldest first. The log is append-only: a correction is a new entry that names the "
        "entry it corrects.",
    ]
    if context["thrash"]:
        lines += ["", f"**Thrashing:** {context['thrash']}"]
    for row in rows:
        d = row.decision
        heading = d.label if d.decided == Decision.Decided.OTHER else d.get_decided_display()
        lines += [
            "",
            f"## #{d.pk} · {md_text(heading.lower())} · {d.created_at:%Y-%m-%d %H:%M} UTC · "
            f"{md_text(d.author.get_username())}",
            "",
        ]
        if d.corrects_id:
            lines.append(f"_Corrects #{d.corrects_id}._")
        if row.corrected_by:
            lines.append("_Corrected by " + ", ".join(f"#{pk}" for pk in row.corrected_by) + "._")
        if d.corrects_id or row.corrected_by:
            lines.append("")
        if d.label and d.decided != Decision.Decided.OTHER:
            lines.append(f"- **Label:** {md_text(d.label)}")
        lines += [
            f"- **Believed:** {md_text(d.believed)}",
            f"- **Observed:** {md_text(d.observed)}",
            f"- **Decided:** {md_text(heading.lower())}",
            f"- **Why:** {md_text(d.why)}",
            f"- **{Decision.DECISIVE_QUESTION}** "
            + {True: "yes", False: "no", None: "not answered"}[d.would_choose_again],
        ]
        if row.links:
            lines.append(
                "- **Prompted by:** "
                + "; ".join(f"[{md_text(label)}]({base_url}{url})" for _, label, url in row.links)
            )
    if not rows:
        lines += ["", "No decisions recorded yet."]
    return "\n".join(lines) + "\n"


def plan_id_for_key(key: str) -> int | None:
    return Plan.objects.filter(key=key).values_list("pk", flat=True).first()


def step_id_for_key(reference: str) -> int | None:
    """The id of the step `plan-key/step-key` names."""
    plan_key, _, step_key = reference.partition("/")
    return (
        Step.objects.filter(plan__key=plan_key, key=step_key).values_list("pk", flat=True).first()
    )
