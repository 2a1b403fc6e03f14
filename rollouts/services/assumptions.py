"""A plan's load-bearing assumptions: added ranked, settled by a probe step's verification or by a
person with evidence. A falsified one puts the plan in "decision needed" (`rollouts.rules`)."""

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from core.errors import InvalidInput, NotFound, TransitionRefused
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.models import Assumption, Evaluation, Plan, Step, Verification
from rollouts.rules import decision_needed
from rollouts.selectors import assumptions_for_plans

PROBE_COST_MAX = Assumption._meta.get_field("probe_cost").max_length
# What a person may record; "untested" is where an assumption starts, not a finding.
RECORDABLE = (Assumption.Status.HOLDING, Assumption.Status.FALSIFIED)
# Verification outcomes that settle an assumption; the others leave it as it was.
PROBE_VERDICTS = {
    Verification.Status.SUCCESSFUL: Assumption.Status.HOLDING,
    Verification.Status.FAILED: Assumption.Status.FALSIFIED,
}


def _score(problems: list[str], name: str, value: Any) -> int | None:
    """A score is a whole number from 1 to 5; the problem names the field."""
    low, high = Assumption.SCORE_MIN, Assumption.SCORE_MAX
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            problems.append(f"{name} must be a whole number from {low} to {high} (got {value!r})")
            return None
    if not low <= value <= high:
        problems.append(f"{name} must be from {low} to {high} (got {value})")
        return None
    return value


def _payload(assumption: Assumption) -> dict[str, Any]:
    return {
        "assumption": assumption.pk,
        "statement": assumption.statement,
        "impact": assumption.impact,
        "uncertainty": assumption.uncertainty,
        "rank": assumption.rank,
    }


def _is_person(actor: Any) -> bool:
    return actor is not None and getattr(actor, "is_authenticated", False)


def _fields(
    plan: Plan,
    *,
    statement: str,
    impact: Any,
    uncertainty: Any,
    probe: str,
    probe_cost: str,
    probe_step_id: int | None,
) -> dict[str, Any]:
    """An assumption's fields, checked. InvalidInput names every problem at once."""
    problems: list[str] = []
    statement = (statement or "").strip()
    if not statement:
        problems.append("say what the plan assumes")
    impact_score = _score(problems, "impact", impact)
    uncertainty_score = _score(problems, "uncertainty", uncertainty)
    probe = (probe or "").strip()
    if not probe:
        problems.append("say how to probe it: the cheapest test that would show it false")
    probe_cost = (probe_cost or "").strip()
    if len(probe_cost) > PROBE_COST_MAX:
        problems.append(f"the probe cost is at most {PROBE_COST_MAX} characters")
    probe_step = None
    if probe_step_id is not None:
        probe_step = Step.objects.filter(pk=probe_step_id).first()
        if probe_step is None:
            problems.append(f"no step with id {probe_step_id}")
        elif probe_step.plan_id != plan.pk:
            problems.append(f"step {probe_step.key} is not in plan {plan.key}")
    if problems:
        raise InvalidInput("; ".join(problems))
    return {
        "statement": statement,
        "impact": impact_score,
        "uncertainty": uncertainty_score,
        "probe": probe,
        "probe_cost": probe_cost,
        "probe_step": probe_step,
    }


def _probe_payload(assumption: Assumption) -> dict[str, Any]:
    return {
        "probe": assumption.probe,
        "probe_cost": assumption.probe_cost,
        "probe_step": assumption.probe_step.key if assumption.probe_step else None,
    }


@transaction.atomic
def assumption_add(
    *,
    plan_id: int,
    statement: str,
    impact: int,
    uncertainty: int,
    probe: str,
    probe_cost: str = "",
    probe_step_id: int | None = None,
    actor: AbstractBaseUser | AnonymousUser | None,
    actor_label: str | None = None,
) -> Assumption:
    """Add an untested assumption to a plan.

    Raises InvalidInput naming every problem (a score outside 1-5 names its field), or
    TransitionRefused on a completed or killed plan; nothing is written then. Side effects: an
    `assumption.added` ledger entry; the plan page is pushed on commit.
    """
    plan = Plan.objects.select_for_update().filter(pk=plan_id).first()
    if plan is None:
        raise NotFound(f"no plan with id {plan_id}")
    fields = _fields(
        plan,
        statement=statement,
        impact=impact,
        uncertainty=uncertainty,
        probe=probe,
        probe_cost=probe_cost,
        probe_step_id=probe_step_id,
    )
    if plan.is_closed:
        raise TransitionRefused(f"plan {plan.key} is {plan.status}: it takes no new assumptions")

    assumption = Assumption.objects.create(
        plan=plan,
        **fields,
        created_by=actor if _is_person(actor) else None,
        created_at=timezone.now(),
    )
    probe_step = fields["probe_step"]
    ledger_append(
        action="assumption.added",
        subject=assumption,
        actor=actor,
        actor_label=actor_label,
        payload={**_payload(assumption), **_probe_payload(assumption)},
        plan_id=plan.pk,
        step_id=probe_step.pk if probe_step else None,
    )
    stream_touch(stream=plan.stream, event="assumption.added")
    return assumption


