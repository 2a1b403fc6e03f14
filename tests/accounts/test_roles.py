import pytest
from django.contrib.auth.models import Group

from accounts.roles import ROLES, roles_sync

pytestmark = pytest.mark.django_db


def _perms(role: str) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Group.objects.get(name=role).permissions.select_related("content_type")
    }


def test_roles_sync__after_migrate__four_groups_read_everything():
    roles_sync()
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLES)
    for role in ROLES:
        assert "ledger.view_ledgerentry" in _perms(role)


def test_roles_sync__viewer__has_no_write_permission():
    roles_sync()
    assert all(p.split(".")[1].startswith("view_") for p in _perms("viewer"))
    assert "ledger.record_entry" in _perms("responder")
    assert "ledger.record_entry" in _perms("tpm") and "ledger.record_entry" in _perms("commander")


def test_roles_sync__run_twice__idempotent():
    roles_sync()
    before = {r: _perms(r) for r in ROLES}
    roles_sync()
    assert {r: _perms(r) for r in ROLES} == before


def test_login__wrong_password__form_error_not_500(client, role_user):
    user = role_user("viewer")
    response = client.post("/login/", {"username": user.username, "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content


def test_login__right_password__redirected_home_then_logout_requires_post(client, role_user):
    from tests.factories import PASSWORD

    user = role_user("tpm")
    response = client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/ledger/").status_code == 302


@pytest.mark.parametrize(
    "path", ["/", "/plans/identity/", "/incidents/", "/flags/", "/slos/", "/decisions/", "/ledger/"]
)
def test_pages__anonymous__redirected_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response.url.startswith("/login/")


def test_pages__user_without_role__ledger_forbidden(client, role_user):
    client.force_login(role_user(None))
    assert client.get("/ledger/").status_code == 403
