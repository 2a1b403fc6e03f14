"""Start and stop the real `manage.py serve` for tests: its own database, a free port, readiness."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    base: str
    port: int
    var_dir: Path
    process: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # run manage.py against the served DB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_admin_url() -> str:
    return urlunparse(urlparse(os.environ["DATABASE_URL"])._replace(path="/postgres"))


def _server_env(var_dir: Path) -> tuple[dict[str, str], str | None]:
    env = {
        **os.environ,
        "STEPWISE_VAR_DIR": str(var_dir),
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    created_db = None
    if env.get("DATABASE_URL", "").startswith("postgres"):
        import psycopg

        created_db = f"stepwise_served_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(_postgres_admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{created_db}"')
        env["DATABASE_URL"] = urlunparse(
            urlparse(env["DATABASE_URL"])._replace(path=f"/{created_db}")
        )
    if env.get("REDIS_URL"):
        # Its own Redis database, so a developer's running instance never sees the test's events.
        env["REDIS_URL"] = urlunparse(urlparse(env["REDIS_URL"])._replace(path="/13"))
        env["STEPWISE_REDIS_PREFIX"] = f"served-{uuid.uuid4().hex[:8]}"
    return env, created_db


def _drop(created_db: str | None) -> None:
    if created_db:
        import psycopg

        with psycopg.connect(_postgres_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{created_db}" WITH (FORCE)')


def _wait_ready(server: Server, timeout: float = 90) -> None:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"serve exited with {server.process.returncode}:\n{server.log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(server.base + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"not ready after {timeout}s ({last}):\n{server.log.read_text()[-4000:]}")


def stop(server: Server, timeout: float = 30) -> int:
    """Ctrl-C, as a person at the terminal would; returns serve's exit status."""
    server.process.send_signal(signal.SIGINT)
    try:
        return server.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@contextmanager
def served(var_dir: Path) -> Iterator[Server]:
    env, created_db = _server_env(var_dir)
    try:
        for step in (["migrate", "--noinput"], ["seed_demo"]):
            subprocess.run(
                [sys.executable, "manage.py", *step],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
            )
        port = free_port()
        log = var_dir / "serve.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(f"http://127.0.0.1:{port}", port, var_dir, process, log, env)
        try:
            _wait_ready(server)
            yield server
        finally:
            if process.poll() is None:
                stop(server)
    finally:
        _drop(created_db)
