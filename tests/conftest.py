"""Which real services this run has. Under CI (STEPWISE_REQUIRE_SERVICES=1) a missing PostgreSQL,
Redis, Chromium or Prometheus fails the run at once; on a laptop the tests that need them are
skipped, and the reason is printed in the summary (pytest -ra)."""

import os
import shutil
import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings

REQUIRE_SERVICES = os.environ.get("STEPWISE_REQUIRE_SERVICES") == "1"
CHROMIUM = "/usr/bin/chromium"
PROMETHEUS = "/usr/bin/prometheus"


def _reachable(url: str, default_port: int) -> str | None:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=3
        ):
            return None
    except OSError as exc:
        return f"{parsed.hostname}:{parsed.port or default_port} unreachable ({exc})"


def _postgres_problem() -> str | None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "PostgreSQL not configured: set DATABASE_URL=postgres://user@host:5432/db to run"
    return _reachable(os.environ["DATABASE_URL"], 5432)


def _redis_problem() -> str | None:
    if not settings.REDIS_URL:
        return "Redis not configured: set REDIS_URL=redis://host:6379/0 to run"
    return _reachable(settings.REDIS_URL, 6379)


def _chromium_problem() -> str | None:
    return (
        None
        if shutil.which(CHROMIUM)
        else f"{CHROMIUM} not found: install Debian's chromium to run browser tests"
    )


def _prometheus_problem() -> str | None:
    return (
        None
        if shutil.which(PROMETHEUS)
        else f"{PROMETHEUS} not found: install Debian's prometheus to run the Prometheus client tests"
    )


PROBLEMS = {
    "postgres": _postgres_problem(),
    "redis": _redis_problem(),
    "browser": _chromium_problem(),
    "prometheus": _prometheus_problem(),
}


def pytest_sessionstart(session: pytest.Session) -> None:
    if REQUIRE_SERVICES:
        missing = {name: why for name, why in PROBLEMS.items() if why}
        if missing:
            pytest.exit(
                "STEPWISE_REQUIRE_SERVICES=1 but: "
                + "; ".join(f"{k}: {v}" for k, v in missing.items()),
                returncode=3,
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"stepwise services: {name} -> {'ok' if not why else 'SKIPPED: ' + why}"
        for name, why in PROBLEMS.items()
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name, why in PROBLEMS.items():
            if why and item.get_closest_marker(name):
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def role_user(db):
    """`role_user("tpm")` -> a user in that role group."""
    from tests.factories import UserFactory

    def make(role: str | None, **kwargs):
        return UserFactory(role=role, **kwargs)

    return make


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    # Consumers reach the database from a thread pool; persistent connections there would keep
    # PostgreSQL from dropping the test database at the end of the run.
    from django.db import connections

    connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def _ledger_anchor_of_this_test(settings, tmp_path):
    """Each test's ledger starts empty, so each keeps its own anchor (file and Redis key): a
    committed chain of one test must not be the anchor another test's chain is checked against."""
    import uuid

    settings.LEDGER_ANCHOR_FILE = tmp_path / "ledger-anchor.json"
    settings.LEDGER_ANCHOR_CACHE_KEY = f"ledger:anchor:test-{uuid.uuid4().hex}"


# What the fault and fuzz suites measured, printed at the end of every run (CI included), not
# only under `-s`: `suite_report("…")` from a test adds a line.
_SUITE_REPORT: list[str] = []


class Pushes:
    """Frames sent to browsers during a test, in order: `(stream, seq, html)`."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, int, str]] = []

    def on(self, stream: str) -> list[tuple[int, str]]:
        return [(seq, html) for name, seq, html in self.frames if name == stream]

    def last_html(self, stream: str) -> str:
        frames = self.on(stream)
        assert frames, f"nothing was pushed on {stream}"
        return frames[-1][1]


@pytest.fixture
def pushes(monkeypatch, django_capture_on_commit_callbacks):
    """Run each transaction's after-commit pushes at the end of the `with pushes.commit():`
    block (the test's own transaction never commits) and record what was sent."""
    import contextlib

    from live import broadcast

    recorded = Pushes()
    send = broadcast._send

    def record(*, stream: str, seq: int, html: str) -> None:
        recorded.frames.append((stream, seq, html))
        send(stream=stream, seq=seq, html=html)

    monkeypatch.setattr(broadcast, "_send", record)

    @contextlib.contextmanager
    def commit():
        with django_capture_on_commit_callbacks(execute=True):
            yield recorded

    recorded.commit = commit
    return recorded


@pytest.fixture
def suite_report():
    return _SUITE_REPORT.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _SUITE_REPORT:
        terminalreporter.section("fault and fuzz suites: what they measured")
        for line in _SUITE_REPORT:
            terminalreporter.write_line(line)
