"""Every step and plan transition: lock the plan, check the rules, write, ledger, push."""

from collections import defaultdict
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.errors import InvalidInput, NotFound, TransitionRefused
from core.text import percent_text
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.gates import budget_gate_blockers, plan_hold_reason, plan_holds
from rollouts.models import (
    Decision,
    Flag,
    FlagVersion,
    Plan,
    Step,
    StepTarget,
    Verification,
)
from rollouts.rules import (
    SATISFIED,
    action_blockers,
    dependencies_converged,
    lockstep_members,
    start_warning,
    target_reading,
)
from rollouts.selectors import assumptions_for_plans
from rollouts.services.flags import flag_change, flag_restore
from rollouts.services.verification import verification_begin, verification_cancel

STEP_ACTIONS = ("start", "advance", "fail", "revert", "retry", "skip", "complete", "reverify")
PLAN_ACTIONS = {"activate": "active", "pause": "paused", "resume": "active", "kill": "killed"}


def _load(plan_id: int) -> tuple[Plan, dict[int, Step], dict[int, list[int]]]:
    """Lock the plan and all its steps: every transition of one plan is serialized here."""
    plan = Plan.objects.select_for_update().get(pk=plan_id)
    steps = {
        s.pk: s for s in Step.objects.select_for_update().filter(plan=plan).order_by("position")
    }
    deps: dict[int, list[int]] = defaultdict(list)
    for from_id, to_id in Step.depends_on.through.objects.filter(from_step__plan=plan).values_list(
        "from_step_id", "to_step_id"
    ):
        deps[from_id].append(to_id)
    return plan, steps, deps


def step_load_locked(
    step_id: int, *, refresh: bool
) -> tuple[Plan, dict[int, Step], dict[int, list[int]], Step]:
    """`_load` the plan of `step_id` (InvalidInput when there is no such step); with `refresh`,
    an active plan's readiness is brought up to date first, so rules see what a person sees."""
    plan_id = Step.objects.filter(pk=step_id).values_list("plan_id", flat=True).first()
    if plan_id is None:
        raise NotFound(f"no step with id {step_id}")
    plan, steps, deps = _load(plan_id)
    if refresh and plan.status == Plan.Status.ACTIVE:
        _refresh_ready(plan, steps, deps)
    return plan, steps, deps, steps[step_id]


def _set_status(
    step: Step, status: str, *, actor: Any, reason: str = "", payload: dict | None = None
) -> None:
    if status not in Step.TRANSITIONS[step.status]:
        raise TransitionRefused(f"{step.key}: {step.status} cannot become {status}")
    before, step.status = step.status, status
    checking = {Step.Status.RUNNING, Step.Status.VERIFYING}
    if before in checking and status not in checking:
        verification_cancel(step, reason=f"the step became {status}: {reason or 'no reason given'}")
    now = timezone.now()
    if status == Step.Status.RUNNING:
        step.started_at, step.finished_at = now, None
    elif status in {
        Step.Status.DONE,
        Step.Status.FAILED,
        Step.Status.REVERTED,
        Step.Status.SKIPPED,
    }:
        step.finished_at = now
    step.save(update_fields=["status", "started_at", "finished_at"])
    ledger_append(
        action=f"step.{status}",
        subject=step,
        actor=actor,
        actor_label=None if actor else "stepwise",
        payload={
            "step": step.key,
            "from": before,
            "to": status,
            **({"reason": reason} if reason else {}),
            **(payload or {}),
        },
        plan_id=step.plan_id,
        step_id=step.pk,
    )


def _refresh_ready(plan: Plan, steps: dict[int, Step], deps: dict[int, list[int]]) -> None:
    for step in steps.values():
        deps_met = dependencies_converged(step, by_id=steps, deps=deps)
        if step.status == Step.Status.PENDING and deps_met:
            _set_status(step, Step.Status.READY, actor=None, reason="every dependency converged")
        elif step.status == Step.Status.READY and not deps_met:
            _set_status(
                step, Step.Status.PENDING, actor=None, reason="a dependency is no longer converged"
            )


def _complete_plan_if_finished(plan: Plan, steps: dict[int, Step]) -> None:
    if (
        plan.status == Plan.Status.ACTIVE
        and steps
        and all(s.status in SATISFIED for s in steps.values())
    ):
        _plan_set_status(plan, Plan.Status.COMPLETED, actor=None, reason="every step converged")


