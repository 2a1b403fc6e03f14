import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from stepwise.health import worker_heartbeat_record
from stepwise.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


def test_healthz__anonymous__200(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.fixture
def operator(client, role_user):
    client.force_login(role_user("viewer"))
    return client


def test_readyz__anonymous__what_is_down_without_hostnames_or_errors(client):
    WorkerHeartbeat.objects.create(
        hostname="celery@secret-host", seen_at=timezone.now() - timedelta(minutes=5)
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"] == {"ok": False}
    assert "secret-host" not in response.content.decode()


def test_readyz__no_worker_heartbeat__503_naming_the_worker(operator):
    client = operator
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["worker"] == {
        "ok": False,
        "detail": "no Celery worker has reported a heartbeat yet",
    }


def test_readyz__stale_heartbeat__503_with_age(operator):
    client = operator
    WorkerHeartbeat.objects.create(
        hostname="celery@old", seen_at=timezone.now() - timedelta(minutes=5)
    )
    detail = client.get("/readyz").json()["checks"]["worker"]["detail"]
    assert "celery@old" in detail and "limit 60s" in detail


def test_readyz__fresh_heartbeat__200_ready(client):
    worker_heartbeat_record(hostname="celery@host")
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "ready"


def test_worker_heartbeat_task__run__records_the_worker():
    from stepwise.tasks import worker_heartbeat

    worker_heartbeat.apply()
    assert WorkerHeartbeat.objects.count() == 1


@pytest.mark.redis
def test_readyz__redis_configured__redis_check_pings_it(operator):
    client = operator
    worker_heartbeat_record(hostname="celery@host")
    assert client.get("/readyz").json()["checks"]["redis"] == {"ok": True, "detail": "reachable"}


def test_check_deploy__production_settings__no_warnings(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "STEPWISE_VAR_DIR": str(tmp_path),
        "STEPWISE_ENV": "production",
        "DJANGO_SECRET_KEY": "x" * 20 + "prod-secret-from-the-environment-" + "y" * 20,
        "DJANGO_ALLOWED_HOSTS": "stepwise.example.com",
        "STEPWISE_LEDGER_ANCHOR_KEY": "ledger-key-from-the-environment",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings__secret_key_missing__refuses_to_start():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"} | {
        "STEPWISE_ENV": "production"
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], capture_output=True, text=True, env=env
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_settings__ledger_key_missing__refuses_to_start():
    env = {k: v for k, v in os.environ.items() if k != "STEPWISE_LEDGER_ANCHOR_KEY"} | {
        "STEPWISE_ENV": "production",
        "DJANGO_SECRET_KEY": "x" * 50,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], capture_output=True, text=True, env=env
    )
    assert result.returncode != 0
    assert "STEPWISE_LEDGER_ANCHOR_KEY must be set" in result.stderr


def test_api_post_without_token__401_json_not_the_csrf_page(db):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/incidents/", data="{}", content_type="application/json")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert "send an API token" in response.json()["error"]


def test_api_forbidden_and_unknown__json_with_the_reason(client, role_user, settings):
    from accounts.services import api_token_create

    settings.DEBUG = False
    _, raw = api_token_create(user=role_user("viewer"), name="t", scopes=["ledger:read"])
    missing = client.get("/api/no-such-thing", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert missing.status_code == 404 and "no such endpoint" in missing.json()["error"]


def test_api_unhandled_error__500_json_pages_html(rf):
    from stepwise.views import server_error

    api = server_error(rf.get("/ofrep/v1/evaluate/flags"))
    assert (api.status_code, api["Content-Type"]) == (500, "application/json")
    assert server_error(rf.get("/plans/"))["Content-Type"].startswith("text/html")
