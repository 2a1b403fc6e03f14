import hashlib

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiToken
from accounts.services import api_token_create, api_token_revoke
from ledger.models import LedgerEntry

pytestmark = pytest.mark.django_db


def _create(capsys, user, *scopes: str) -> str:
    call_command(
        "create_api_token",
        "--user",
        user.username,
        "--name",
        "ci",
        *[a for s in scopes for a in ("--scope", s)],
    )
    return capsys.readouterr().out.strip()


def test_create_api_token__command__prints_secret_once_and_stores_only_its_digest(
    capsys, role_user
):
    user = role_user("viewer")
    raw = _create(capsys, user, "ledger:read")
    token = ApiToken.objects.get()
    assert raw.startswith("sw_") and len(raw) > 40
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(list(ApiToken.objects.values()))
    assert LedgerEntry.objects.filter(action="api_token.created").count() == 1


def test_create_api_token__unknown_scope_or_user__clear_error_and_nothing_created(role_user):
    user = role_user("viewer")
    with pytest.raises(CommandError, match="unknown scope"):
        call_command("create_api_token", "--user", user.username, "--name", "x", "--scope", "root")
    with pytest.raises(CommandError, match="no user named"):
        call_command("create_api_token", "--user", "ghost", "--name", "x", "--scope", "ledger:read")
    assert not ApiToken.objects.exists()


def test_api_ledger__token_with_scope__200_with_entries(capsys, client, role_user):
    raw = _create(capsys, role_user("viewer"), "ledger:read")
    response = client.get("/api/ledger", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    assert response.json()["entries"][0]["action"] == "api_token.created"
    assert client.get("/api/ledger", HTTP_X_API_KEY=raw).status_code == 200


def test_api_ledger__token_without_scope__403_naming_the_scope(capsys, client, role_user):
    raw = _create(capsys, role_user("viewer"), "metrics:write")
    response = client.get("/api/ledger", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 403
    assert "ledger:read" in response.json()["error"]


def test_api_ledger__revoked_or_unknown_token__401_and_no_session_fallback(
    capsys, client, role_user
):
    user = role_user("viewer")
    raw = _create(capsys, user, "ledger:read")
    call_command("revoke_api_token", str(ApiToken.objects.get().pk))
    client.force_login(user)  # a session must not rescue a revoked machine credential
    assert client.get("/api/ledger", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert client.get("/api/ledger", HTTP_AUTHORIZATION="Bearer sw_forged").status_code == 401
    assert LedgerEntry.objects.filter(action="api_token.revoked").count() == 1


def test_api_ledger__no_credentials__401_json_not_a_login_redirect(client):
    response = client.get("/api/ledger")
    assert response.status_code == 401
    assert "authentication required" in response.json()["error"]


def test_api_token_revoke__twice__second_is_a_no_op(role_user):
    token, _ = api_token_create(user=role_user("tpm"), name="deploy-bot", scopes=["deploys:write"])
    first = api_token_revoke(token_id=token.pk)
    second = api_token_revoke(token_id=token.pk)
    assert first.revoked_at == second.revoked_at
    assert LedgerEntry.objects.filter(action="api_token.revoked").count() == 1


def test_api_token__expired__refused(client, role_user):
    from datetime import timedelta

    from django.utils import timezone

    token, raw = api_token_create(
        user=role_user("viewer"), name="old", scopes=["ledger:read"], expires_in_days=1
    )
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/ledger", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def _ledger_reader(role_user) -> dict[str, str]:
    _, raw = api_token_create(user=role_user("viewer"), name="reader", scopes=["ledger:read"])
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_api_ledger__unknown_plan_key__400_with_field_reason(client, role_user):
    response = client.get("/api/ledger?plan=abc", **_ledger_reader(role_user))
    assert response.status_code == 400
    assert "no plan is called 'abc'" in str(response.json()["fields"]["plan"])


def test_api_ledger__filters_by_keys__plan_key_step_key_and_incident_number(client, role_user):
    from incidents.services import incident_declare
    from ledger.services import ledger_append
    from rollouts.services.plan_apply import plan_apply
    from tests.rollouts.plan_factories import plan_yaml, step_doc

    tpm = role_user("tpm")
    plan = plan_apply(text=plan_yaml(step_doc("deploy-a"), key="checkout-v2"), actor=tpm).plan
    step = plan.steps.get()
    incident = incident_declare(title="keys", severity=3, actor=role_user("commander"))
    ledger_append(action="probe.step", subject_type="t", plan_id=plan.pk, step_id=step.pk)
    auth = _ledger_reader(role_user)

    def actions(query: str) -> set[str]:
        response = client.get(f"/api/ledger?{query}", **auth)
        assert response.status_code == 200, response.content
        return {e["action"] for e in response.json()["entries"]}

    assert "probe.step" in actions("plan=checkout-v2")
    assert actions("plan=checkout-v2") == actions(f"plan={plan.pk}")
    assert actions("step=checkout-v2/deploy-a") == {"probe.step"}
    assert "incident.declared" in actions(f"incident=INC-{incident.pk}")
    assert actions(f"incident=inc-{incident.pk}") == actions(f"incident={incident.pk}")
    missing = client.get("/api/ledger?step=checkout-v2/nope&incident=INC-999", **auth)
    assert missing.status_code == 400
    assert set(missing.json()["fields"]) == {"step", "incident"}


def test_api_ledger_verify__tampered__409_naming_entry(client, role_user):
    from django.db import connection

    from ledger.services import ledger_append

    auth = _ledger_reader(role_user)
    ledger_append(action="a.b", subject_type="t")
    checked = LedgerEntry.objects.count()
    assert client.get("/api/ledger/verify", **auth).json() == {"ok": True, "checked": checked}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE ledger_ledgerentry SET action = 'c.d'")
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = DEFAULT")
    response = client.get("/api/ledger/verify", **auth)
    assert response.status_code == 409
    assert response.json()["first_break"]["seq"] == 1


def test_api_token__role_taken_away__refused_on_the_next_request(client, role_user):
    from django.contrib.auth.models import Group

    user = role_user("viewer")
    _, raw = api_token_create(user=user, name="dash", scopes=["ledger:read"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get("/api/ledger", **auth).status_code == 200
    user.groups.remove(Group.objects.get(name="viewer"))
    response = client.get("/api/ledger", **auth)
    assert (
        response.status_code == 403
        and "lacks permission ledger.view_ledgerentry" in response.json()["error"]
    )


def test_page__tpm_token_scoped_for_metrics__403_and_the_plan_untouched(capsys, role_user):
    from django.test import Client

    from rollouts.models import Plan

    plan = Plan.objects.create(key="idp", name="IdP", owner="platform", status="active")
    raw = _create(capsys, role_user("tpm"), "metrics:write")
    client = Client(enforce_csrf_checks=True)

    response = client.post(
        "/plans/idp/decisions/",
        {"decided": "kill", "believed": "b", "observed": "o", "why": "w"},
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )

    assert response.status_code == 403
    assert "pages need a login" in response.json()["error"]
    assert Plan.objects.get(pk=plan.pk).status == "active"
