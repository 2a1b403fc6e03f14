"""The decision log's one write path, and the budget gate override that records a decision first."""

import pytest

from core.errors import InvalidInput, TransitionRefused
from ledger.models import LedgerEntry
from live.models import StreamEvent
from rollouts.models import Decision
from rollouts.services.decisions import decision_record, step_start_over_budget
from rollouts.services.steps import step_transition
from tests.rollouts.slo_factories import gate, slo_with_budget

pytestmark = pytest.mark.django_db

WHAT = {
    "believed": "The new login flow keeps errors under budget.",
    "observed": "Errors doubled in eu-west after the 5% ramp.",
    "why": "The cause is a config typo, fixed; the plan still holds.",
}


def _override(step_id: int, actor, **changes):
    return step_start_over_budget(
        step_id=step_id, actor=actor, would_choose_again=True, **(WHAT | changes)
    )


def test_decision_record__plan_decision__stored_ledgered_and_pushed(
    make_plan, role_user, django_capture_on_commit_callbacks
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")

    with django_capture_on_commit_callbacks(execute=True):
        decision = decision_record(
            actor=tpm, plan_id=plan.pk, decided="adapt", would_choose_again=False, **WHAT
        )

    assert decision.author == tpm and decision.plan == plan and decision.decided == "adapt"
    entry = LedgerEntry.objects.get(action="decision.recorded")
    assert entry.plan_id == plan.pk and entry.actor_id == tpm.pk
    assert entry.payload["decision"] == decision.pk
    assert entry.payload["believed"] == WHAT["believed"]
    assert entry.payload["would_choose_again"] is False
    assert entry.payload["question"].startswith("Knowing what we know now")
    assert StreamEvent.objects.filter(stream_id=plan.stream, event="decision.recorded").exists()


def test_decision_record__step_given__belongs_to_the_steps_plan(make_plan, role_user):
    plan = make_plan([{"key": "a"}])

    decision = decision_record(
        actor=role_user("tpm"), step_id=plan.steps.get().pk, decided="kill", **WHAT
    )

    assert decision.plan_id == plan.pk


def test_decision_record__incident_decision_with_label__no_plan_needed(role_user):
    decision = decision_record(
        actor=role_user("commander"), incident_id=7, decided="other", label="fail over", **WHAT
    )

    assert decision.plan is None and decision.incident_id == 7
    assert LedgerEntry.objects.get(action="decision.recorded").incident_id == 7


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"believed": "  "}, "say what you believed"),
        ({"observed": ""}, "say what reality showed"),
        ({"why": "\n"}, "say why you decided this"),
        ({"decided": "wait"}, r"decided must be one of adapt, persist, kill, other \(got 'wait'\)"),
        ({"decided": "other"}, "a label is needed"),
        ({"plan_id": None}, "a decision belongs to a plan or an incident"),
        ({"label": "x" * 101}, "the label is at most 100 characters"),
    ],
)
def test_decision_record__invalid__refused_naming_the_problem_and_nothing_stored(
    make_plan, role_user, changes, problem
):
    plan = make_plan([{"key": "a"}])
    values = {"plan_id": plan.pk, "decided": "persist", **WHAT} | changes

    with pytest.raises(InvalidInput, match=problem):
        decision_record(actor=role_user("tpm"), **values)

    assert not Decision.objects.exists()
    assert not LedgerEntry.objects.filter(action="decision.recorded").exists()


def test_decision_record__no_author__refused(make_plan):
    plan = make_plan([{"key": "a"}])

    with pytest.raises(InvalidInput, match="needs an author"):
        decision_record(actor=None, plan_id=plan.pk, decided="adapt", **WHAT)


def test_decision_record__step_of_another_plan__refused(make_plan, role_user):
    one, other = make_plan([{"key": "a"}], key="one"), make_plan([{"key": "b"}], key="two")

    with pytest.raises(InvalidInput, match="step b is not in plan one"):
        decision_record(
            actor=role_user("tpm"),
            plan_id=one.pk,
            step_id=other.steps.get().pk,
            decided="adapt",
            **WHAT,
        )


