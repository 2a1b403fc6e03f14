"""Assumptions: added ranked, settled by a person with evidence or by a probe step's verification."""

import pytest

from core.errors import InvalidInput, TransitionRefused
from ledger.models import LedgerEntry
from live.models import StreamEvent
from rollouts.models import Assumption, Step
from rollouts.selectors import assumptions_for_plans
from rollouts.services.assumptions import (
    assumption_status_set,
    plan_assumption_policy_set,
)
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.steps import step_transition
from tests.rollouts.decision_factories import BREACHING, HEALTHY, assume, decide, falsify, traffic

pytestmark = pytest.mark.django_db


# --- adding --------------------------------------------------------------------------------------


def test_assumption_add__valid__untested_ranked_ledgered_and_pushed(
    make_plan, role_user, django_capture_on_commit_callbacks
):
    plan = make_plan([{"key": "probe-idp", "kind": "probe"}])
    tpm = role_user("tpm")

    with django_capture_on_commit_callbacks(execute=True):
        assumption = assume(plan, tpm, probe_step_id=plan.steps.get().pk)

    assert (assumption.status, assumption.rank, assumption.created_by) == ("untested", 20, tpm)
    entry = LedgerEntry.objects.get(action="assumption.added")
    assert entry.plan_id == plan.pk and entry.actor_id == tpm.pk
    assert entry.payload["rank"] == 20 and entry.payload["probe_step"] == "probe-idp"
    assert StreamEvent.objects.filter(stream_id=plan.stream, event="assumption.added").exists()


def test_assumptions__several__ordered_by_rank_then_impact_then_age(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    low = assume(plan, tpm, statement="low", impact=2, uncertainty=2)  # 4
    wide = assume(plan, tpm, statement="wide", impact=2, uncertainty=5)  # 10
    deep = assume(plan, tpm, statement="deep", impact=5, uncertainty=2)  # 10, more impact
    top = assume(plan, tpm, statement="top", impact=4, uncertainty=4)  # 16

    assert list(plan.assumptions.all()) == [top, deep, wide, low]
    assert [a.rank for a in assumptions_for_plans([plan.pk])[plan.pk]] == [16, 10, 10, 4]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"impact": 0}, r"impact must be from 1 to 5 \(got 0\)"),
        ({"impact": 6}, r"impact must be from 1 to 5 \(got 6\)"),
        ({"uncertainty": 0}, r"uncertainty must be from 1 to 5 \(got 0\)"),
        ({"uncertainty": 6}, r"uncertainty must be from 1 to 5 \(got 6\)"),
        ({"impact": "high"}, r"impact must be a whole number from 1 to 5 \(got 'high'\)"),
        ({"statement": "  "}, "say what the plan assumes"),
        ({"probe": ""}, "say how to probe it"),
    ],
)
def test_assumption_add__bad_input__refused_naming_the_field_and_nothing_stored(
    make_plan, role_user, changes, problem
):
    plan = make_plan([{"key": "a"}])

    with pytest.raises(InvalidInput, match=problem):
        assume(plan, role_user("tpm"), **changes)

    assert not Assumption.objects.exists()
    assert not LedgerEntry.objects.filter(action="assumption.added").exists()


def test_assumption_add__probe_step_of_another_plan__refused(make_plan, role_user):
    plan, other = make_plan([{"key": "a"}], key="one"), make_plan([{"key": "b"}], key="two")

    with pytest.raises(InvalidInput, match="step b is not in plan one"):
        assume(plan, role_user("tpm"), probe_step_id=other.steps.get().pk)

    assert not Assumption.objects.exists()


def test_assumption_add__killed_plan__refused(make_plan, role_user):
    plan = make_plan([{"key": "a"}], status="killed")

    with pytest.raises(TransitionRefused, match="plan p is killed: it takes no new assumptions"):
        assume(plan, role_user("tpm"))


