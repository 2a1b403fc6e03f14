"""The decision log as a write path: kill kills the plan, adapt names a re-plan, persist changes
nothing; every refusal leaves what is stored as it was; PostgreSQL refuses edits below the ORM."""

import pytest
import yaml
from django.db import DatabaseError, transaction

from core.errors import InvalidInput, TransitionRefused
from ledger.models import LedgerEntry
from rollouts.models import Decision, Plan, Step, Verification
from rollouts.plan_spec import plan_export
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.plan_apply import PlanApplyRefused, plan_apply
from rollouts.services.steps import step_transition
from tests.rollouts.decision_factories import BREACHING, assume, decide, falsify, traffic
from tests.rollouts.plan_factories import step_doc

pytestmark = pytest.mark.django_db


def _stored() -> tuple[int, int]:
    return Decision.objects.count(), LedgerEntry.objects.filter(action="decision.recorded").count()


# --- kill ----------------------------------------------------------------------------------------


def test_decision_kill__active_plan__plan_killed_running_check_cancelled_starts_refused(
    make_plan, role_user
):
    plan = make_plan([{"key": "a"}, {"key": "b"}])
    tpm = role_user("tpm")
    a = plan.steps.get(key="a")
    step_transition(step_id=a.pk, action="start", actor=tpm)

    decision = decide(plan, tpm, "kill")

    plan.refresh_from_db()
    assert plan.status == "killed"
    run = a.verifications.get()
    assert run.status == "cancelled" and "the plan was killed" in run.conclusion
    killed = LedgerEntry.objects.get(action="plan.killed")
    assert killed.payload["reason"].startswith(f"decision {decision.pk}: ")
    recorded = LedgerEntry.objects.get(action="decision.recorded")
    assert recorded.seq < killed.seq
    with pytest.raises(TransitionRefused, match="plan is killed: only an active plan starts"):
        step_transition(step_id=plan.steps.get(key="b").pk, action="start", actor=tpm)
    # A late evaluation of the cancelled run records nothing and acts on nothing.
    traffic(*BREACHING)
    assert verification_evaluate(verification_id=run.pk, trigger="interval") is None
    assert Step.objects.get(pk=a.pk).status == "running"


def test_decision_kill__running_verification_cancelled(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    step = plan.steps.get()
    step_transition(step_id=step.pk, action="start", actor=None)

    decide(plan, role_user("tpm"), "kill")

    assert step.verifications.get().status == Verification.Status.CANCELLED
    assert LedgerEntry.objects.filter(action="verification.cancelled", step_id=step.pk).exists()


@pytest.mark.parametrize("status", ["completed", "killed"])
def test_decision_kill__plan_already_ended__refused_and_nothing_stored(
    make_plan, role_user, status
):
    plan = make_plan([{"key": "a", "status": "done"}], status=status)
    entries = LedgerEntry.objects.count()

    with pytest.raises(
        TransitionRefused, match=f"plan p is {status}: there is nothing left to kill"
    ):
        decide(plan, role_user("tpm"), "kill")

    assert _stored() == (0, 0) and LedgerEntry.objects.count() == entries
    plan.refresh_from_db()
    assert plan.status == status


@pytest.mark.parametrize("decided", ["adapt", "persist"])
def test_decision_adapt_or_persist__changes_no_state(make_plan, role_user, decided):
    plan = make_plan([{"key": "a"}, {"key": "b", "deps": ["a"]}])
    before = list(plan.steps.values_list("key", "status"))

    decide(plan, role_user("tpm"), decided)

    plan.refresh_from_db()
    assert plan.status == "active" and list(plan.steps.values_list("key", "status")) == before
    assert not LedgerEntry.objects.filter(action__startswith="plan.").exists()


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"why": "   "}, "say why you decided this"),
        ({"believed": "", "observed": ""}, "say what you believed; say what reality showed"),
    ],
)
def test_decision_record__no_reasoning__refused_even_for_a_kill_and_plan_untouched(
    make_plan, role_user, changes, problem
):
    plan = make_plan([{"key": "a"}])

    with pytest.raises(InvalidInput, match=problem):
        decide(plan, role_user("tpm"), "kill", **changes)

    plan.refresh_from_db()
    assert plan.status == "active" and _stored() == (0, 0)


# --- links ---------------------------------------------------------------------------------------


