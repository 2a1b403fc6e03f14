"""The ordering rules as pure functions over loaded rows, so the page that greys out a button and
the service that refuses the click give the same reason."""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from core.text import clip, percent_text, seconds_text
from rollouts.gates import partner_reason
from rollouts.models import Assumption, FlagVersion, Plan, Step, StepTarget, Verification

# Finished, for a plan's completion. Whether a dependant may start is `dependencies_converged`.
SATISFIED = {Step.Status.DONE, Step.Status.SKIPPED}
# How much of a statement or of evidence a reason quotes: enough to recognise it.
QUOTED_CHARS = 120


def unconverged_dependency(
    step: Step, *, by_id: Mapping[int, Step], deps: Mapping[int, list[int]]
) -> tuple[Step, list[Step]] | None:
    """The first dependency of `step` that has not converged, with the skipped steps it was
    reached through, or None. A done step has converged; a skipped step is transparent: it has
    converged only when its own dependencies have, so skipping never walks around convergence."""
    seen: set[int] = set()

    def walk(current: Step, via: list[Step]) -> tuple[Step, list[Step]] | None:
        for dep_id in deps.get(current.pk, []):
            if dep_id in seen:
                continue
            seen.add(dep_id)
            dep = by_id[dep_id]
            if dep.status == Step.Status.SKIPPED:
                if found := walk(dep, [*via, dep]):
                    return found
            elif dep.status != Step.Status.DONE:
                return dep, via
        return None

    return walk(step, [])


def dependencies_converged(
    step: Step, *, by_id: Mapping[int, Step], deps: Mapping[int, list[int]]
) -> bool:
    return unconverged_dependency(step, by_id=by_id, deps=deps) is None


def target_reading(step: Step, row: StepTarget) -> str:
    """ "eu-west: value 41, needs value >= 42": where a step has not converged, and why."""
    name = row.target.name
    check = row.last_check or {}
    if step.convergence:
        condition = step.convergence.get("condition", "")
        if not check:
            return f"{name}: not checked yet, needs {condition}"
        if check.get("value") is None:
            problem = check.get("problem") or "no data"
            return f"{name}: {clip(problem, 80)}, needs {condition}"
        return f"{name}: value {check['value']:.6g}, needs {condition}"
    if step.kind == Step.Kind.FLAG_RAMP:
        return f"{name}: not every flag consumer has fetched the new configuration"
    return f"{name}: awaiting confirmation"


def dependency_blocker(
    step: Step, *, by_id: Mapping[int, Step], deps: Mapping[int, list[int]], partner: str = ""
) -> str | None:
    """ "waits for gw (through skipped ramp-a): converging, not converged in eu-west: value 41,
    needs value >= 42", or None when every transitive dependency has converged. `partner`: the
    key of the lockstep partner whose dependency this is, when it is not `step` itself."""
    found = unconverged_dependency(step, by_id=by_id, deps=deps)
    if found is None:
        return None
    dep, via = found
    notes = [f"lockstep partner {partner}"] if partner else []
    if via:
        notes.append(f"through skipped {', '.join(s.key for s in via)}")
    where = f" ({'; '.join(notes)})" if notes else ""
    text = f"waits for {dep.key}{where}: {dep.status}, not converged"
    if dep.status == Step.Status.CONVERGING:
        pending = [row for row in dep.step_targets.all() if row.state != StepTarget.State.CONVERGED]
        if pending:
            text += " in " + "; ".join(target_reading(dep, row) for row in pending)
    return text


def exposure_raise_blocker(
    version: FlagVersion, *, current: FlagVersion | None, governing: Iterable[str]
) -> str | None:
    """Why `version` may not replace `current`: it exposes more while a step that ramps the flag
    still waits on dependencies (`governing`: those steps' `dependency_blocker` reasons, as
    "plan/step waits for …"). Lowering exposure is always allowed."""
    if not version.exposes_more_than(current):
        return None
    if reasons := list(governing):
        return (
            f"{version.flag.key} would go from {current.settings_text() if current else 'nothing'} "
            f"to {version.settings_text()}, but {reasons[0]}: more exposure waits for "
            "convergence (lower it, or let the plan step ramp it)"
        )
    return None