@transaction.atomic
def assumption_revise(
    *,
    assumption_id: int,
    statement: str,
    impact: int,
    uncertainty: int,
    probe: str,
    probe_cost: str = "",
    probe_step_id: int | None = None,
    actor: AbstractBaseUser | AnonymousUser | None,
) -> Assumption:
    """Re-score or re-word an assumption as the team learns: its rank moves with its scores.

    Raises InvalidInput naming every problem, or when nothing changes; TransitionRefused on a
    closed plan, or when the statement of a tested assumption would change (its evidence is
    about those words: add a new assumption instead). Side effects: an `assumption.revised`
    ledger entry with what changed; the plan page is pushed on commit.
    """
    plan_id = Assumption.objects.filter(pk=assumption_id).values_list("plan_id", flat=True).first()
    if plan_id is None:
        raise NotFound(f"no assumption with id {assumption_id}")
    plan = Plan.objects.select_for_update().get(pk=plan_id)  # the plan first, as every writer
    assumption = (
        Assumption.objects.select_for_update(of=("self",))
        .select_related("probe_step")
        .get(pk=assumption_id)
    )
    fields = _fields(
        plan,
        statement=statement,
        impact=impact,
        uncertainty=uncertainty,
        probe=probe,
        probe_cost=probe_cost,
        probe_step_id=probe_step_id,
    )
    if plan.is_closed:
        raise TransitionRefused(f"plan {plan.key} is {plan.status}: its assumptions are final")
    changed = [name for name, value in fields.items() if getattr(assumption, name) != value]
    if not changed:
        raise InvalidInput("nothing changed")
    if "statement" in changed and assumption.status != Assumption.Status.UNTESTED:
        raise TransitionRefused(
            f"this assumption is {assumption.status}: its evidence is about its words, so they "
            "stay; add a new assumption for the new belief"
        )
    before = {**_payload(assumption), **_probe_payload(assumption)}
    for name, value in fields.items():
        setattr(assumption, name, value)
    assumption.save(update_fields=changed)
    after = {**_payload(assumption), **_probe_payload(assumption)}
    ledger_append(
        action="assumption.revised",
        subject=assumption,
        actor=actor,
        payload={
            "assumption": assumption.pk,
            "changed": {
                k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]
            },
        },
        plan_id=plan.pk,
        step_id=assumption.probe_step_id,
    )
    stream_touch(stream=plan.stream, event="assumption.revised")
    return assumption


@transaction.atomic
def assumption_status_set(
    *,
    assumption_id: int,
    status: str,
    evidence: str,
    actor: AbstractBaseUser | AnonymousUser | None,
) -> Assumption:
    """A person records what the evidence shows: the assumption holds, or it is falsified.

    Refused (InvalidInput) without a signed-in person, with empty evidence or another status;
    refused (TransitionRefused) on a closed plan, and for "holding" while the assumption's
    falsification still awaits a decision; nothing is written then. Recording the same status
    and evidence again changes nothing; new evidence for the same status keeps its time.
    Side effects: an `assumption.holding` / `assumption.falsified` ledger entry with the
    evidence; the plan page is pushed on commit. A falsified assumption puts the plan in
    "decision needed" until a decision references it.
    """
    plan_id = Assumption.objects.filter(pk=assumption_id).values_list("plan_id", flat=True).first()
    if plan_id is None:
        raise NotFound(f"no assumption with id {assumption_id}")
    plan = Plan.objects.select_for_update().get(pk=plan_id)
    assumption = Assumption.objects.select_for_update().get(pk=assumption_id)
    problems = []
    if not _is_person(actor):
        problems.append("recording what an assumption shows needs a person: sign in")
    if status not in RECORDABLE:
        problems.append(
            f"status must be one of {', '.join(RECORDABLE)} (got {status!r}); "
            "an assumption only becomes untested when it is added"
        )
    evidence = (evidence or "").strip()
    if not evidence:
        problems.append(f"say what evidence shows the assumption is {status or 'settled'}")
    if problems:
        raise InvalidInput("; ".join(problems))
    if plan.is_closed:
        raise TransitionRefused(f"plan {plan.key} is {plan.status}: its assumptions are final")
    if assumption.status == status and assumption.evidence == evidence:
        return assumption  # a second click: already recorded
    before = assumption.status
    if before == status:
        # More evidence for the same finding: the finding's time stays, so a decision that
        # answered it still does.
        assumption.evidence = evidence
        assumption.save(update_fields=["evidence"])
    elif before == Assumption.Status.FALSIFIED and assumption.pk in {
        a.pk for a in decision_needed(assumptions_for_plans([plan.pk])[plan.pk])
    }:
        raise TransitionRefused(
            f"the assumption was falsified and awaits a decision: record adapt, persist or kill "
            f"on plan {plan.key}'s decision log first (a persist can say why the evidence was "
            "wrong); then record that it holds"
        )
    else:
        _settle(assumption, status, evidence, evaluation=None, by=actor, at=timezone.now())
    ledger_append(
        action=f"assumption.{status}",
        subject=assumption,
        actor=actor,
        payload={**_payload(assumption), "from": before, "to": status, "evidence": evidence},
        plan_id=plan.pk,
    )
    stream_touch(stream=plan.stream, event=f"assumption.{status}")
    return assumption


