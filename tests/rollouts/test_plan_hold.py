"""An open incident on a plan's services holds the plan: no step starts until the incident
resolves or its commander releases the plan (a recorded call with a reason). The safety net is
never held: a running step still fails and reverts."""

import pytest

from core.errors import InvalidInput, TransitionRefused
from incidents.models import TimelineEntry
from incidents.services import incident_declare, incident_plan_release, incident_status_change
from ledger.models import LedgerEntry
from rollouts.services.steps import step_transition

pytestmark = pytest.mark.django_db


@pytest.fixture
def plan(make_plan):
    return make_plan(
        [
            {"key": "deploy-api", "kind": "deploy", "service": "accounts-api"},
            {"key": "later", "service": "billing"},
        ],
        key="identity",
    )


@pytest.fixture
def commander(role_user):
    return role_user("commander", username="cmdr")


def _declare(commander, **fields):
    defaults = {"title": "login errors", "severity": 2, "services": ["accounts-api"]}
    return incident_declare(actor=commander, **(defaults | fields))


def _start(plan, key, role_user):
    return step_transition(
        step_id=plan.steps.get(key=key).pk, action="start", actor=role_user("tpm")
    )


def test_step_start__incident_open_on_a_service_the_plan_ships__refused_naming_the_incident(
    plan, commander, role_user
):
    incident = _declare(commander)

    with pytest.raises(TransitionRefused) as refused:
        _start(plan, "later", role_user)  # holds every step, not only the one on that service

    assert f"held by INC-{incident.pk} (accounts-api, SEV2)" in str(refused.value)
    assert plan.steps.get(key="later").status == "pending"


def test_step_start__incident_on_other_services__not_held(plan, commander, role_user):
    _declare(commander, services=["search"])
    assert _start(plan, "deploy-api", role_user).status == "running"


def test_step_start__incident_names_the_plan_without_a_shared_service__held(
    plan, commander, role_user
):
    incident = _declare(commander, services=[], plan_keys=["identity"])
    with pytest.raises(TransitionRefused, match=f"held by INC-{incident.pk} \\(SEV2\\)"):
        _start(plan, "deploy-api", role_user)


def test_running_step__incident_opens__fail_and_revert_still_act(plan, commander, role_user):
    step = _start(plan, "deploy-api", role_user)
    _declare(commander)

    failed = step_transition(step_id=step.pk, action="fail", actor=None, reason="errors")
    assert failed.status == "failed"
    assert step_transition(step_id=step.pk, action="revert", actor=None).status == "reverted"


def test_plan_release__commander_with_reason__starts_again_recorded_everywhere(
    plan, commander, role_user
):
    incident = _declare(commander)

    release = incident_plan_release(
        incident_id=incident.pk,
        plan_key="identity",
        reason="the deploy is the fix",
        actor=commander,
    )

    assert _start(plan, "deploy-api", role_user).status == "running"
    entry = LedgerEntry.objects.get(action="incident.plan_released")
    assert (entry.plan_id, entry.incident_id) == (plan.pk, incident.pk)
    assert entry.payload["reason"] == "the deploy is the fix"
    said = incident.timeline.filter(kind=TimelineEntry.Kind.DECISION).get().text
    assert "released plan identity" in said and "the deploy is the fix" in said
    again = incident_plan_release(
        incident_id=incident.pk, plan_key="identity", reason="double click", actor=commander
    )
    assert again.pk == release.pk  # a second click is the same release
    assert LedgerEntry.objects.filter(action="incident.plan_released").count() == 1


def test_plan_release__not_the_commander_no_reason_or_not_held__refused_nothing_written(
    plan, commander, role_user
):
    incident = _declare(commander)
    other = role_user("commander", username="other-cmdr")

    with pytest.raises(
        TransitionRefused, match=r"only INC-\d+.s commander releases its plans: cmdr"
    ):
        incident_plan_release(
            incident_id=incident.pk, plan_key="identity", reason="go", actor=other
        )
    with pytest.raises(InvalidInput, match="say why plan identity may go on"):
        incident_plan_release(
            incident_id=incident.pk, plan_key="identity", reason=" ", actor=commander
        )
    with pytest.raises(InvalidInput, match="does not hold plan 'elsewhere'; it holds identity"):
        incident_plan_release(
            incident_id=incident.pk, plan_key="elsewhere", reason="go", actor=commander
        )
    assert not LedgerEntry.objects.filter(action="incident.plan_released").exists()
    with pytest.raises(TransitionRefused):
        _start(plan, "deploy-api", role_user)


def test_step_start__incident_resolved__no_longer_held(plan, commander, role_user):
    incident = _declare(commander)
    incident_status_change(incident_id=incident.pk, status="resolved", actor=commander)
    assert _start(plan, "deploy-api", role_user).status == "running"


def test_pages__held_plan__plan_portfolio_and_console_say_so_with_the_release_form(
    plan, commander, role_user, client, pushes
):
    with pushes.commit():
        incident = _declare(commander)
    assert f"Held by INC-{incident.pk}" in pushes.last_html(plan.stream)

    client.force_login(commander)
    plan_page = client.get("/plans/identity/").content.decode()
    assert 'data-testid="plan-held-by"' in plan_page
    assert f"Held by INC-{incident.pk} (accounts-api, SEV2)" in plan_page
    portfolio = client.get("/").content.decode()
    assert f"held by INC-{incident.pk} (accounts-api, SEV2)" in portfolio
    console = client.get(f"/incidents/{incident.pk}/").content.decode()
    assert 'data-testid="release-identity"' in console

    response = client.post(
        f"/incidents/{incident.pk}/plan-release",
        {"plan": "identity", "reason": ""},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400 and "say why" in response.content.decode()
    with pushes.commit():
        response = client.post(
            f"/incidents/{incident.pk}/plan-release",
            {"plan": "identity", "reason": "unrelated after all"},
            HTTP_HX_REQUEST="true",
        )
    assert response.status_code == 200 and "plan identity released" in response.content.decode()
    assert "Held by" not in pushes.last_html(plan.stream)
    assert "unrelated after all" in client.get(f"/incidents/{incident.pk}/").content.decode()