def _plan_set_status(
    plan: Plan,
    status: str,
    *,
    actor: Any,
    reason: str,
    decision_id: int | None = None,
    evaluation_id: int | None = None,
) -> None:
    if status not in Plan.TRANSITIONS[plan.status]:
        raise TransitionRefused(f"plan {plan.key} is {plan.status}; it cannot become {status}")
    before, plan.status, plan.updated_at = plan.status, status, timezone.now()
    plan.save(update_fields=["status", "updated_at"])
    ledger_append(
        action=f"plan.{status}",
        subject=plan,
        actor=actor,
        actor_label=None if actor else "stepwise",
        payload={
            "from": before,
            "to": status,
            **({"reason": reason} if reason else {}),
            **({"decision": decision_id} if decision_id else {}),
            **({"evaluation": evaluation_id} if evaluation_id else {}),
        },
        plan_id=plan.pk,
    )


def targets_pending(step: Step) -> list[str]:
    return list(
        step.step_targets.exclude(state=StepTarget.State.CONVERGED)
        .order_by("target__name")
        .values_list("target__name", flat=True)
    )


def _start(
    step: Step, members: list[Step], actor: Any, reason: str, payload: dict | None = None
) -> None:
    for member in members:
        _set_status(member, Step.Status.RUNNING, actor=actor, reason=reason, payload=payload)
        member.step_targets.update(
            state=StepTarget.State.PENDING, converged_at=None, confirmed_by="", last_check={}
        )
        verification_begin(member)
        if member.kind == Step.Kind.FLAG_RAMP:
            # What this attempt's revert restores: the flag as it is now, not as it was when the
            # step first ran (a person may have lowered it since, or reconciled a deviation).
            flag = Flag.objects.select_for_update().get(pk=member.flag_id)
            member.attempt_flag_version_id = flag.current_id
            member.save(update_fields=["attempt_flag_version"])
            flag_change(
                flag_key=member.flag.key,
                changes={"enabled": True, "rollout_percentage": member.flag_percentage},
                actor=actor,
                reason=f"{member.plan.key}/{member.key}: ramp to {percent_text(member.flag_percentage)}",
                source="plan",
                step=member,
            )


def _attempt_start_version(step: Step) -> FlagVersion | None:
    """The flag version current when this attempt started. Steps started before that was
    recorded: the version before the first one this attempt made."""
    if step.attempt_flag_version_id is not None:
        return step.attempt_flag_version
    first = (
        step.flag_versions.filter(created_at__gte=step.started_at).order_by("number").first()
        if step.started_at
        else None
    )
    if first is None:
        return None
    return step.flag.versions.filter(number__lt=first.number).order_by("-number").first()


def _revert(step: Step, actor: Any, reason: str) -> None:
    """Back to where this attempt started: a flag ramp restores the flag version current when
    the step started, unless the flag is already no more exposed than that (a person lowered
    it meanwhile): a revert never raises exposure."""
    payload = None
    if step.kind == Step.Kind.FLAG_RAMP and step.flag_id:
        flag = Flag.objects.select_for_update().get(pk=step.flag_id)
        before = _attempt_start_version(step)
        current = FlagVersion.objects.get(pk=flag.current_id)
        if before is None or current.pk == before.pk:
            payload = {"flag": flag.key, "left_at": current.number}
        elif not current.exposes_more_than(before):
            payload = {
                "flag": flag.key,
                "left_at": current.number,
                "why": f"already no more exposed than v{before.number}, where this attempt began",
            }
        else:
            restored = flag_restore(
                flag_key=flag.key,
                version_number=before.number,
                actor=actor,
                reason=f"{step.plan.key}/{step.key} reverted: {reason or 'no reason given'}",
                source="plan",
                step=step,
            )
            payload = {"flag": flag.key, "restored": before.number, "as": restored.number}
    _set_status(step, Step.Status.REVERTED, actor=actor, reason=reason, payload=payload)


