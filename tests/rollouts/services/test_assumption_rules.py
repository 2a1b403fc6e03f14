"""Assumptions first: a falsified assumption holds every start until a decision answers it; an
untested top assumption warns (or, by the plan's policy, refuses) starting anything but its probe."""

import pytest

from core.errors import TransitionRefused
from ledger.models import LedgerEntry
from rollouts.models import Assumption, Step
from rollouts.rules import decision_needed, top_assumption
from rollouts.selectors import assumptions_for_plans
from rollouts.services.assumptions import assumption_status_set, plan_assumption_policy_set
from rollouts.services.decisions import step_start_over_budget
from rollouts.services.steps import step_transition
from tests.rollouts.decision_factories import WHAT, assume, decide, falsify
from tests.rollouts.slo_factories import gate, slo_with_budget

pytestmark = pytest.mark.django_db

FALSIFIED_REASON = (
    "decision needed: assumption 'The new IdP takes peak login traffic' was falsified by "
    "load test: 503s at 200 rps; record adapt, persist or kill"
)


@pytest.fixture
def plan(make_plan):
    """A probe step and two independent steps, all ready to start."""
    return make_plan([{"key": "probe-idp", "kind": "probe"}, {"key": "cutover"}, {"key": "docs"}])


def _start(plan, key: str, actor=None) -> Step:
    return step_transition(step_id=plan.steps.get(key=key).pk, action="start", actor=actor)


def _status(plan, key: str) -> str:
    return plan.steps.get(key=key).status


# --- decision needed -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["cutover", "probe-idp"])
def test_step_start__falsified_assumption_without_decision__refused_naming_it(plan, role_user, key):
    tpm = role_user("tpm")
    falsify(assume(plan, tpm), tpm)

    with pytest.raises(TransitionRefused) as refused:
        _start(plan, key, tpm)

    assert str(refused.value) == f"{key} cannot start: {FALSIFIED_REASON}"
    assert _status(plan, key) in {"pending", "ready"}
    assert not LedgerEntry.objects.filter(action="step.running").exists()


def test_step_start__decision_references_the_falsified_assumption__allowed_again(plan, role_user):
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    falsify(assumption, tpm)

    decide(plan, tpm, "persist", assumption_id=assumption.pk)
    _start(plan, "cutover", tpm)

    assert _status(plan, "cutover") == "running"


def test_step_start__decision_not_referencing_the_assumption__still_refused(plan, role_user):
    tpm = role_user("tpm")
    falsify(assume(plan, tpm), tpm)
    decide(plan, tpm, "persist")

    with pytest.raises(TransitionRefused, match="decision needed"):
        _start(plan, "cutover", tpm)


def test_step_start__falsified_again_after_the_decision__decision_needed_again(plan, role_user):
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    falsify(assumption, tpm)
    decide(plan, tpm, "persist", assumption_id=assumption.pk)
    assumption_status_set(
        assumption_id=assumption.pk, status="holding", evidence="fix deployed", actor=tpm
    )

    falsify(assumption, tpm, evidence="second load test: 503s again")

    with pytest.raises(TransitionRefused, match="falsified by second load test"):
        _start(plan, "cutover", tpm)


def test_step_start_over_budget__decision_needed__refused_before_any_decision_is_recorded(
    plan, role_user
):
    tpm = role_user("tpm")
    gate(plan, "cutover", slo_with_budget(remaining=-0.125))
    falsify(assume(plan, tpm), tpm)
    decisions = plan.decisions.count()

    with pytest.raises(TransitionRefused, match="cutover cannot start: decision needed"):
        step_start_over_budget(
            step_id=plan.steps.get(key="cutover").pk, actor=tpm, would_choose_again=True, **WHAT
        )

    assert plan.decisions.count() == decisions and _status(plan, "cutover") != "running"


# --- the top assumption untested: warn or refuse -------------------------------------------------


