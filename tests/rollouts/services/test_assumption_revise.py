"""Revising an assumption: re-scored (its rank moves) or re-worded while untested, ledgered with
what changed, refused with the reason otherwise, and nothing stored changes then."""

import pytest

from core.errors import InvalidInput, TransitionRefused
from ledger.models import LedgerEntry
from live.models import StreamEvent
from rollouts.models import Assumption
from rollouts.services.assumptions import assumption_revise
from tests.rollouts.decision_factories import assume, decide, falsify

pytestmark = pytest.mark.django_db


def _revise(assumption: Assumption, actor, **changes) -> Assumption:
    values = {
        "statement": assumption.statement,
        "impact": assumption.impact,
        "uncertainty": assumption.uncertainty,
        "probe": assumption.probe,
        "probe_cost": assumption.probe_cost,
        "probe_step_id": assumption.probe_step_id,
    } | changes
    return assumption_revise(assumption_id=assumption.pk, actor=actor, **values)


def _stored(assumption: Assumption) -> tuple:
    a = Assumption.objects.get(pk=assumption.pk)
    return (a.statement, a.impact, a.uncertainty, a.probe, a.probe_step_id, a.status)


def test_assumption_revise__rescored__rank_moves_ledger_keeps_what_it_was(
    make_plan, role_user, django_capture_on_commit_callbacks
):
    plan = make_plan([{"key": "a"}, {"key": "probe", "kind": "probe"}])
    tpm = role_user("tpm")
    top = assume(plan, tpm)  # 5 x 4 = 20
    other = assume(plan, tpm, statement="Sessions backfill online", impact=4, uncertainty=3)

    with django_capture_on_commit_callbacks(execute=True):
        revised = _revise(top, tpm, uncertainty=1, probe_step_id=plan.steps.get(key="probe").pk)

    assert revised.rank == 5
    assert list(plan.assumptions.all()) == [other, top]  # the other one is on top now
    entry = LedgerEntry.objects.get(action="assumption.revised")
    assert entry.plan_id == plan.pk and entry.actor_id == tpm.pk
    assert entry.payload["changed"] == {
        "uncertainty": {"from": 4, "to": 1},
        "rank": {"from": 20, "to": 5},
        "probe_step": {"from": None, "to": "probe"},
    }
    assert StreamEvent.objects.filter(
        stream_id=plan.stream, event__contains="assumption.revised"
    ).exists()


def test_assumption_revise__untested__statement_reworded(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)

    _revise(assumption, tpm, statement="The new IdP takes 2,000 sign-ins/s")

    assert _stored(assumption)[0] == "The new IdP takes 2,000 sign-ins/s"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({}, "nothing changed"),
        ({"impact": 9}, r"impact must be from 1 to 5 \(got 9\)"),
        ({"statement": " ", "probe": ""}, "say what the plan assumes; say how to probe it"),
        ({"probe_step_id": 999_999}, "no step with id 999999"),
    ],
)
def test_assumption_revise__bad_input__refused_nothing_changed(
    make_plan, role_user, changes, problem
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    before, entries = _stored(assumption), LedgerEntry.objects.count()

    with pytest.raises(InvalidInput, match=problem):
        _revise(assumption, tpm, **changes)

    assert _stored(assumption) == before and LedgerEntry.objects.count() == entries


def test_assumption_revise__falsified__words_stay_but_scores_move(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    falsify(assumption, tpm)
    before = _stored(assumption)

    with pytest.raises(TransitionRefused, match="its evidence is about its words"):
        _revise(assumption, tpm, statement="Something we now believe instead")
    assert _stored(assumption) == before

    _revise(assumption, tpm, impact=3)
    assert Assumption.objects.get(pk=assumption.pk).rank == 12


def test_assumption_revise__killed_plan__refused(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    decide(plan, tpm, "kill")
    before = _stored(assumption)

    with pytest.raises(TransitionRefused, match="is killed: its assumptions are final"):
        _revise(assumption, tpm, impact=1)
    assert _stored(assumption) == before


def test_assumption_edit_view__get_prefilled_post_saves_and_redirects(client, make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    client.force_login(tpm)
    url = f"/plans/{plan.key}/assumptions/{assumption.pk}/edit"

    page = client.get(url)
    assert page.status_code == 200
    assert "The new IdP takes peak login traffic" in page.content.decode()

    response = client.post(
        url,
        {
            "statement": assumption.statement,
            "impact": "5",
            "uncertainty": "2",
            "probe": assumption.probe,
            "probe_cost": "1 day",
            "probe_step": "",
        },
    )
    assert response.status_code == 302 and response["Location"].endswith("#assumptions")
    assert Assumption.objects.get(pk=assumption.pk).rank == 10


def test_assumption_edit_view__bad_score__400_with_the_reason_and_typed_text_kept(
    client, make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    client.force_login(tpm)

    response = client.post(
        f"/plans/{plan.key}/assumptions/{assumption.pk}/edit",
        {"statement": "typed words", "impact": "8", "uncertainty": "2", "probe": "p"},
    )

    body = response.content.decode()
    assert response.status_code == 400
    assert "impact must be from 1 to 5 (got 8)" in body and "typed words" in body
    assert Assumption.objects.get(pk=assumption.pk).impact == 5


def test_assumption_edit_view__viewer_403_other_plans_assumption_404(client, make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    other = make_plan([{"key": "b"}], key="other")
    tpm = role_user("tpm")
    assumption = assume(plan, tpm)
    client.force_login(role_user("viewer"))
    assert client.get(f"/plans/{plan.key}/assumptions/{assumption.pk}/edit").status_code == 403
    client.force_login(tpm)
    assert client.get(f"/plans/{other.key}/assumptions/{assumption.pk}/edit").status_code == 404
