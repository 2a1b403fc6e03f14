"""Fault tests run the served stack against a Redis of their own (a redis-server on its own
port, killed at the end), never the shared one: a test may kill it, and a killed shared Redis
would fail everything else running beside it."""

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.serving import free_port


@dataclass
class OwnRedis:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = _redis_server(self.port)


def _redis_server(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip()
        != b"PONG"
    ):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    return process


@pytest.fixture
def own_redis(monkeypatch) -> Iterator[OwnRedis]:
    """A redis-server for this test; REDIS_URL points the served stack at it."""
    port = free_port()
    redis = OwnRedis(port, _redis_server(port))
    monkeypatch.setenv("REDIS_URL", redis.url)
    try:
        yield redis
    finally:
        redis.process.kill()
        redis.process.wait(timeout=10)