def test_decision_record__correction__new_entry_pointing_at_the_old_one_left_as_it_was(
    make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    first = decision_record(actor=tpm, plan_id=plan.pk, decided="persist", **WHAT)

    fixed = decision_record(
        actor=tpm,
        plan_id=plan.pk,
        decided="adapt",
        corrects_id=first.pk,
        **(WHAT | {"why": "We misread the dashboard: it is the ramp."}),
    )

    first.refresh_from_db()
    assert fixed.corrects == first and first.decided == "persist" and first.why == WHAT["why"]
    assert list(first.corrections.all()) == [fixed]
    assert LedgerEntry.objects.filter(action="decision.recorded").count() == 2


def test_decision_record__correction_of_another_plans_decision__refused(make_plan, role_user):
    one, two = make_plan([{"key": "a"}], key="one"), make_plan([{"key": "b"}], key="two")
    tpm = role_user("tpm")
    elsewhere = decision_record(actor=tpm, plan_id=two.pk, decided="persist", **WHAT)

    with pytest.raises(InvalidInput, match="a correction must point at a decision of the same"):
        decision_record(
            actor=tpm, plan_id=one.pk, decided="adapt", corrects_id=elsewhere.pk, **WHAT
        )

    assert Decision.objects.count() == 1


# --- the budget gate override --------------------------------------------------------------------


def test_step_start_over_budget__gate_holds__decision_recorded_then_step_started_naming_it(
    make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    slo = slo_with_budget(remaining=-0.125)
    step = gate(plan, "a", slo)
    tpm = role_user("tpm")

    started = _override(step.pk, tpm)

    assert started.status == "running"
    decision = Decision.objects.get()
    assert (decision.decided, decision.label) == ("persist", "error budget gate override")
    assert decision.step == step and decision.slo == slo and decision.plan == plan
    assert decision.author == tpm and decision.would_choose_again is True
    actions = list(
        LedgerEntry.objects.filter(plan_id=plan.pk)
        .filter(action__in=["decision.recorded", "step.running"])
        .order_by("seq")
        .values_list("action", "payload")
    )
    assert [a for a, _ in actions] == ["decision.recorded", "step.running"]
    recorded, running = actions[0][1], actions[1][1]
    assert recorded["slo"] == "login-availability" and recorded["step"] == "a"
    assert running["budget_override"] == {"decision": decision.pk}
    assert f"decision {decision.pk}" in running["reason"]


def test_step_start_over_budget__lockstep_partner_gated__group_starts_decision_names_its_slo(
    make_plan, role_user
):
    plan = make_plan([{"key": "eu", "lockstep": "g"}, {"key": "us", "lockstep": "g"}])
    slo = slo_with_budget(remaining=-0.125)
    gate(plan, "us", slo)

    _override(plan.steps.get(key="eu").pk, role_user("tpm"))

    assert set(plan.steps.values_list("status", flat=True)) == {"running"}
    assert Decision.objects.get().slo == slo
    started = LedgerEntry.objects.filter(action="step.running")
    assert started.count() == 2
    assert all("budget_override" in e.payload for e in started)


def test_step_start_over_budget__no_gate_holds__refused_and_nothing_stored(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    step = gate(plan, "a", slo_with_budget(remaining=0.63))

    with pytest.raises(TransitionRefused, match="no error budget gate holds it"):
        _override(step.pk, role_user("tpm"))

    assert not Decision.objects.exists()
    assert plan.steps.get().status in {"pending", "ready"}


def test_step_start_over_budget__another_rule_holds__refused_with_that_rule(make_plan, role_user):
    plan = make_plan([{"key": "first"}, {"key": "a", "deps": ["first"]}])
    step = gate(plan, "a", slo_with_budget(remaining=-0.125))

    with pytest.raises(TransitionRefused, match="a cannot start: waits for first"):
        _override(step.pk, role_user("tpm"))

    assert not Decision.objects.exists()


@pytest.mark.parametrize("field", ["believed", "observed", "why"])
def test_step_start_over_budget__empty_field__refused_and_nothing_stored(
    make_plan, role_user, field
):
    plan = make_plan([{"key": "a"}])
    step = gate(plan, "a", slo_with_budget(remaining=-0.125))
    entries = LedgerEntry.objects.count()

    with pytest.raises(InvalidInput):
        _override(step.pk, role_user("tpm"), **{field: "  "})

    assert not Decision.objects.exists()
    assert plan.steps.get().status in {"pending", "ready"}
    assert LedgerEntry.objects.count() == entries


def test_step_transition__override_on_another_action__refused(make_plan, role_user):
    plan = make_plan([{"key": "a", "status": "running"}])
    tpm = role_user("tpm")
    decision = decision_record(actor=tpm, plan_id=plan.pk, decided="persist", **WHAT)

    with pytest.raises(InvalidInput, match="only starts a step"):
        step_transition(
            step_id=plan.steps.get().pk, action="advance", actor=tpm, budget_override=decision
        )
