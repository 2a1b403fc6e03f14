import os
import subprocess
import sys

from tests.serving import ROOT


def _run_guarded(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_health.py::test_healthz__anonymous__200",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_ci_guard__services_required_but_unreachable__run_fails_naming_them():
    result = _run_guarded(
        STEPWISE_REQUIRE_SERVICES="1",
        DATABASE_URL="postgres://postgres@127.0.0.1:1/nowhere",
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    assert result.returncode == 3, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "postgres: 127.0.0.1:1 unreachable" in out and "redis: 127.0.0.1:1 unreachable" in out


def test_ci_guard__laptop_without_services__skips_with_the_reason():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "STEPWISE_REQUIRE_SERVICES"}
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/ledger/test_concurrency.py",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "2 skipped" in result.stdout
        and "PostgreSQL not configured: set DATABASE_URL" in result.stdout
    )
