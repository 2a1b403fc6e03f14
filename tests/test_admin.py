"""The Django admin shows the models people inspect, and changes none of them: every change goes
through a service (and the ledger), never around it."""

import pytest
from django.contrib import admin as django_admin
from django.urls import reverse

from accounts.models import ApiToken
from accounts.services import api_token_create
from incidents.models import Incident
from ledger.models import LedgerEntry
from ledger.services import ledger_append
from rollouts.models import Flag, FlagVersion, Plan, Step
from signals.models import SLO, MetricSource
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

INSPECTED = [Plan, Step, Flag, FlagVersion, Incident, MetricSource, SLO, LedgerEntry, ApiToken]


def _url(model: type, view: str, *args: object) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    return client


@pytest.mark.parametrize("model", INSPECTED, ids=lambda m: m.__name__)
def test_admin__inspected_model__changelist_shown_add_refused(admin_client, model):
    assert model in django_admin.site._registry
    assert admin_client.get(_url(model, "changelist")).status_code == 200
    assert admin_client.get(_url(model, "add")).status_code == 403
    assert admin_client.post(_url(model, "add"), {}).status_code == 403
    assert model.objects.count() == 0


@pytest.mark.parametrize("kind", ["ledger entry", "api token", "plan"])
def test_admin__existing_row__shown_read_only_change_and_delete_refused(admin_client, kind):
    if kind == "ledger entry":
        row = ledger_append(action="note.recorded", subject_type="program", payload={"a": 1})
    elif kind == "api token":
        row, _ = api_token_create(user=UserFactory(), name="ci", scopes=["ledger:read"])
    else:
        row = Plan.objects.create(key="idp", name="IdP", owner="platform", status="active")
    model = type(row)
    before = list(model.objects.values())

    page = admin_client.get(_url(model, "change", row.pk))
    change = admin_client.post(_url(model, "change", row.pk), {"name": "x", "action": "x"})
    delete = admin_client.post(_url(model, "delete", row.pk), {"post": "yes"})
    admin_client.post(  # no action exists to run
        _url(model, "changelist"),
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )

    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert change.status_code == 403 and delete.status_code == 403
    assert list(model.objects.values()) == before


def test_admin__api_token_and_metric_source__secrets_never_shown(admin_client):
    token, raw = api_token_create(user=UserFactory(), name="ci", scopes=["ledger:read"])
    source = MetricSource.objects.create(
        name="prom", kind="prometheus", url="http://prom:9090", auth_header="Bearer hunter2"
    )

    token_page = admin_client.get(_url(ApiToken, "change", token.pk)).content.decode()
    source_page = admin_client.get(_url(MetricSource, "change", source.pk)).content.decode()

    assert token.prefix in token_page
    assert token.digest not in token_page and raw not in token_page
    assert "prom:9090" in source_page and "hunter2" not in source_page


def test_admin__human_role_user__no_way_in(client):
    client.force_login(UserFactory(role="tpm"))
    response = client.get(_url(LedgerEntry, "changelist"))
    assert response.status_code == 302 and "/admin/login/" in response.url
