"""A real Prometheus for tests, scraping an exporter in the test process once a second.

Use it from a test module by importing the fixture (the import is what registers it):

    from tests.prometheus_server import PrometheusServer, prometheus_fixture, values  # noqa: F401

    @pytest.mark.prometheus
    def test_x(prometheus: PrometheusServer):
        prometheus.hit_ratio.labels(track="canary").set(0.93)
        prometheus.wait_for("stepwise_test_hit_ratio", lambda r: values(r).get("canary") == 0.93)
"""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PROMETHEUS = "/usr/bin/prometheus"
TRACKS = ("baseline", "canary")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrometheusServer:
    """Prometheus at `url`, scraping `exporter_url` (serving `registry`) every second."""

    url: str
    exporter_url: str
    registry: CollectorRegistry
    hit_ratio: Gauge  # stepwise_test_hit_ratio{track}
    requests: Counter  # stepwise_test_requests_total{track}
    latency: Histogram  # stepwise_test_latency_seconds{track}
    log: Path
    process: subprocess.Popen | None = None  # for fault tests that stop it

    def query(self, promql: str, *, at: float | None = None) -> dict[str, Any]:
        """The `data` of an instant query, read without the client under test."""
        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = at
        response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=5)
        response.raise_for_status()
        return response.json()["data"]

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], Any],
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Poll until the query's result (`data.result`) satisfies `predicate`; return it.

        A vector result is a list of `{"metric": {...}, "value": [t, "1.5"]}`; see `values`.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)["result"]
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql!r} still gave {result!r} after {timeout} s")
            time.sleep(0.1)


def values(result: list[dict[str, Any]], label: str = "track") -> dict[str, float]:
    """A vector result as {value of `label`: sample value}, e.g. {"canary": 0.93}."""
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in result}


def _config(exporter_port: int) -> str:
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: stepwise_test\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )


def _wait_ready(server: PrometheusServer, process: subprocess.Popen, timeout: float = 30) -> None:
    """Ready, and the exporter scraped once: before that every query reads an empty TSDB."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"prometheus exited with {process.returncode}:\n{server.log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                up = server.query('up{job="stepwise_test"}')["result"]
                if any(float(s["value"][1]) == 1 for s in up):
                    return
                last = f"up = {up!r}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    pytest.fail(
        f"prometheus not ready after {timeout} s ({last}):\n{server.log.read_text()[-3000:]}"
    )


@pytest.fixture(scope="module", name="prometheus")
def prometheus_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A fresh Prometheus and exporter for each test module that uses it."""
    if not shutil.which(PROMETHEUS):
        # Under STEPWISE_REQUIRE_SERVICES=1 the conftest has already failed the session.
        pytest.skip(
            f"{PROMETHEUS} not found: install Debian's prometheus to run the Prometheus client tests"
        )
    registry = CollectorRegistry()
    hit_ratio = Gauge(
        "stepwise_test_hit_ratio", "cache hits / lookups", ["track"], registry=registry
    )
    requests = Counter("stepwise_test_requests", "requests served", ["track"], registry=registry)
    latency = Histogram(
        "stepwise_test_latency_seconds",
        "request latency",
        ["track"],
        buckets=(0.05, 0.1, 0.25, 0.5, 1.0),
        registry=registry,
    )
    for track in TRACKS:  # every series exists from the first scrape
        hit_ratio.labels(track=track)
        requests.labels(track=track)
        latency.labels(track=track)
    exporter, exporter_thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    exporter_port = exporter.server_port

    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(_config(exporter_port))
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Go would start a thread per CPU; two keep a parallel test run from contending.
            env={**os.environ, "GOMAXPROCS": "2"},
        )
    server = PrometheusServer(
        url=f"http://127.0.0.1:{port}",
        exporter_url=f"http://127.0.0.1:{exporter_port}/metrics",
        registry=registry,
        hit_ratio=hit_ratio,
        requests=requests,
        latency=latency,
        log=log,
        process=process,
    )
    try:
        _wait_ready(server, process)
        yield server
    finally:
        process.kill()
        process.wait(timeout=10)
        exporter.shutdown()
        exporter.server_close()
        exporter_thread.join(timeout=5)
