"""Machine roles and the tokens integrations use: exactly the permissions and scopes each API
needs, issued to a service user per integration."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from accounts import services as account_services
from accounts.models import ApiToken
from accounts.roles import MACHINE_ROLES, ROLES, roles_sync, user_roles
from accounts.services import TokenRefused, api_token_revoke, integration_token_create
from core.errors import NotFound
from core.http import access_refusal
from ledger.models import LedgerEntry
from rollouts import ofrep
from rollouts.flag_config import config_cache_clear
from signals.models import Sample
from tests.asgi_client import AsgiClient
from tests.core.test_api_contract import _django_api_routes
from tests.factories import UserFactory
from tests.incidents.test_alertmanager import payload as alertmanager_payload
from tests.rollouts.flag_factories import flag_make

pytestmark = pytest.mark.django_db

# What each integration role's token reaches, of every API route. incidents:write is one scope for
# every incident endpoint, so Alertmanager's token may also declare incidents and narrate.
REACHES = {
    "exporter": {"/api/metrics/ingest"},
    "alertmanager": {
        "/api/incidents/alertmanager",
        "/api/incidents/",
        "/api/incidents/{incident_id}/narration",
    },
    "deployer": {"/api/deploys"},
    "scraper": set(),  # /metrics only: checked in tests/test_metrics.py
    "flag-client": {"/ofrep/v1/evaluate/flags"},
}


def _api_guards() -> dict[str, tuple[str, str]]:
    """(scope, permission) of every API route, as its view declares them."""
    guards = {
        path: (view.api_access.scope, view.api_access.permission)
        for path, view in _django_api_routes().items()
        if hasattr(view, "api_access")  # /api/schema is public
    }
    guards["/ofrep/v1/evaluate/flags"] = (ofrep.SCOPE, ofrep.PERMISSION)
    return guards


@pytest.fixture(autouse=True)
def _roles() -> None:
    roles_sync()


@pytest.fixture
def admin():
    return UserFactory(is_superuser=True, is_staff=True)


def _perms(role: str) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Group.objects.get(name=role).permissions.select_related("content_type")
    }


def test_roles_sync__machine_roles__exactly_the_permissions_their_api_needs():
    assert {role: _perms(role) for role in MACHINE_ROLES} == {
        "exporter": {"signals.add_sample"},
        "alertmanager": {"incidents.narrate"},
        "deployer": {"rollouts.view_step"},
        "scraper": set(),
        "flag-client": {"rollouts.view_flag"},
    }
    assert {role: MACHINE_ROLES[role].scopes for role in MACHINE_ROLES} == {
        "exporter": ("metrics:write",),
        "alertmanager": ("incidents:write",),
        "deployer": ("deploys:write",),
        "scraper": ("metrics:read",),
        "flag-client": ("flags:evaluate",),
    }


def test_roles__machine_roles__not_among_the_human_roles():
    assert not set(MACHINE_ROLES) & set(ROLES)
    service_user = UserFactory(role="exporter")
    assert user_roles(service_user) == []


def test_integration_token_create__exporter__service_user_holds_only_the_role_and_token_its_scope(
    admin,
):
    token, raw = integration_token_create(
        role="exporter", name="node-exporter-eu", expires_in_days=30, actor=admin
    )

    user = token.user
    assert user.username == "svc-exporter-node-exporter-eu"
    assert [g.name for g in user.groups.all()] == ["exporter"]
    assert not user.has_usable_password() and not user.is_staff and not user.is_superuser
    assert token.scopes == ["metrics:write"] and token.expires_at is not None
    assert raw.startswith("sw_") and raw not in str(list(ApiToken.objects.values()))
    assert list(
        LedgerEntry.objects.order_by("seq").values_list("action", "actor_label", "payload__role")
    ) == [
        ("service_user.created", admin.username, "exporter"),
        ("api_token.created", admin.username, None),
    ]


def test_integration_token_create__existing_service_user__reused_and_same_name_refused(admin):
    first, _ = integration_token_create(role="deployer", name="ci", actor=admin)
    api_token_revoke(token_id=first.pk, actor=admin, reason="rotating")

    with pytest.raises(TokenRefused, match="already has a token named 'ci'"):
        integration_token_create(role="deployer", name="ci", actor=admin)
    other, _ = integration_token_create(role="flag-client", name="ci", actor=admin)

    assert other.user != first.user
    assert get_user_model().objects.filter(username__startswith="svc-").count() == 2


@pytest.mark.parametrize(
    ("role", "why"),
    [
        ("tpm", "'tpm' is not an integration role"),
        ("pusher", "'pusher' is not an integration role"),
        ("", "'' is not an integration role"),
    ],
)
def test_integration_token_create__unknown_or_human_role__refused_and_nothing_written(
    admin, role, why
):
    with pytest.raises(TokenRefused, match=why):
        integration_token_create(role=role, name="x", actor=admin)
    assert not ApiToken.objects.exists()
    assert not get_user_model().objects.filter(username__startswith="svc-").exists()
    assert not LedgerEntry.objects.exists()


def test_integration_token_create__retired_role__refused_though_its_group_remains(
    admin, monkeypatch
):
    monkeypatch.delitem(account_services.MACHINE_ROLES, "deployer")
    assert Group.objects.filter(name="deployer").exists()
    with pytest.raises(TokenRefused, match="'deployer' is not an integration role"):
        integration_token_create(role="deployer", name="ci", actor=admin)
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("name", ["", "Node Exporter", "../etc", "-x", "x" * 64])
def test_integration_token_create__bad_name__refused_and_nothing_written(admin, name):
    with pytest.raises(TokenRefused, match="the name must be"):
        integration_token_create(role="exporter", name=name, actor=admin)
    assert not ApiToken.objects.exists() and not LedgerEntry.objects.exists()


def test_integration_token_create__refused_after_the_service_user__no_service_user_left(admin):
    with pytest.raises(TokenRefused, match="expiry must be a positive number of days"):
        integration_token_create(role="exporter", name="eu", expires_in_days=0, actor=admin)
    assert not get_user_model().objects.filter(username="svc-exporter-eu").exists()
    assert not LedgerEntry.objects.exists()


def test_integration_token_create__name_of_a_person__refused(admin):
    UserFactory(username="svc-exporter-eu")  # someone who signs in with a password
    with pytest.raises(TokenRefused, match="not an active service user"):
        integration_token_create(role="exporter", name="eu", actor=admin)
    assert not ApiToken.objects.exists()


def test_api_token_revoke__with_reason__ledgered_with_it(admin):
    token, _ = integration_token_create(role="exporter", name="eu", actor=admin)
    api_token_revoke(token_id=token.pk, actor=admin, reason="host decommissioned")
    entry = LedgerEntry.objects.get(action="api_token.revoked")
    assert entry.payload["reason"] == "host decommissioned" and entry.actor == admin


def test_api_token_revoke__unknown_id__not_found_not_a_crash():
    with pytest.raises(NotFound, match="no API token with id 999"):
        api_token_revoke(token_id=999)


@pytest.mark.parametrize("role", list(MACHINE_ROLES))
def test_machine_role_token__every_api_route__reaches_only_its_own(admin, role):
    token, _ = integration_token_create(role=role, name="probe", actor=admin)
    user = get_user_model().objects.get(pk=token.user_id)  # fresh: no permission cache
    reached = {
        path
        for path, (scope, permission) in _api_guards().items()
        if access_refusal(user, token, scope=scope, permission=permission) is None
    }
    assert reached == REACHES[role]


def test_scraper_token__metrics__scraped_from_any_address(client, admin, settings):
    settings.METRICS_ALLOW_NETWORKS = []  # not from an allowed address: the token alone
    _, raw = integration_token_create(role="scraper", name="prometheus", actor=admin)
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    assert b"stepwise_ledger_appends_total" in response.content


def test_exporter_token__metrics_ingest__samples_stored_end_to_end(client, admin):
    _, raw = integration_token_create(role="exporter", name="eu", actor=admin)
    body = {"samples": [{"name": "up", "labels": {"job": "node"}, "value": 1, "timestamp": 1.7e9}]}

    response = client.post(
        "/api/metrics/ingest",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )

    assert response.status_code == 200, response.content
    assert response.json() == {"written": 1}
    assert Sample.objects.get().name == "up"


def test_exporter_token__another_api__403_naming_the_missing_scope(client, admin):
    _, raw = integration_token_create(role="exporter", name="eu", actor=admin)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

    ledger = client.get("/api/ledger", **auth)
    deploy = client.post(
        "/api/deploys",
        json.dumps({"service": "api", "version": "1.2", "target": "eu-west"}),
        content_type="application/json",
        **auth,
    )

    assert ledger.status_code == 403 and "'ledger:read' scope" in ledger.json()["error"]
    assert deploy.status_code == 403 and "'deploys:write' scope" in deploy.json()["error"]


def test_deployer_token__deploy_webhook__accepted(client, admin):
    _, raw = integration_token_create(role="deployer", name="ci", actor=admin)
    response = client.post(
        "/api/deploys",
        json.dumps({"service": "api", "version": "1.2", "target": "eu-west"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 202, response.content


def test_alertmanager_token__webhook__incident_opened(client, admin):
    _, raw = integration_token_create(role="alertmanager", name="prod", actor=admin)
    response = client.post(
        "/api/incidents/alertmanager",
        json.dumps(alertmanager_payload()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 202, response.content
    assert len(response.json()["incidents_opened"]) == 1


def test_flag_client_token__ofrep__flag_evaluated(admin):
    config_cache_clear()
    flag_make("new-checkout", enabled=True, rollout_percentage=100)
    _, raw = integration_token_create(role="flag-client", name="web", actor=admin)
    response = AsgiClient(ofrep.ofrep_app).post(
        "/ofrep/v1/evaluate/flags/new-checkout",
        json.dumps({"context": {"targetingKey": "u1"}}),
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    config_cache_clear()
    assert response.status_code == 200, response.content
    assert response.json()["value"] is True


def test_create_api_token__role__service_user_token_printed_once_ledgered_as_manage_py(capsys):
    call_command("create_api_token", "--role", "exporter", "--name", "eu")

    raw = capsys.readouterr().out.strip()
    token = ApiToken.objects.select_related("user").get()
    assert raw.startswith("sw_") and token.user.username == "svc-exporter-eu"
    assert token.scopes == ["metrics:write"]
    assert set(LedgerEntry.objects.values_list("actor_label", flat=True)) == {"manage.py"}


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--role", "tpm"], "'tpm' is not an integration role"),
        (["--role", "exporter", "--scope", "ledger:read"], "drop --scope"),
        (["--role", "exporter", "--user", "admin"], "either --role"),
        ([], "either --role"),
    ],
)
def test_create_api_token__role_misused__clear_error_nothing_created(args, why):
    with pytest.raises(CommandError, match=why):
        call_command("create_api_token", "--name", "eu", *args)
    assert not ApiToken.objects.exists()