@transaction.atomic
def step_transition(
    *,
    step_id: int,
    action: str,
    actor: AbstractBaseUser | None,
    reason: str = "",
    budget_override: Decision | None = None,
) -> Step:
    """The one way a step changes state. Lockstep partners move together; a failure halts them.

    A start is held by the error budget gates of the step and its lockstep partners, unless
    `budget_override` is the recorded decision to start anyway (see `step_start_over_budget`);
    every other rule still applies, including the plan's assumptions: a falsified one waiting for
    a decision holds every start; an untested top-ranked one holds non-probe starts under the
    refuse policy, and under the warn policy the start's ledger entries carry the warning.

    Side effects: ledger entries per changed step (and flag versions for flag ramps); dependents
    become ready; the plan completes when every step has converged; the plan page is pushed.
    """
    if action not in STEP_ACTIONS:
        raise InvalidInput(f"unknown step action {action!r}; one of {', '.join(STEP_ACTIONS)}")
    if budget_override is not None and action != "start":
        raise InvalidInput("an error budget gate override only starts a step")
    plan, steps, deps, step = step_load_locked(step_id, refresh=True)
    siblings = list(steps.values())
    members = lockstep_members(step, siblings)

    if action == "complete":
        if step.status != Step.Status.CONVERGING:
            raise TransitionRefused(
                f"{step.key}: only a converging step completes (it is {step.status})"
            )
        waiting = targets_pending(step)
        if waiting:
            raise TransitionRefused(f"{step.key}: not converged in {', '.join(waiting)}")
        _set_status(
            step, Step.Status.DONE, actor=actor, reason=reason or "converged in every target"
        )
    else:
        # Only a start reads the gates: an SLO query has no place on the path of advances and
        # reverts driven by evaluations.
        budget = (
            budget_gate_blockers(members) if action == "start" and budget_override is None else {}
        )
        assumptions = assumptions_for_plans([plan.pk])[plan.pk] if action == "start" else None
        held = plan_hold_reason(plan_holds([plan])[plan.pk]) if action == "start" else None
        blocker = action_blockers(
            step,
            plan=plan,
            siblings=siblings,
            deps=deps,
            budget=budget,
            assumptions=assumptions,
            held=held,
        )[action]
        if blocker:
            raise TransitionRefused(f"{step.key} cannot {action}: {blocker}")
        if action in {"skip", "fail"} and not reason.strip():
            raise InvalidInput(f"say why you {action} {step.key}")
        if action == "start":
            payload: dict[str, Any] = {}
            if budget_override is not None:
                payload["budget_override"] = {"decision": budget_override.pk}
            if warning := start_warning(
                step, plan=plan, siblings=siblings, assumptions=assumptions or []
            ):
                payload["assumption_warning"] = warning
            _start(step, members, actor, reason, payload=payload or None)
        elif action == "advance":
            if any(m.status != step.status for m in members):
                raise TransitionRefused(
                    f"{step.key} cannot advance: lockstep partners are at "
                    + ", ".join(f"{m.key} {m.status}" for m in members)
                )
            to = (
                Step.Status.VERIFYING
                if step.status == Step.Status.RUNNING
                else Step.Status.CONVERGING
            )
            for member in members:
                _set_status(member, to, actor=actor, reason=reason)
        elif action == "fail":
            _set_status(step, Step.Status.FAILED, actor=actor, reason=reason)
            for partner in members:
                if partner.pk != step.pk and partner.status in Step.ACTIVE:
                    _set_status(
                        partner,
                        Step.Status.FAILED,
                        actor=actor,
                        reason=f"halted: lockstep partner {step.key} failed",
                    )
        elif action == "revert":
            for member in members:
                if member.status in {*Step.ACTIVE, Step.Status.DONE, Step.Status.FAILED}:
                    _revert(member, actor, reason)
        elif action == "retry":
            for member in members:
                if member.status in {Step.Status.FAILED, Step.Status.REVERTED}:
                    _set_status(member, Step.Status.READY, actor=actor, reason=reason)
        elif action == "skip":
            _set_status(step, Step.Status.SKIPPED, actor=actor, reason=reason)
        elif action == "reverify":
            if step.verifications.filter(status=Verification.Status.RUNNING).exists():
                raise TransitionRefused(f"{step.key}: a verification is already running")
            verification_begin(step, actor=actor, reason=reason)
    for member in members:
        # Targets may have confirmed while the step was still verifying.
        _complete_if_converged(member, actor=None)
    _refresh_ready(plan, steps, deps)
    _complete_plan_if_finished(plan, steps)
    stream_touch(stream=plan.stream, event=f"step.{action}")
    return step


def _advance_verified(steps: dict[int, Step]) -> None:
    """Steps whose verification succeeded while the plan was paused move on when it resumes."""
    for step in steps.values():
        if step.status not in {Step.Status.RUNNING, Step.Status.VERIFYING}:
            continue
        latest = step.verifications.order_by("-started_at", "-pk").first()
        if latest is None or latest.status != Verification.Status.SUCCESSFUL:
            continue
        for status in (Step.Status.VERIFYING, Step.Status.CONVERGING):
            if status in Step.TRANSITIONS[step.status]:
                _set_status(step, status, actor=None, reason="verified while the plan was paused")
        _complete_if_converged(step, actor=None)


def _complete_if_converged(step: Step, *, actor: Any) -> None:
    if step.status == Step.Status.CONVERGING and not targets_pending(step):
        _set_status(step, Step.Status.DONE, actor=actor, reason="converged in every target")


