"""A real Stepwise (manage.py serve: uvicorn + Celery worker + beat) on a free loopback port,
against its own freshly migrated and seeded database, driven by Debian's headless Chromium."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DEMO_PASSWORD = "stepwise-demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(tmp: Path) -> tuple[dict[str, str], str | None]:
    env = {
        **os.environ,
        "STEPWISE_VAR_DIR": str(tmp),
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    created_db = None
    if env.get("DATABASE_URL", "").startswith("postgres"):
        import psycopg

        url = urlparse(env["DATABASE_URL"])
        created_db = f"stepwise_browser_{uuid.uuid4().hex[:8]}"
        admin = urlunparse(url._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{created_db}"')
        env["DATABASE_URL"] = urlunparse(url._replace(path=f"/{created_db}"))
    if env.get("REDIS_URL"):
        # Its own Redis database, so a developer's running instance never sees the test's events.
        env["REDIS_URL"] = urlunparse(urlparse(env["REDIS_URL"])._replace(path="/13"))
    return env, created_db


def _drop(created_db: str | None) -> None:
    if created_db is None:
        return
    import psycopg

    url = urlparse(os.environ["DATABASE_URL"])
    with psycopg.connect(urlunparse(url._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{created_db}" WITH (FORCE)')


def _wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout}s ({last}):\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def stepwise_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("server")
    env, created_db = _server_env(tmp)
    log = tmp / "server.log"
    try:
        for step in (["migrate", "--noinput"], ["seed_demo"]):
            subprocess.run(
                [sys.executable, "manage.py", *step],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
            )
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(base, proc, log)
            yield base
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        _drop(created_db)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser, stepwise_server):
    """`new_page()` -> a page in its own browser context (its own cookies), closed after the test."""
    contexts = []

    def make():
        context = browser.new_context(
            base_url=stepwise_server, viewport={"width": 1366, "height": 820}
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def login(page, username: str, password: str = DEMO_PASSWORD) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
