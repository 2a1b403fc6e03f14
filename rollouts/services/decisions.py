"""The decision log: adapt / persist / kill calls, append-only. A correction is a new entry.

A kill kills the plan in the same transaction; adapt and persist change no state by themselves
(an adapt decision is what a re-plan names: `plan_apply(decision_id=...)`)."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from core.errors import InvalidInput, TransitionRefused
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.gates import blockers_of, budget_gates
from rollouts.models import Assumption, Decision, Evaluation, Plan, Step
from rollouts.rules import lockstep_members, start_blocker
from rollouts.selectors import assumptions_for_plans
from rollouts.services.steps import plan_transition, step_load_locked, step_transition
from signals.models import SLO

LABEL_MAX = Decision._meta.get_field("label").max_length
_ENDED = {Plan.Status.COMPLETED, Plan.Status.KILLED}

OVERRIDE_LABEL = "error budget gate override"


def _required_text(problems: list[str], value: str, missing: str) -> str:
    text = (value or "").strip()
    if not text:
        problems.append(missing)
    return text


@transaction.atomic
def decision_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    believed: str,
    observed: str,
    decided: str,
    why: str,
    label: str = "",
    would_choose_again: bool | None = None,
    plan_id: int | None = None,
    step_id: int | None = None,
    incident_id: int | None = None,
    slo_id: int | None = None,
    evaluation_id: int | None = None,
    corrects_id: int | None = None,
    assumption_id: int | None = None,
) -> Decision:
    """Write one decision on a plan (a step's plan when only the step is given) or an incident.

    Raises InvalidInput naming every problem, or TransitionRefused for a kill of a plan that is
    already completed or killed; nothing is written then. Side effects: a `decision.recorded`
    ledger entry carrying the decision's fields; a kill on a plan then kills it through
    `plan_transition` (its ledger entry names the decision; running verifications are
    cancelled); the plan page is pushed on commit. Incident decisions are pushed by the caller
    (`incidents` sits above this app). A decision referencing a falsified assumption answers
    the "decision needed" it caused.
    """
    problems: list[str] = []
    if actor is None or not getattr(actor, "is_authenticated", False):
        problems.append("a decision needs an author: sign in")
    believed = _required_text(problems, believed, "say what you believed")
    observed = _required_text(problems, observed, "say what reality showed")
    why = _required_text(problems, why, "say why you decided this")
    label = (label or "").strip()
    if decided not in Decision.Decided.values:
        problems.append(
            f"decided must be one of {', '.join(Decision.Decided.values)} (got {decided!r})"
        )
    elif decided == Decision.Decided.OTHER and not label:
        problems.append(
            "name the decision: a label is needed when it is none of adapt, persist, kill"
        )
    if len(label) > LABEL_MAX:
        problems.append(f"the label is at most {LABEL_MAX} characters (got {len(label)})")

    step = Step.objects.filter(pk=step_id).first() if step_id is not None else None
    if step_id is not None and step is None:
        problems.append(f"no step with id {step_id}")
    if step is not None and plan_id is None:
        plan_id = step.plan_id
    plan = None
    if plan_id is not None:
        # Serializes with the plan's step transitions, so the decision and the state it was
        # taken on appear in the ledger in the order they happened.
        plan = Plan.objects.select_for_update().filter(pk=plan_id).first()
        if plan is None:
            problems.append(f"no plan with id {plan_id}")
    if plan_id is None and incident_id is None:
        problems.append("a decision belongs to a plan or an incident")
    if step is not None and plan is not None and step.plan_id != plan.pk:
        problems.append(f"step {step.key} is not in plan {plan.key}")
    if incident_id is not None and incident_id < 1:
        problems.append(f"no incident with id {incident_id}")

    slo = SLO.objects.filter(pk=slo_id).first() if slo_id is not None else None
    if slo_id is not None and slo is None:
        problems.append(f"no SLO with id {slo_id}")
    evaluation = (
        Evaluation.objects.select_related("verification__step").filter(pk=evaluation_id).first()
        if evaluation_id is not None
        else None
    )
    if evaluation_id is not None and evaluation is None:
        problems.append(f"no evaluation with id {evaluation_id}")
    elif (
        evaluation is not None
        and plan is not None
        and evaluation.verification.step.plan_id != plan.pk
    ):
        problems.append(f"evaluation {evaluation.pk} is not of a step of plan {plan.key}")
    corrects = Decision.objects.filter(pk=corrects_id).first() if corrects_id is not None else None
    if corrects_id is not None and corrects is None:
        problems.append(f"no decision with id {corrects_id} to correct")
    elif corrects is not None and (
        # A plan decision prompted by an incident is still the plan's: compare the plan.
        corrects.plan_id != plan_id if plan_id is not None else corrects.incident_id != incident_id
    ):
        problems.append(
            f"decision {corrects.pk} belongs to another "
            f"{'plan' if plan_id is not None else 'incident'}: "
            "a correction must point at a decision of the same one"
        )
    assumption = (
        Assumption.objects.filter(pk=assumption_id).first() if assumption_id is not None else None
    )
    if assumption_id is not None and assumption is None:
        problems.append(f"no assumption with id {assumption_id}")
    elif assumption is not None and (plan is None or assumption.plan_id != plan.pk):
        problems.append(
            f"assumption {assumption.pk} is not of plan {plan.key if plan else '(none)'}"
        )
    if problems:
        raise InvalidInput("; ".join(problems))
    if decided == Decision.Decided.KILL and plan is not None and plan.status in _ENDED:
        raise TransitionRefused(f"plan {plan.key} is {plan.status}: there is nothing left to kill")

    decision = Decision.objects.create(
        plan=plan,
        step=step,
        incident_id=incident_id,
        believed=believed,
        observed=observed,
        decided=decided,
        label=label,
        why=why,
        would_choose_again=would_choose_again,
        slo=slo,
        evaluation=evaluation,
        assumption=assumption,
        corrects=corrects,
        author=actor,
    )
    ledger_append(
        action="decision.recorded",
        subject=decision,
        actor=actor,
        payload={
            "decision": decision.pk,
            "plan": plan.key if plan else None,
            "step": step.key if step else None,
            "incident": incident_id,
            "believed": believed,
            "observed": observed,
            "decided": decided,
            "label": label,
            "why": why,
            "would_choose_again": would_choose_again,
            "question": Decision.DECISIVE_QUESTION,
            "slo": slo.name if slo else None,
            "evaluation": evaluation.pk if evaluation else None,
            "assumption": assumption.pk if assumption else None,
            "corrects": corrects.pk if corrects else None,
        },
        plan_id=plan.pk if plan else None,
        step_id=step.pk if step else None,
        incident_id=incident_id,
    )
    if decided == Decision.Decided.KILL and plan is not None:
        plan_transition(
            plan_id=plan.pk,
            action="kill",
            actor=actor,
            reason=f"decision {decision.pk}: {why}",
            decision_id=decision.pk,
        )
    if plan is not None:
        stream_touch(stream=plan.stream, event="decision.recorded")
    return decision


@transaction.atomic
def step_start_over_budget(
    *,
    step_id: int,
    actor: AbstractBaseUser,
    believed: str,
    observed: str,
    why: str,
    would_choose_again: bool | None,
) -> Step:
    """Start a step that only an error budget gate holds (its own or a lockstep partner's), on
    the strength of a decision recorded first: persist, "error budget gate override", linked to
    the step and the SLO whose gate is overridden.

    Refused (TransitionRefused) when another rule holds the step or no gate does; InvalidInput
    when the decision is incomplete. Nothing is written then. Side effects: those of
    `decision_record` and of `step_transition` start, whose ledger entries name the decision.
    """
    plan, steps, deps, step = step_load_locked(step_id, refresh=True)
    siblings = list(steps.values())
    assumptions = assumptions_for_plans([plan.pk])[plan.pk]
    if other := start_blocker(
        step, plan=plan, siblings=siblings, deps=deps, assumptions=assumptions
    ):
        raise TransitionRefused(f"{step.key} cannot start: {other}")
    members = lockstep_members(step, siblings)
    gates = budget_gates(members)
    held = blockers_of(gates)
    if not held:
        raise TransitionRefused(
            f"{step.key}: no error budget gate holds it, so there is nothing to override; "
            "start it as usual"
        )
    overridden = next(gates[m.pk] for m in members if m.pk in held)
    decision = decision_record(
        actor=actor,
        plan_id=plan.pk,
        step_id=step.pk,
        slo_id=overridden.slo.pk,
        decided=Decision.Decided.PERSIST,
        label=OVERRIDE_LABEL,
        believed=believed,
        observed=observed,
        why=why,
        would_choose_again=would_choose_again,
    )
    return step_transition(
        step_id=step.pk,
        action="start",
        actor=actor,
        reason=f"{OVERRIDE_LABEL} (decision {decision.pk}): {held[overridden.step.pk]}",
        budget_override=decision,
    )