def test_assumption_scores__outside_1_to_5_in_sql__database_refuses(make_plan, role_user):
    from django.db import IntegrityError, transaction

    plan = make_plan([{"key": "a"}])
    assumption = assume(plan, role_user("tpm"))

    with pytest.raises(IntegrityError), transaction.atomic():
        Assumption.objects.filter(pk=assumption.pk).update(impact=6)
    with pytest.raises(IntegrityError), transaction.atomic():
        Assumption.objects.filter(pk=assumption.pk).update(uncertainty=0)

    assumption.refresh_from_db()
    assert (assumption.impact, assumption.uncertainty) == (5, 4)


# --- a person records what the evidence shows ----------------------------------------------------


def test_assumption_status_set__falsified_with_evidence__recorded_with_who_and_when(
    make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)

    falsify(assumption, tpm)

    assumption.refresh_from_db()
    assert assumption.status == "falsified" and assumption.evidence == "load test: 503s at 200 rps"
    assert assumption.status_changed_by == tpm and assumption.status_changed_at is not None
    entry = LedgerEntry.objects.get(action="assumption.falsified")
    assert entry.payload["from"] == "untested" and entry.payload["evidence"].startswith("load")


@pytest.mark.parametrize(
    ("status", "evidence", "problem"),
    [
        ("holding", "  ", "say what evidence shows the assumption is holding"),
        ("falsified", "", "say what evidence shows the assumption is falsified"),
        ("untested", "we forgot", "status must be one of holding, falsified"),
    ],
)
def test_assumption_status_set__bad_input__refused_and_nothing_changed(
    make_plan, role_user, status, evidence, problem
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)

    with pytest.raises(InvalidInput, match=problem):
        assumption_status_set(
            assumption_id=assumption.pk, status=status, evidence=evidence, actor=tpm
        )

    assumption.refresh_from_db()
    assert assumption.status == "untested" and assumption.evidence == ""
    assert (
        not LedgerEntry.objects.filter(action__startswith="assumption.", plan_id=plan.pk)
        .exclude(action="assumption.added")
        .exists()
    )