def _settle(
    assumption: Assumption,
    status: str,
    evidence: str,
    *,
    evaluation: Evaluation | None,
    by: Any,
    at: datetime,
) -> None:
    """Write a new status with its evidence, who set it (None: a probe's verification) and when."""
    assumption.status, assumption.evidence = status, evidence
    assumption.evidence_evaluation = evaluation
    assumption.status_changed_by, assumption.status_changed_at = by, at
    assumption.save(
        update_fields=[
            "status",
            "evidence",
            "evidence_evaluation",
            "status_changed_by",
            "status_changed_at",
        ]
    )


def assumption_probe_concluded(
    *, verification: Verification, step: Step, evaluation: Evaluation
) -> list[Assumption]:
    """A probe step's verification concluded: the assumptions it probes hold (successful) or are
    falsified (failed), with the concluding evaluation as evidence. Inconclusive or error runs
    leave their status as it was and add a note to the evidence.

    Called by `evaluation_record` in the transaction that concludes the run, which holds the
    plan's lock. Side effects: one ledger entry per assumption; the plan page is pushed on
    commit when any assumption changed.
    """
    assumptions = list(Assumption.objects.select_for_update().filter(probe_step=step))
    if not assumptions:
        return []
    to = PROBE_VERDICTS.get(verification.status)
    run = (
        f"probe step {step.key}, verification {verification.pk} {verification.status}: "
        f"{verification.conclusion}; evaluation #{evaluation.sequence}: {evaluation.reason}"
    )
    now = timezone.now()
    for assumption in assumptions:
        before = assumption.status
        if to is None:
            note = f"{run} (the probe settled nothing: {before} until probed again)"
            assumption.evidence = f"{assumption.evidence}\n{note}".strip()
            assumption.save(update_fields=["evidence"])
            action = "assumption.probe_unsettled"
        else:
            _settle(assumption, to, run, evaluation=evaluation, by=None, at=now)
            action = f"assumption.{to}"
        ledger_append(
            action=action,
            subject=assumption,
            actor=None,
            actor_label="stepwise",
            payload={
                **_payload(assumption),
                "from": before,
                "to": assumption.status,
                "evidence": run,
                "verification": verification.pk,
                "evaluation": evaluation.pk,
            },
            plan_id=step.plan_id,
            step_id=step.pk,
        )
    stream_touch(stream=f"plan:{step.plan_id}", event="assumption.probed")
    return assumptions


@transaction.atomic
def plan_assumption_policy_set(
    *, plan_id: int, policy: str, actor: AbstractBaseUser | AnonymousUser | None
) -> Plan:
    """Warn (the start is recorded as going ahead of the probe) or refuse (non-probe steps wait)
    while the top-ranked assumption is untested. Side effects: a `plan.assumption_policy`
    ledger entry; the plan page is pushed on commit. Setting the current policy is a no-op."""
    if policy not in Plan.AssumptionPolicy.values:
        raise InvalidInput(
            f"the assumption policy is one of {', '.join(Plan.AssumptionPolicy.values)} "
            f"(got {policy!r})"
        )
    plan = Plan.objects.select_for_update().filter(pk=plan_id).first()
    if plan is None:
        raise NotFound(f"no plan with id {plan_id}")
    if plan.assumption_policy == policy:
        return plan
    before, plan.assumption_policy, plan.updated_at = plan.assumption_policy, policy, timezone.now()
    plan.save(update_fields=["assumption_policy", "updated_at"])
    ledger_append(
        action="plan.assumption_policy",
        subject=plan,
        actor=actor,
        payload={"from": before, "to": policy},
        plan_id=plan.pk,
    )
    stream_touch(stream=plan.stream, event="plan.assumption_policy")
    return plan