@transaction.atomic
def plan_transition(
    *,
    plan_id: int,
    action: str,
    actor: AbstractBaseUser | None,
    reason: str = "",
    decision_id: int | None = None,
    evaluation_id: int | None = None,
) -> Plan:
    """activate / pause / resume / kill. `evaluation_id` names the evaluation whose conclusion
    paused the plan, so the plan page can show the evidence and not only the words. Killing or pausing starts nothing further; killing also
    cancels the verifications still running, so no verdict acts on a killed plan's steps (the
    steps stay as they are: reverting them is a separate call). A kill is a call on the record:
    only `decision_record` makes one, passing its `decision_id`."""
    if action not in PLAN_ACTIONS:
        raise InvalidInput(f"unknown plan action {action!r}; one of {', '.join(PLAN_ACTIONS)}")
    if not Plan.objects.filter(pk=plan_id).exists():
        raise NotFound(f"no plan with id {plan_id}")
    plan, steps, deps = _load(plan_id)
    if action == "kill" and decision_id is None:
        raise TransitionRefused(
            f"a kill is a decision: record it on plan {plan.key}'s decision log (what you "
            "believed, what reality showed, why), and the plan is killed with it"
        )
    if action == "resume" and plan.status != Plan.Status.PAUSED:
        raise TransitionRefused(f"plan {plan.key} is {plan.status}, not paused")
    if action in {"kill", "pause"} and not reason.strip():
        raise InvalidInput(f"say why you {action} the plan")
    _plan_set_status(
        plan,
        PLAN_ACTIONS[action],
        actor=actor,
        reason=reason,
        decision_id=decision_id,
        evaluation_id=evaluation_id,
    )
    if plan.status == Plan.Status.KILLED:
        for step in steps.values():
            if step.status in Step.ACTIVE:
                verification_cancel(step, reason=f"the plan was killed: {reason}")
    if plan.status == Plan.Status.ACTIVE:
        _advance_verified(steps)
        _refresh_ready(plan, steps, deps)
    stream_touch(stream=plan.stream, event=f"plan.{action}")
    return plan


PERSON = "person"


@transaction.atomic
def step_target_confirm(
    *,
    step_id: int,
    target: str,
    actor: AbstractBaseUser | None,
    source: str,
    evidence: dict | None = None,
    reason: str = "",
) -> StepTarget:
    """A person or a webhook confirms a non-flag step reached one target. Idempotent per target.

    A person (`source` "person") says why: their word overrides whatever the workers read, so
    the ledger entry carries the reason and, when the step has a convergence predicate or flag
    consumers, the reading it overrode."""
    plan, steps, deps, step = step_load_locked(step_id, refresh=False)
    row = (
        StepTarget.objects.select_for_update(of=("self",))
        .filter(step=step, target__name=target)
        .select_related("target")
        .first()
    )
    if row is None:
        raise InvalidInput(f"{step.key} has no target {target!r}")
    if step.status not in {Step.Status.RUNNING, Step.Status.VERIFYING, Step.Status.CONVERGING}:
        raise TransitionRefused(f"{step.key} is {step.status}: only an active step converges")
    if row.state == StepTarget.State.CONVERGED:
        return row
    reason = reason.strip()
    if source == PERSON and not reason:
        raise InvalidInput(
            f"say why {target} has converged: your word overrides {target_reading(step, row)}"
        )
    overrode = (
        {"overrode": {"reading": target_reading(step, row), **(row.last_check or {})}}
        if source == PERSON and (step.convergence or step.kind == Step.Kind.FLAG_RAMP)
        else {}
    )
    row.state, row.converged_at = StepTarget.State.CONVERGED, timezone.now()
    row.confirmed_by = (actor.get_username() if actor else source)[:150]
    row.save(update_fields=["state", "converged_at", "confirmed_by"])
    took = (row.converged_at - step.started_at).total_seconds() if step.started_at else None
    ledger_append(
        action="step.target_converged",
        subject=step,
        actor=actor,
        actor_label=None if actor else source,
        payload={
            "step": step.key,
            "target": target,
            "source": source,
            "seconds_since_start": took,
            **({"reason": reason[:300]} if reason else {}),
            **overrode,
            **(evidence or {}),
        },
        plan_id=plan.pk,
        step_id=step.pk,
    )
    _complete_if_converged(step, actor=None)
    _refresh_ready(plan, steps, deps)
    _complete_plan_if_finished(plan, steps)
    stream_touch(stream=plan.stream, event="step.target_converged")
    return row
