"""Sign-in throttling, the change-password page, and no demo passwords in production."""

import os
import subprocess
import sys

import pytest
from django.core.cache import cache

from accounts.checks import demo_passwords_check
from accounts.signin import DEMO_PASSWORD, LIMITS
from ledger.models import LedgerEntry

pytestmark = pytest.mark.django_db
PER_ACCOUNT, PER_ADDRESS = LIMITS[0].failures, LIMITS[1].failures


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def _sign_in(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_sign_in__too_many_wrong_passwords__locked_even_with_the_right_one_and_recorded_once(
    client, role_user
):
    role_user("tpm", username="tara", password="a-long-real-password")
    for _ in range(PER_ACCOUNT + 3):
        assert _sign_in(client, "tara", "guess").status_code == 200

    refused = _sign_in(client, "tara", "a-long-real-password")

    assert refused.status_code == 200 and "_auth_user_id" not in client.session
    assert "Too many failed sign-ins for this account: try again in 15 minutes" in (
        refused.content.decode()
    )
    [locked] = LedgerEntry.objects.filter(action="auth.locked_out")
    assert locked.payload["username"] == "tara" and locked.payload["kind"] == "account"
    assert locked.payload["failures"] == PER_ACCOUNT


def test_sign_in__another_account_while_one_is_locked__signs_in(client, role_user):
    role_user("tpm", username="tara", password="a-long-real-password")
    role_user("viewer", username="vic", password="another-real-password")
    for _ in range(PER_ACCOUNT):
        _sign_in(client, "tara", "guess")

    assert _sign_in(client, "vic", "another-real-password", address="10.0.0.2").status_code == 302


def test_sign_in__one_address_spraying_many_accounts__address_locked(client, role_user):
    role_user("viewer", username="vic", password="another-real-password")
    for n in range(PER_ADDRESS):
        _sign_in(client, f"user{n}", "guess", address="10.9.9.9")

    refused = _sign_in(client, "vic", "another-real-password", address="10.9.9.9")

    assert "Too many failed sign-ins for your address" in refused.content.decode()
    assert LedgerEntry.objects.filter(action="auth.locked_out", payload__kind="address").exists()
    assert _sign_in(client, "vic", "another-real-password", address="10.0.0.3").status_code == 302


def test_sign_in__the_failure_that_locks__says_so_at_once(client, role_user):
    role_user("tpm", username="tara", password="a-long-real-password")
    for _ in range(PER_ACCOUNT - 1):
        assert "Too many" not in _sign_in(client, "tara", "guess").content.decode()
    assert "Too many failed sign-ins" in _sign_in(client, "tara", "guess").content.decode()


def test_sign_in__right_password_after_a_few_wrong__signs_in_and_resets_the_count(
    client, role_user
):
    role_user("tpm", username="tara", password="a-long-real-password")
    for _ in range(PER_ACCOUNT - 1):
        _sign_in(client, "tara", "guess")
    assert _sign_in(client, "tara", "a-long-real-password").status_code == 302
    client.logout()
    for _ in range(PER_ACCOUNT - 1):
        _sign_in(client, "tara", "guess")
    assert _sign_in(client, "tara", "a-long-real-password").status_code == 302


def test_password_change__any_role__changed_recorded_and_the_session_kept(client, role_user):
    user = role_user("viewer", username="vic", password="another-real-password")
    assert client.get("/password/").status_code == 302  # login first
    client.force_login(user)
    page = client.get("/password/")
    assert page.status_code == 200 and 'name="new_password1"' in page.content.decode()

    changed = client.post(
        "/password/",
        {
            "old_password": "another-real-password",
            "new_password1": "correct horse battery staple",
            "new_password2": "correct horse battery staple",
        },
    )

    assert changed.status_code == 302
    user.refresh_from_db()
    assert user.check_password("correct horse battery staple")
    assert client.get("/password/").status_code == 200  # still signed in
    assert LedgerEntry.objects.filter(action="auth.password_changed", actor=user.pk).count() == 1


def test_password_change__wrong_old_password__error_beside_the_field(client, role_user):
    client.force_login(role_user("viewer", username="vic", password="another-real-password"))
    page = client.post(
        "/password/",
        {"old_password": "nope", "new_password1": "x-y-z-w-1", "new_password2": "x-y-z-w-1"},
    )
    assert page.status_code == 200
    assert 'data-testid="error-old_password"' in page.content.decode()


def test_demo_password_check__production_with_a_demo_password__error(settings, role_user):
    role_user("tpm", username="tpm", password=DEMO_PASSWORD)
    role_user("viewer", username="someone", password=DEMO_PASSWORD)  # not checked: not staff
    settings.PRODUCTION = True
    [problem] = demo_passwords_check()
    assert problem.id == "stepwise.E001" and "tpm" in problem.msg and "someone" not in problem.msg
    settings.PRODUCTION = False
    assert demo_passwords_check() == []


# uvicorn --workers imports the application inside its event loop: a check that touches the
# database there must not trip Django's async-safety guard (it stopped the production server).
IMPORT_AS_UVICORN_DOES = (
    "import asyncio\nasync def load():\n    import stepwise.asgi\nasyncio.run(load())"
)


def _production_env(tmp_path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "STEPWISE_VAR_DIR": str(tmp_path),
        "STEPWISE_ENV": "production",
        "DJANGO_SECRET_KEY": "x" * 50,
        "DJANGO_ALLOWED_HOSTS": "stepwise.example.com",
        "STEPWISE_LEDGER_ANCHOR_KEY": "ledger-key-from-the-environment",
    }


@pytest.mark.django_db(transaction=True)
def test_production__seed_demo_refused_and_a_demo_password_stops_the_server(tmp_path):
    env = _production_env(tmp_path)
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert run("manage.py", "migrate", "-v0").returncode == 0

    seeded = run("manage.py", "seed_demo")
    assert seeded.returncode != 0 and "does not run with STEPWISE_ENV=production" in seeded.stderr
    assert run("-c", IMPORT_AS_UVICORN_DOES).returncode == 0

    made = run(
        "manage.py",
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_superuser('admin', 'a@example.invalid', '{DEMO_PASSWORD}')",
    )
    assert made.returncode == 0, made.stderr
    served = run("-c", IMPORT_AS_UVICORN_DOES)
    assert served.returncode != 0
    assert "account(s) admin still have the published demo password" in served.stderr
    assert "stepwise.E001" in run("manage.py", "check").stderr


def test_sign_in__session_planted_before__replaced_with_a_new_key(client, role_user):
    """Session fixation: a session id planted in the browser before sign-in must not be the one
    that is signed in."""
    from django.contrib.sessions.backends.db import SessionStore

    role_user("tpm", username="tara", password="a-long-real-password")
    planted = SessionStore()
    planted["planted"] = True
    planted.create()
    client.cookies["sessionid"] = planted.session_key

    assert _sign_in(client, "tara", "a-long-real-password").status_code == 302

    signed_in = client.cookies["sessionid"].value
    assert signed_in != planted.session_key
    assert not SessionStore().exists(planted.session_key)
    assert "planted" not in SessionStore(session_key=signed_in).load()