def test_decision_record__assumption_linked__stored_and_in_the_ledger(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    falsify(assumption, tpm)

    decision = decide(plan, tpm, "persist", assumption_id=assumption.pk)

    assert decision.assumption == assumption
    assert LedgerEntry.objects.get(action="decision.recorded").payload["assumption"] == (
        assumption.pk
    )
    assert list(assumption.decisions.all()) == [decision]


def test_decision_record__assumption_of_another_plan__refused(make_plan, role_user):
    one, two = make_plan([{"key": "a"}], key="one"), make_plan([{"key": "b"}], key="two")
    tpm = role_user("tpm")
    elsewhere = assume(two, tpm)

    with pytest.raises(InvalidInput, match=f"assumption {elsewhere.pk} is not of plan one"):
        decide(one, tpm, "adapt", assumption_id=elsewhere.pk)

    assert _stored() == (0, 0)


def test_decision_record__correction_of_another_plans_decision__refused_nothing_stored(
    make_plan, role_user
):
    one, two = make_plan([{"key": "a"}], key="one"), make_plan([{"key": "b"}], key="two")
    tpm = role_user("tpm")
    elsewhere = decide(two, tpm, "persist")

    with pytest.raises(InvalidInput, match="a correction must point at a decision of the same"):
        decide(one, tpm, "adapt", corrects_id=elsewhere.pk)

    assert _stored() == (1, 1)


# --- adapt: a re-plan that names the decision ----------------------------------------------------


def _replanned_text(plan: Plan) -> str:
    """The plan's file with its unstarted step b replaced by c."""
    doc = yaml.safe_load(plan_export(plan))
    doc["spec"]["steps"] = [s for s in doc["spec"]["steps"] if s["key"] != "b"]
    doc["spec"]["steps"].append(step_doc("c", depends_on=["a"]))
    return yaml.safe_dump(doc, sort_keys=False)


def test_plan_apply__under_adapt_decision__diff_ledgered_with_the_decision_verified_work_kept(
    make_plan, role_user
):
    plan = make_plan([{"key": "a", "status": "done"}, {"key": "b", "deps": ["a"]}], key="checkout")
    tpm = role_user("tpm")
    adapt = decide(plan, tpm, "adapt")

    result = plan_apply(text=_replanned_text(plan), actor=tpm, decision_id=adapt.pk)

    assert result.applied and result.decision == adapt
    applied = LedgerEntry.objects.get(action="plan.applied")
    assert applied.payload["decision"] == adapt.pk
    assert applied.payload["steps_added"] == ["c"] and applied.payload["steps_removed"] == ["b"]
    assert dict(plan.steps.values_list("key", "status")) == {"a": "done", "c": "pending"}


@pytest.mark.parametrize("decided", ["persist", "kill"])
def test_plan_apply__decision_not_an_adapt__refused_and_nothing_written(
    make_plan, role_user, decided
):
    plan = make_plan([{"key": "a", "status": "done"}, {"key": "b", "deps": ["a"]}], key="checkout")
    tpm = role_user("tpm")
    text = _replanned_text(plan)
    decision = decide(plan, tpm, decided)

    with pytest.raises(PlanApplyRefused, match=f"decided {decided}, not adapt"):
        plan_apply(text=text, actor=tpm, decision_id=decision.pk)

    assert set(plan.steps.values_list("key", flat=True)) == {"a", "b"}
    assert not LedgerEntry.objects.filter(action="plan.applied").exists()


def test_plan_apply__adapt_decision_of_another_plan_or_corrected__refused(make_plan, role_user):
    plan = make_plan([{"key": "a", "status": "done"}, {"key": "b", "deps": ["a"]}], key="checkout")
    other = make_plan([{"key": "x"}], key="other")
    tpm = role_user("tpm")
    elsewhere = decide(other, tpm, "adapt")
    mine = decide(plan, tpm, "adapt")
    decide(plan, tpm, "persist", corrects_id=mine.pk)
    text = _replanned_text(plan)

    with pytest.raises(PlanApplyRefused, match="is not a decision on plan 'checkout'"):
        plan_apply(text=text, actor=tpm, decision_id=elsewhere.pk)
    with pytest.raises(PlanApplyRefused, match=f"was corrected by decision {mine.pk + 1}"):
        plan_apply(text=text, actor=tpm, decision_id=mine.pk, dry_run=True)

    assert not LedgerEntry.objects.filter(action="plan.applied").exists()


# --- append-only below the ORM -------------------------------------------------------------------


@pytest.mark.postgres
def test_decision_trigger__update_or_delete_on_postgres__refused_and_row_unchanged(
    make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    decision = decide(plan, role_user("tpm"), "persist")

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Decision.objects.filter(pk=decision.pk).update(why="we never said that")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Decision.objects.filter(pk=decision.pk).delete()

    stored = Decision.objects.get(pk=decision.pk)
    assert (stored.decided, stored.why) == ("persist", decision.why)