def test_step_start__top_untested_policy_warn__started_and_ledger_says_so(plan, role_user):
    tpm = role_user("tpm")
    assume(plan, tpm, probe_step_id=plan.steps.get(key="probe-idp").pk)

    _start(plan, "cutover", tpm)

    assert _status(plan, "cutover") == "running"
    payload = LedgerEntry.objects.get(action="step.running").payload
    assert payload["assumption_warning"] == (
        "probe the top assumption first: 'The new IdP takes peak login traffic' (rank 20) is "
        "untested; its probe: Replay one peak hour of logins against the IdP "
        "(cost 2 days; step probe-idp)"
    )


def test_step_start__top_untested_policy_refuse__refused_naming_the_probe(plan, role_user):
    tpm = role_user("tpm")
    assume(plan, tpm)
    plan_assumption_policy_set(plan_id=plan.pk, policy="refuse", actor=tpm)

    with pytest.raises(TransitionRefused) as refused:
        _start(plan, "cutover", tpm)

    assert str(refused.value) == (
        "cutover cannot start: probe the top assumption first: 'The new IdP takes peak login "
        "traffic' (rank 20) is untested; its probe: Replay one peak hour of logins against the "
        "IdP (cost 2 days)"
    )
    assert _status(plan, "cutover") != "running"


def test_step_start__policy_refuse_probe_steps__exempt_and_no_warning(plan, role_user):
    tpm = role_user("tpm")
    # The top assumption's probe step is a manual step: its link exempts it, like kind probe.
    assume(plan, tpm, probe_step_id=plan.steps.get(key="docs").pk)
    plan_assumption_policy_set(plan_id=plan.pk, policy="refuse", actor=tpm)

    _start(plan, "probe-idp", tpm)
    _start(plan, "docs", tpm)

    assert (_status(plan, "probe-idp"), _status(plan, "docs")) == ("running", "running")
    payloads = LedgerEntry.objects.filter(action="step.running").values_list("payload", flat=True)
    assert all("assumption_warning" not in p for p in payloads)


def test_step_start__top_assumption_holding__no_warning_even_if_a_lower_one_is_untested(
    plan, role_user
):
    tpm = role_user("tpm")
    top = assume(plan, tpm)
    assume(plan, tpm, statement="Sessions survive the cutover", impact=2, uncertainty=2)
    assumption_status_set(assumption_id=top.pk, status="holding", evidence="replay ok", actor=tpm)
    plan_assumption_policy_set(plan_id=plan.pk, policy="refuse", actor=tpm)

    _start(plan, "cutover", tpm)

    assert "assumption_warning" not in LedgerEntry.objects.get(action="step.running").payload


def test_step_start__no_assumptions__no_warning(plan):
    _start(plan, "cutover")

    assert "assumption_warning" not in LedgerEntry.objects.get(action="step.running").payload


def test_step_start__lockstep_with_a_non_probe_partner__refused_under_refuse(make_plan, role_user):
    plan = make_plan(
        [{"key": "probe-a", "kind": "probe", "lockstep": "g"}, {"key": "b", "lockstep": "g"}]
    )
    tpm = role_user("tpm")
    assume(plan, tpm)
    plan_assumption_policy_set(plan_id=plan.pk, policy="refuse", actor=tpm)

    with pytest.raises(TransitionRefused, match="probe the top assumption first"):
        _start(plan, "probe-a", tpm)


# --- the rules as pure functions -----------------------------------------------------------------


def test_decision_needed__rows_loaded_once__answered_only_by_a_later_decision(
    make_plan, role_user, django_assert_num_queries
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    first, second = assume(plan, tpm), assume(plan, tpm, statement="Second", impact=1)
    falsify(first, tpm)
    falsify(second, tpm)
    decide(plan, tpm, "persist", assumption_id=second.pk)

    with django_assert_num_queries(1):
        loaded = assumptions_for_plans([plan.pk])[plan.pk]
    with django_assert_num_queries(0):
        pending = decision_needed(loaded)
        top = top_assumption(loaded)

    assert pending == [first] and top == first
    assert Assumption.objects.get(pk=second.pk).status == "falsified"
