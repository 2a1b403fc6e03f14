"""The ordering rules as pure functions over loaded rows, so the page that greys out a button and
the service that refuses the click give the same reason."""

from collections.abc import Iterable

from rollouts.models import Plan, Step

SATISFIED = {Step.Status.DONE, Step.Status.SKIPPED}


def start_blocker(
    step: Step, *, plan: Plan, siblings: Iterable[Step], deps: dict[int, list[int]]
) -> str | None:
    """Why `step` may not start now, or None. `siblings` are all steps of the plan;
    `deps` maps step id -> ids it depends on."""
    by_id = {s.pk: s for s in siblings}
    if plan.status != Plan.Status.ACTIVE:
        return f"plan is {plan.status}: only an active plan starts steps"
    if step.status not in {Step.Status.PENDING, Step.Status.READY}:
        return f"step is {step.status}"
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
        for dep_id in deps.get(member.pk, []):
            dep = by_id[dep_id]
            if dep.status not in SATISFIED:
                who = "" if member.pk == step.pk else f" (lockstep partner {member.key})"
                return f"waits for {dep.key}{who}: {dep.status}, not converged"
        if member.pk != step.pk and member.status not in {Step.Status.PENDING, Step.Status.READY}:
            return f"lockstep partner {member.key} is {member.status}"
        if member.pk != step.pk and not member.has_verification:
            return f"lockstep partner {member.key} has no verification"
    return None


def lockstep_members(step: Step, siblings: Iterable[Step]) -> list[Step]:
    if not step.lockstep_group:
        return [step]
    return sorted(
        (s for s in siblings if s.lockstep_group == step.lockstep_group), key=lambda s: s.position
    )


def action_blockers(
    step: Step, *, plan: Plan, siblings: list[Step], deps: dict[int, list[int]]
) -> dict[str, str | None]:
    """For each button on a step: None when allowed, else why not."""
    status = step.status
    frozen = None if plan.status == Plan.Status.ACTIVE else f"plan is {plan.status}"
    return {
        "start": start_blocker(step, plan=plan, siblings=siblings, deps=deps),
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
