"""/integrations/: the admin creates a token for an integration role, sees it once, lists and
revokes tokens. Everyone else is refused."""

import hashlib

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiToken
from accounts.roles import roles_sync
from accounts.services import api_token_revoke, integration_token_create
from ledger.models import LedgerEntry
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
PAGE = "/integrations/"
CREATE = "/integrations/tokens"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _roles() -> None:
    roles_sync()


@pytest.fixture
def admin():
    return UserFactory(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def _revoke_url(token: ApiToken) -> str:
    return f"/integrations/tokens/{token.pk}/revoke"


def test_integrations_page__admin__lists_tokens_without_secrets_and_nav_links_it(
    admin_client, admin
):
    token, raw = integration_token_create(role="exporter", name="node-eu", actor=admin)

    page = admin_client.get(PAGE).content.decode()

    row = page[page.index(f'id="token-{token.pk}"') :]
    row = row[: row.index("</tr>")]
    for shown in ("node-eu", "exporter", "svc-exporter-node-eu", token.prefix, "never"):
        assert shown in row
    assert raw not in page and token.digest not in page
    assert 'data-testid="nav-integrations"' in page


@pytest.mark.parametrize(
    "user",
    [
        pytest.param(lambda: UserFactory(role="tpm"), id="tpm"),
        pytest.param(lambda: UserFactory(role="commander", is_staff=True), id="staff-commander"),
    ],
)
def test_integrations_page__not_the_admin__403_nothing_created_no_nav_link(client, user):
    client.force_login(user())

    page = client.get(PAGE)
    created = client.post(CREATE, {"name": "x", "role": "exporter"}, **HTMX)

    assert page.status_code == 403 and created.status_code == 403
    assert not ApiToken.objects.exists()
    assert b"nav-integrations" not in client.get("/ledger/").content


def test_integration_token_new__htmx__secret_shown_once_beside_the_form_and_row_added(
    admin_client,
):
    response = admin_client.post(
        CREATE, {"name": "alerts-prod", "role": "alertmanager", "expires_in_days": "90"}, **HTMX
    )

    body = response.content.decode()
    token = ApiToken.objects.get()
    secret = body.split('data-testid="token-secret"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert body.startswith('<section id="token-create"')
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert token.scopes == ["incidents:write"] and token.expires_at is not None
    assert (
        'id="token-table" class="card" aria-labelledby="token-table-title" hx-swap-oob="true"'
        in body
    )
    assert f'id="token-{token.pk}"' in body
    assert secret not in admin_client.get(PAGE).content.decode()


def test_integration_token_new__plain_post__full_page_with_the_secret(admin_client):
    response = admin_client.post(CREATE, {"name": "web", "role": "flag-client"})
    assert response.status_code == 200
    assert b'data-testid="token-created"' in response.content
    assert b"<h1>Integrations</h1>" in response.content
    assert ApiToken.objects.get().scopes == ["flags:evaluate"]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"name": "", "role": "exporter"}, "name: This field is required."),
        ({"name": "eu", "role": "tpm"}, "&#x27;tpm&#x27; is not an integration role"),
        ({"name": "eu", "role": "retired-bot"}, "&#x27;retired-bot&#x27; is not an integration"),
        ({"name": "Bad Name", "role": "exporter"}, "the name must be"),
        ({"name": "eu", "role": "exporter", "expires_in_days": "0"}, "expires_in_days:"),
        ({"name": "eu", "role": "exporter", "expires_in_days": "soon"}, "expires_in_days:"),
    ],
)
def test_integration_token_new__bad_input__400_reason_beside_the_form_input_kept(
    admin_client, fields, why
):
    response = admin_client.post(CREATE, fields, **HTMX)

    body = response.content.decode()
    assert response.status_code == 400
    assert body.startswith('<section id="token-create"')
    assert 'data-testid="action-error"' in body and why in body
    assert f'value="{fields["name"]}"' in body or not fields["name"]
    assert "token-created" not in body and "hx-swap-oob" not in body
    assert not ApiToken.objects.exists()


def test_integration_token_new__plain_post_refused__400_full_page_reason_in_the_form(admin_client):
    response = admin_client.post(CREATE, {"name": "eu", "role": "retired-bot"})

    body = response.content.decode()
    form = body[body.index('data-testid="token-create-form"') :].split("</form>")[0]
    assert response.status_code == 400
    assert "<h1>Integrations</h1>" in body
    assert "is not an integration role" in form
    assert not ApiToken.objects.exists()


def test_integration_token_revoke__with_reason__row_shows_revoked_ledgered_token_refused(
    admin_client, admin
):
    token, raw = integration_token_create(role="exporter", name="eu", actor=admin)

    response = admin_client.post(_revoke_url(token), {"reason": "host retired"}, **HTMX)

    body = response.content.decode()
    token.refresh_from_db()
    assert response.status_code == 200
    assert body.startswith(f'<tr id="token-{token.pk}"')
    assert token.revoked_at is not None and 'data-testid="action-ok"' in body
    assert "host retired" in body and "by root" in body
    assert ">Revoke</button>" not in body
    entry = LedgerEntry.objects.get(action="api_token.revoked")
    assert entry.payload["reason"] == "host retired" and entry.actor == admin
    assert "host retired" in admin_client.get(PAGE).content.decode()
    ingest = admin_client.post(
        "/api/metrics/ingest",
        "{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert ingest.status_code == 401


def test_integration_token_revoke__no_reason__400_in_the_row_token_still_usable(
    admin_client, admin
):
    token, _ = integration_token_create(role="exporter", name="eu", actor=admin)

    response = admin_client.post(_revoke_url(token), {"reason": "  "}, **HTMX)

    token.refresh_from_db()
    assert response.status_code == 400
    assert response.content.decode().startswith(f'<tr id="token-{token.pk}"')
    assert b"reason: This field is required." in response.content
    assert token.revoked_at is None
    assert not LedgerEntry.objects.filter(action="api_token.revoked").exists()


def test_integration_token_revoke__unknown_token__404_not_500(admin_client):
    assert (
        admin_client.post("/integrations/tokens/999/revoke", {"reason": "x"}, **HTMX).status_code
        == 404
    )
    plain = admin_client.post("/integrations/tokens/999/revoke", {"reason": "x"}, follow=True)
    assert b"no API token with id 999" in plain.content


def test_integration_token_revoke__not_the_admin__403_token_untouched(client, admin):
    token, _ = integration_token_create(role="exporter", name="eu", actor=admin)
    client.force_login(UserFactory(role="commander"))
    assert client.post(_revoke_url(token), {"reason": "x"}, **HTMX).status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None


def test_integrations_page__more_tokens__same_number_of_queries(admin_client, admin):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(PAGE).status_code == 200
        return len(captured)

    def add(name: str) -> None:
        token, _ = integration_token_create(role="exporter", name=name, actor=admin)
        api_token_revoke(token_id=token.pk, actor=admin, reason="r")

    add("a")
    few = queries()
    for name in ("b", "c", "d"):
        add(name)
    assert queries() == few
