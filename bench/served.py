"""What every benchmark here does around its measurement: a fresh PostgreSQL database, the real
`manage.py serve`, readiness, percentiles, and cleaning up after itself."""

import math
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"manage.py {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def wait_ready(
    base: str, process: subprocess.Popen, log: Path, *, path: str = "/readyz", timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(base + path, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"the server was not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def pct(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in 0..100."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stop_and_drop(
    process: subprocess.Popen | None, *, database: str, redis_url: str = "", prefix: str = ""
) -> None:
    """Ctrl-C the server (its workers stop with it), drop its database and its Redis keys."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    if not (redis_url and prefix):
        return
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    except Exception as exc:  # cleanup must not hide the result or a setup error
        print(f"could not delete Redis keys {prefix}*: {exc}", file=sys.stderr)


def production_env(
    *, database: str, work: Path, redis_url: str, prefix: str = ""
) -> dict[str, str]:
    """The environment of a production-mode server on its own database (and Redis prefix)."""
    import os
    import uuid

    env = {
        **os.environ,
        "STEPWISE_ENV": "production",
        "DJANGO_SECRET_KEY": "bench-" + uuid.uuid4().hex * 2,
        "STEPWISE_LEDGER_ANCHOR_KEY": "bench-ledger-" + uuid.uuid4().hex,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": redis_url,
        "STEPWISE_VAR_DIR": str(work / "var"),
        "STEPWISE_LOG_LEVEL": "WARNING",
    }
    if prefix:
        env["STEPWISE_REDIS_PREFIX"] = prefix
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env
