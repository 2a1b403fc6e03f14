"""PostgreSQL refusing every connection for 10 s under the real served stack (uvicorn, Celery
worker and beat, its own database), with a breaching sample waiting to be judged: the web answers
503 with Retry-After while it lasts and is ready again within 5 s after; the worker, which had no
connection left, acts on the breach exactly once within 5 s of the database coming back.
(issue 13: a 10 s outage once disabled the worker for 26 minutes.)"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest

from tests.browser.test_verification import PREPARE_LOGIN_5
from tests.rollouts.test_verification_worker import _ingest
from tests.serving import ROOT, served

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
OUTAGE = 10.0
START_LOGIN_5 = """
from rollouts.services.steps import step_transition
step_transition(step_id=step("login-5").pk, action="start", actor=tpm, reason="fault test")
"""
REVERTS = """
import json
from rollouts.models import Flag, Step
flag = Flag.objects.select_related("current").get(key="new-login")
print(json.dumps({
    "percentage": float(flag.current.rollout_percentage),
    "versions": flag.versions.count(),
    "status": Step.objects.get(key="login-5").status,
}))
"""


def _shell(env: dict[str, str], code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _admin(env: dict[str, str]) -> tuple[str, str]:
    url = urlparse(env["DATABASE_URL"])
    return urlunparse(url._replace(path="/postgres")), url.path.lstrip("/")


def _refuse_connections(env: dict[str, str], refuse: bool) -> None:
    admin, database = _admin(env)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(not refuse).lower()}'
        )
        if refuse:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [database],
            )


def _worker_group(serve_pid: int) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == serve_pid and b"worker" in argv:
            return os.getpgid(int(proc.name))
    raise LookupError("no Celery worker under serve")


def _http(
    url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, Message, str]:
    """GET, or POST when there is `data`."""
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


@pytest.mark.timeout(300)
def test_postgres_refusing_connections_10s__web_and_worker_recover__breach_acted_on_once(
    tmp_path, own_redis, suite_report
):
    with served(tmp_path) as server:
        env = server.env
        token = _shell(env, PREPARE_LOGIN_5 + START_LOGIN_5)["token"]
        before = _shell(env, REVERTS)
        assert before["status"] == "running" and before["percentage"] == 5, before

        # The worker is held while the breach arrives, so the outage meets it unjudged.
        group = _worker_group(server.process.pid)
        os.killpg(group, signal.SIGSTOP)
        try:
            assert _ingest(server.base, token, 0.05) == {"written": 1}
            _refuse_connections(env, True)
        finally:
            os.killpg(group, signal.SIGCONT)
        try:
            time.sleep(1.0)
            status, headers, body = _http(
                server.base + "/ofrep/v1/evaluate/flags/new-login",
                {"Authorization": "Bearer sw_not_checked_while_the_database_is_down"},
                data=b"{}",
            )
            assert status == 503 and headers.get("Retry-After") == "5", (status, body[:300])
            time.sleep(OUTAGE - 1.0)
        finally:
            _refuse_connections(env, False)
        back = time.monotonic()

        while True:
            status, _, body = _http(server.base + "/readyz")
            if json.loads(body)["checks"]["database"]["ok"]:
                break
            assert time.monotonic() - back < 5, body
            time.sleep(0.2)
        web_ready = time.monotonic() - back

        deadline = back + 30
        while True:
            state = _shell(env, REVERTS)
            if state["percentage"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        acted = time.monotonic() - back
        suite_report(
            f"PostgreSQL refused connections {OUTAGE:.0f} s: 503 + Retry-After during it; "
            f"web ready {web_ready:.1f} s after; breach acted on once {acted:.1f} s after "
            f"(upper bound: includes a manage.py round trip)"
        )
        assert state["percentage"] == 0 and state["status"] == "failed", state
        assert state["versions"] == before["versions"] + 1, (before, state)  # acted on once
        # The aim is 5 s; the bound allows for a loaded CI machine (the run prints the figure).
        assert acted < 10, "acted on more than 10 s after the database came back"


KILLS = int(os.environ.get("STEPWISE_FAULT_KILLS", "2"))


def _restarted(log: Path, seen: int) -> bool:
    return log.read_text().count("restarted it") > seen


@pytest.mark.timeout(120 + 60 * KILLS)
def test_worker_killed_around_a_breach__restarted_and_the_breach_acted_on_once(
    tmp_path, own_redis, suite_report
):
    """`kill -9` of the worker (its whole process group) while a breaching sample waits for it,
    KILLS times (`make faults` runs 10): serve restarts it and the breach is acted on exactly once."""
    timings = []
    with served(tmp_path) as server:
        env = server.env
        for round_ in range(KILLS):
            token = _shell(env, PREPARE_LOGIN_5 + START_LOGIN_5)["token"]
            before = _shell(env, REVERTS)
            assert before["status"] == "running" and before["percentage"] == 5, before
            group = _worker_group(server.process.pid)
            restarts = server.log.read_text().count("restarted it")
            ready = server.log.read_text().count(" ready.")
            os.killpg(group, signal.SIGSTOP)
            assert _ingest(server.base, token, 0.05) == {"written": 1}
            os.killpg(group, signal.SIGKILL)
            while not _restarted(server.log, restarts):
                time.sleep(0.1)
            while server.log.read_text().count(" ready.") <= ready:  # the new worker is up
                time.sleep(0.1)
            back = time.monotonic()
            deadline = back + 30
            while True:
                state = _shell(env, REVERTS)
                if state["percentage"] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            timings.append(time.monotonic() - back)
            assert state["percentage"] == 0 and state["status"] == "failed", (round_, state)
            assert state["versions"] == before["versions"] + 1, (round_, before, state)
    suite_report(
        f"{KILLS} kill -9 of the worker around a breach: each acted on once; from the new "
        f"worker ready to the action {', '.join(f'{t:.1f}' for t in timings)} s (upper "
        "bounds: each includes a manage.py round trip)"
    )
    assert max(timings) < 10  # the aim is 5 s; the run prints the figures
