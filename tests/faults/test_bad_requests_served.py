"""The served app (uvicorn, its own database, a small connection pool): 100 hostile requests to
every JSON endpoint, then a good one. Each hostile request is refused with a 4xx, none holds on to
a connection, and the good one answers at once (issue 13: 16 requests took the server down)."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.core.test_json_edge import HOSTILE
from tests.serving import ROOT, served

POOL = 4  # a leaked connection per request would exhaust it after four
TOKEN = (
    "from accounts.models import SCOPES; from accounts.services import api_token_create;"
    "from django.contrib.auth import get_user_model;"
    "u = get_user_model().objects.get(username='admin');"
    "print(api_token_create(user=u, name='edge', scopes=sorted(SCOPES))[1])"
)
PATHS = (
    "/api/incidents/",
    "/api/incidents/alertmanager",
    "/api/incidents/1/narration",
    "/api/deploys",
    "/api/metrics/ingest",
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/new-login",
)


def _post(base: str, token: str, path: str, body: bytes) -> tuple[int, float]:
    request = urllib.request.Request(
        base + path,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started


@pytest.fixture
def server(tmp_path, monkeypatch, own_redis):
    monkeypatch.setenv("STEPWISE_DB_POOL_MAX", str(POOL))
    monkeypatch.setenv("STEPWISE_DB_POOL_TIMEOUT", "3")
    with served(tmp_path) as running:
        yield running


@pytest.mark.timeout(240)
def test_hundred_hostile_requests_then_a_good_one__all_refused__the_good_one_answers_at_once(
    server, suite_report
):
    made = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", TOKEN],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    bodies = [HOSTILE[case] for case in sorted(HOSTILE) if case != "empty"]
    statuses: dict[int, int] = {}
    for n in range(100):
        status, _ = _post(server.base, token, PATHS[n % len(PATHS)], bodies[n % len(bodies)])
        statuses[status] = statuses.get(status, 0) + 1
    good = json.dumps({"context": {"targetingKey": "user-1"}}).encode()
    status, took = _post(server.base, token, "/ofrep/v1/evaluate/flags", good)
    suite_report(
        f"served, pool of {POOL}: 100 hostile requests answered {statuses}; then a good one "
        f"{status} in {took * 1000:.0f} ms"
    )
    assert set(statuses) <= {400, 413}, statuses
    assert status == 200 and took < 2.0