def revert_raise_refusal(*, current: FlagVersion, target: FlagVersion) -> str | None:
    """A one-click revert never raises exposure: reverting a revert would re-apply what was
    reverted. Restoring a version on purpose (with a reason) is a change, not a revert."""
    if target.exposes_more_than(current):
        return (
            f"reverting {current.flag.key} v{current.number} would apply v{target.number}'s "
            f"settings ({target.settings_text()}, now {current.settings_text()}): a revert never "
            "raises exposure; restore that version on purpose, with a reason, if you mean it"
        )
    return None


def decision_needed(assumptions: Iterable[Assumption]) -> list[Assumption]:
    """The falsified assumptions no decision has answered since they were falsified. Each row
    carries `decided_at`, the time of the latest decision referencing it, as
    `rollouts.selectors.assumptions_for_plans` loads them."""
    return [
        a
        for a in assumptions
        if a.status == Assumption.Status.FALSIFIED
        and not (
            (decided_at := getattr(a, "decided_at", None)) is not None
            and (a.status_changed_at is None or decided_at >= a.status_changed_at)
        )
    ]


def decision_needed_reason(assumption: Assumption) -> str:
    """ "decision needed: assumption 'X' was falsified by <evidence>; record adapt, persist or
    kill": the words the plan banner and a refused start both show."""
    evidence = clip(assumption.evidence, QUOTED_CHARS) or "a person (no evidence recorded)"
    return (
        f"decision needed: assumption '{clip(assumption.statement, QUOTED_CHARS)}' was falsified by "
        f"{evidence}; record adapt, persist or kill"
    )


def top_assumption(assumptions: Iterable[Assumption]) -> Assumption | None:
    """The highest-ranked assumption (rank, then impact, then the oldest), whatever its status."""
    return min(
        assumptions,
        key=lambda a: (-a.rank, -a.impact, a.created_at, a.pk),
        default=None,
    )


def probe_text(assumption: Assumption) -> str:
    """ "replay a day of logins against the new IdP (cost 2 days; step probe-idp)"."""
    extras = []
    if assumption.probe_cost:
        extras.append(f"cost {assumption.probe_cost}")
    if assumption.probe_step_id is not None:
        extras.append(f"step {assumption.probe_step.key}")
    text = clip(assumption.probe, QUOTED_CHARS) or "none declared"
    return text + (f" ({'; '.join(extras)})" if extras else "")


def top_untested_reason(assumption: Assumption) -> str:
    """ "probe the top assumption first: 'X' (rank 20) is untested; its probe: …"."""
    return (
        f"probe the top assumption first: '{clip(assumption.statement, QUOTED_CHARS)}' "
        f"(rank {assumption.rank}) is untested; its probe: {probe_text(assumption)}"
    )


def _probe_exempt(members: Iterable[Step], top: Assumption) -> bool:
    """Probe steps start while assumptions are untested: that is how they get tested."""
    return all(m.kind == Step.Kind.PROBE or m.pk == top.probe_step_id for m in members)


def _top_untested(members: list[Step], assumptions: Sequence[Assumption]) -> Assumption | None:
    top = top_assumption(assumptions)
    if top is None or top.status != Assumption.Status.UNTESTED or _probe_exempt(members, top):
        return None
    return top


def assumption_blocker(
    members: list[Step], *, plan: Plan, assumptions: Sequence[Assumption]
) -> str | None:
    """Why the plan's assumptions hold a start of `members` (a step and its lockstep partners):
    a falsified assumption waiting for a decision holds every step; an untested top assumption
    holds non-probe steps when the plan's policy is refuse."""
    if pending := decision_needed(assumptions):
        return decision_needed_reason(pending[0])
    if plan.assumption_policy == Plan.AssumptionPolicy.REFUSE and (
        top := _top_untested(members, assumptions)
    ):
        return top_untested_reason(top)
    return None