def test_assumption_status_set__no_person__refused(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    assumption = assume(plan, role_user("tpm"))

    with pytest.raises(InvalidInput, match="needs a person"):
        assumption_status_set(
            assumption_id=assumption.pk, status="holding", evidence="it held", actor=None
        )


def test_assumption_status_set__same_twice__one_ledger_entry(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)

    falsify(assumption, tpm)
    falsify(assumption, tpm)

    assert LedgerEntry.objects.filter(action="assumption.falsified").count() == 1


def test_assumption_status_set__killed_plan__refused_and_nothing_changed(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    decide(plan, tpm, "kill")
    entries = LedgerEntry.objects.count()

    with pytest.raises(TransitionRefused, match="is killed: its assumptions are final"):
        falsify(assumption, tpm)

    assert Assumption.objects.get(pk=assumption.pk).status == "untested"
    assert LedgerEntry.objects.count() == entries


def test_assumption_status_set__falsified_then_holding__needs_a_decision_first(
    make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    falsify(assumption, tpm)

    with pytest.raises(TransitionRefused, match="awaits a decision"):
        assumption_status_set(
            assumption_id=assumption.pk, status="holding", evidence="nah", actor=tpm
        )
    assert Assumption.objects.get(pk=assumption.pk).status == "falsified"

    decide(plan, tpm, "persist", assumption_id=assumption.pk, why="the load test was wrong")
    assumption_status_set(
        assumption_id=assumption.pk, status="holding", evidence="re-run: 0.2% errors", actor=tpm
    )
    assert Assumption.objects.get(pk=assumption.pk).status == "holding"


def test_assumption_status_set__more_evidence_for_the_same_finding__its_decision_still_answers(
    make_plan, role_user
):
    from rollouts.rules import decision_needed

    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    falsify(assumption, tpm)
    decide(plan, tpm, "adapt", assumption_id=assumption.pk)

    falsify(assumption, tpm, evidence="a second run: 503s at 150 rps")

    stored = Assumption.objects.get(pk=assumption.pk)
    assert stored.evidence == "a second run: 503s at 150 rps"
    assert decision_needed(assumptions_for_plans([plan.pk])[plan.pk]) == []


def test_plan_assumption_policy_set__refuse__stored_and_ledgered_unknown_refused(
    make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")

    plan_assumption_policy_set(plan_id=plan.pk, policy="refuse", actor=tpm)
    with pytest.raises(InvalidInput, match="one of warn, refuse"):
        plan_assumption_policy_set(plan_id=plan.pk, policy="shrug", actor=tpm)

    plan.refresh_from_db()
    assert plan.assumption_policy == "refuse"
    assert LedgerEntry.objects.get(action="plan.assumption_policy").payload == {
        "from": "warn",
        "to": "refuse",
    }


# --- a probe step's verification settles it ------------------------------------------------------


def _probing(make_plan, role_user, **step_fields) -> tuple[Assumption, Step]:
    """A plan whose top assumption is probed by its first step, which is started."""
    plan = make_plan(
        [{"key": "probe-idp", "kind": "probe"}, {"key": "cutover", "deps": ["probe-idp"]}]
    )
    probe = plan.steps.get(key="probe-idp")
    if step_fields:
        Step.objects.filter(pk=probe.pk).update(**step_fields)
    assumption = assume(plan, role_user("tpm"), probe_step_id=probe.pk)
    step_transition(step_id=probe.pk, action="start", actor=None, reason="probe")
    return assumption, probe


def test_probe_verification__fails__assumption_falsified_with_the_evaluation_as_evidence(
    make_plan, role_user
):
    assumption, probe = _probing(make_plan, role_user)
    run = probe.verifications.get()
    traffic(*BREACHING)

    evaluation = verification_evaluate(verification_id=run.pk, trigger="interval")

    assumption.refresh_from_db()
    assert assumption.status == "falsified"
    assert assumption.evidence_evaluation == evaluation
    assert assumption.evidence.startswith(f"probe step probe-idp, verification {run.pk} failed")
    assert "fail condition held" in assumption.evidence
    assert assumption.status_changed_by is None and assumption.status_changed_at is not None
    entry = LedgerEntry.objects.get(action="assumption.falsified")
    assert entry.payload["evaluation"] == evaluation.pk and entry.step_id == probe.pk
    # Ledger order: the run concluded, then the assumption, then what the run did.
    actions = list(
        LedgerEntry.objects.filter(plan_id=probe.plan_id, seq__gte=entry.seq - 1)
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions[:3] == ["verification.failed", "assumption.falsified", "step.failed"]


def test_probe_verification__succeeds__assumption_holding(make_plan, role_user):
    assumption, probe = _probing(make_plan, role_user, verify_count=1)
    traffic(*HEALTHY)

    evaluation = verification_evaluate(
        verification_id=probe.verifications.get().pk, trigger="interval"
    )

    assumption.refresh_from_db()
    assert assumption.status == "holding" and assumption.evidence_evaluation == evaluation
    assert "1 of 1 evaluations passed" in assumption.evidence
    probe.refresh_from_db()
    assert probe.status == "done"


def test_probe_verification__inconclusive__stays_untested_with_a_note(make_plan, role_user):
    assumption, probe = _probing(make_plan, role_user)

    verification_evaluate(verification_id=probe.verifications.get().pk, trigger="interval")

    assumption.refresh_from_db()
    assert assumption.status == "untested" and assumption.evidence_evaluation is None
    assert "inconclusive" in assumption.evidence and "settled nothing" in assumption.evidence
    assert LedgerEntry.objects.filter(action="assumption.probe_unsettled").count() == 1


def test_verification__step_probes_nothing__assumptions_untouched(make_plan, role_user):
    plan = make_plan([{"key": "ramp"}])
    assumption = assume(plan, role_user("tpm"))
    step = plan.steps.get()
    step_transition(step_id=step.pk, action="start", actor=None)
    traffic(*BREACHING)

    verification_evaluate(verification_id=step.verifications.get().pk, trigger="interval")

    assumption.refresh_from_db()
    assert assumption.status == "untested"