def start_warning(
    step: Step, *, plan: Plan, siblings: Iterable[Step], assumptions: Sequence[Assumption]
) -> str | None:
    """Under the warn policy, why starting `step` now goes against "probe the top one cheaply
    first" (shown next to Start, and written into the start's ledger entries), or None."""
    if plan.assumption_policy != Plan.AssumptionPolicy.WARN:
        return None
    if step.status not in {Step.Status.PENDING, Step.Status.READY}:
        return None
    top = _top_untested(lockstep_members(step, siblings), assumptions)
    return top_untested_reason(top) if top else None


def start_blocker(
    step: Step,
    *,
    plan: Plan,
    siblings: Iterable[Step],
    deps: dict[int, list[int]],
    budget: Mapping[int, str] | None = None,
    assumptions: Sequence[Assumption] | None = None,
    held: str | None = None,
) -> str | None:
    """Why `step` may not start now, or None. `held` says why something outside the plan (an
    open incident on its services: `rollouts.gates.plan_holds`) holds every start in it.
    `siblings` are all steps of the plan;
    `deps` maps step id -> ids it depends on; `budget` maps step id -> why its error budget
    gate holds it (`rollouts.gates.budget_gate_blockers`), checked after every other rule so
    that an override of the gate can only ever bypass the gate; `assumptions` are the plan's
    assumptions as `rollouts.selectors.assumptions_for_plans` loads them (None: not checked,
    for reads that do not show a start)."""
    by_id = {s.pk: s for s in siblings}
    if plan.status != Plan.Status.ACTIVE:
        return f"plan is {plan.status}: only an active plan starts steps"
    if step.status not in {Step.Status.PENDING, Step.Status.READY}:
        return f"step is {step.status}"
    if held:
        return held
    if assumptions is not None and (
        held := assumption_blocker(
            lockstep_members(step, by_id.values()), plan=plan, assumptions=assumptions
        )
    ):
        return held
    if not step.has_verification:
        missing = [
            name
            for name, value in (
                ("pass condition", step.pass_condition),
                ("fail condition", step.fail_condition),
                ("action on fail", step.on_fail),
                ("measurements", step.measurements),
            )
            if not str(value).strip()
        ]
        return "no verification: missing " + ", ".join(missing)
    if step.kind == Step.Kind.FLAG_RAMP and (step.flag_id is None or step.flag_percentage is None):
        return "a flag ramp needs a flag and a target percentage"
    group = [
        s for s in by_id.values() if step.lockstep_group and s.lockstep_group == step.lockstep_group
    ]
    for member in group or [step]:
        partner = "" if member.pk == step.pk else member.key
        if waiting := dependency_blocker(member, by_id=by_id, deps=deps, partner=partner):
            return waiting
        if member.pk != step.pk and member.status not in {Step.Status.PENDING, Step.Status.READY}:
            return f"lockstep partner {member.key} is {member.status}"
        if member.pk != step.pk and not member.has_verification:
            return f"lockstep partner {member.key} has no verification"
    for member in group or [step]:
        if reason := (budget or {}).get(member.pk):
            return reason if member.pk == step.pk else partner_reason(member, reason)
    return None


def lockstep_members(step: Step, siblings: Iterable[Step]) -> list[Step]:
    if not step.lockstep_group:
        return [step]
    return sorted(
        (s for s in siblings if s.lockstep_group == step.lockstep_group), key=lambda s: s.position
    )


def action_blockers(
    step: Step,
    *,
    plan: Plan,
    siblings: list[Step],
    deps: dict[int, list[int]],
    budget: Mapping[int, str] | None = None,
    assumptions: Sequence[Assumption] | None = None,
    held: str | None = None,
) -> dict[str, str | None]:
    """For each button on a step: None when allowed, else why not. Only a start is held by
    an incident (`held`): a revert or a failure is the safety net and is never held."""
    status = step.status
    frozen = None if plan.status == Plan.Status.ACTIVE else f"plan is {plan.status}"
    return {
        "start": start_blocker(
            step,
            plan=plan,
            siblings=siblings,
            deps=deps,
            budget=budget,
            assumptions=assumptions,
            held=held,
        ),
        "advance": frozen
        or (
            None
            if status in {Step.Status.RUNNING, Step.Status.VERIFYING}
            else "only a running or verifying step advances"
        ),
        "fail": None if status in Step.ACTIVE else "only an active step can fail",
        "revert": None
        if status in {*Step.ACTIVE, Step.Status.DONE, Step.Status.FAILED}
        else f"nothing to revert: step is {status}",
        "retry": frozen
        or (
            None
            if status in {Step.Status.FAILED, Step.Status.REVERTED}
            else "only a failed or reverted step is retried"
        ),
        "skip": None
        if status in {Step.Status.PENDING, Step.Status.READY}
        else f"a {status} step cannot be skipped",
        "reverify": frozen
        or (
            None
            if status in {Step.Status.RUNNING, Step.Status.VERIFYING}
            else "only a running or verifying step is verified again"
        ),
    }


@dataclass(frozen=True)
class WorstCase:
    """If a running step's fail condition starts holding now: what is exposed, for how long at
    most, and where the flag goes then. `seconds` is None when nothing sets the flag back by
    itself (the action on fail pauses or pages: a person acts)."""

    exposure: Decimal
    seconds: float | None
    back_to: Decimal | None
    how: str

    @property
    def weight(self) -> float:
        """Exposure x time, to find a plan's worst step; waiting for a person is the worst."""
        return float(self.exposure) * (math.inf if self.seconds is None else self.seconds)

    @property
    def text(self) -> str:
        if self.seconds is None or self.back_to is None:
            return f"{percent_text(self.exposure)} exposed until a person acts ({self.how})"
        return (
            f"{percent_text(self.exposure)} exposed for up to {seconds_text(self.seconds)} "
            f"({self.how}), then {percent_text(self.back_to)}"
        )


def worst_case(
    step: Step, run: Verification | None, *, watched: bool, ingest_p99: float | None
) -> WorstCase | None:
    """The worst case of a flag step whose verification is running, or None. `watched`: a
    breaching sample of a metric its fail condition reads triggers an evaluation at once, so the
    time is the measured p99 from breach to revert (`ingest_p99`) once one was measured."""
    current = step.flag.current if step.flag_id else None
    if run is None or run.status != Verification.Status.RUNNING or current is None:
        return None
    exposure = current.exposure
    if exposure == 0:
        return None
    start = step.attempt_flag_version
    if run.on_fail == Step.OnFail.RESTORE_PREVIOUS_FLAG:
        back_to = start.exposure if start else Decimal(0)
    elif run.on_fail == Step.OnFail.SET_FLAG_PERCENTAGE and run.on_fail_percentage is not None:
        # Above where the attempt began, the declared action is refused and the step reverted.
        back_to = run.on_fail_percentage
        if start is not None and back_to > start.exposure:
            back_to = start.exposure
    else:
        return WorstCase(exposure, None, None, f"on fail: {run.get_on_fail_display()}")
    if watched and ingest_p99 is not None:
        how = "a breaching sample is judged at once; measured p99 breach to revert"
        return WorstCase(exposure, ingest_p99, back_to, how)
    failures = max(1, run.failure_limit + 1 - run.failed)
    how = f"{failures} failing evaluation{'s' if failures != 1 else ''}, {run.interval_seconds} s apart"
    return WorstCase(exposure, failures * run.interval_seconds, back_to, how)
