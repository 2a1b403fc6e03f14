"""A real Prometheus for tests, scraping an exporter in the test process once a second.

Use it from a test module by importing the fixture (the import is what registers it):

    from tests.prometheus_server import PrometheusServer, prometheus_fixture, values  # noqa: F401

    @pytest.mark.prometheus
    def test_x(prometheus: PrometheusServer):
        prometheus.hit_ratio.labels(track="canary").set(0.93)
        prometheus.wait_for("stepwise_test_hit_ratio", lambda r: values(r).get("canary") == 0.93)

`prometheus_scraping(directory, target="127.0.0.1:8000")` points one at any /metrics instead.
"""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@dataclass(kw_only=True)
class Prometheus:
    """A real Prometheus at `url`, scraping its one job every second."""

    url: str
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


@dataclass(kw_only=True)
class PrometheusServer(Prometheus):
    """Prometheus scraping `exporter_url` (serving `registry`) in the test process."""

    exporter_url: str
    registry: CollectorRegistry
    hit_ratio: Gauge  # stepwise_test_hit_ratio{track}
    requests: Counter  # stepwise_test_requests_total{track}
    latency: Histogram  # stepwise_test_latency_seconds{track}


def values(result: list[dict[str, Any]], label: str = "track") -> dict[str, float]:
    """A vector result as {value of `label`: sample value}, e.g. {"canary": 0.93}."""
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in result}


def _config(job: str, target: str, bearer: str | None) -> str:
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        + (f"    authorization:\n      credentials: '{bearer}'\n" if bearer else "")
        + "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )


def _wait_ready(
    server: Prometheus, process: subprocess.Popen, job: str, timeout: float = 30
) -> None:
    """Ready, and the target scraped once: before that every query reads an empty TSDB."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"prometheus exited with {process.returncode}:\n{server.log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                up = server.query(f'up{{job="{job}"}}')["result"]
                if any(float(s["value"][1]) == 1 for s in up):
                    return
                last = f"up = {up!r}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    pytest.fail(
        f"prometheus not ready after {timeout} s ({last}):\n{server.log.read_text()[-3000:]}"
    )


@contextmanager
def prometheus_scraping(
    directory: Path, *, target: str, job: str = "stepwise_test", bearer: str | None = None
) -> Iterator[Prometheus]:
    """A fresh Prometheus scraping `target` (host:port, path /metrics) every second, with
    `Authorization: Bearer <bearer>` when given; stopped on leaving."""
    if not shutil.which(PROMETHEUS):
        # Under STEPWISE_REQUIRE_SERVICES=1 the conftest has already failed the session.
        pytest.skip(
            f"{PROMETHEUS} not found: install Debian's prometheus to run the Prometheus client tests"
        )
    config = directory / "prometheus.yml"
    config.write_text(_config(job, target, bearer))
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
    server = Prometheus(url=f"http://127.0.0.1:{port}", log=log, process=process)
    try:
        _wait_ready(server, process, job)
        yield server
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module", name="prometheus")
def prometheus_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A fresh Prometheus and exporter for each test module that uses it."""
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
    try:
        with prometheus_scraping(
            tmp_path_factory.mktemp("prometheus"), target=f"127.0.0.1:{exporter_port}"
        ) as started:
            yield PrometheusServer(
                url=started.url,
                log=started.log,
                process=started.process,
                exporter_url=f"http://127.0.0.1:{exporter_port}/metrics",
                registry=registry,
                hit_ratio=hit_ratio,
                requests=requests,
                latency=latency,
            )
    finally:
        exporter.shutdown()
        exporter.server_close()
        exporter_thread.join(timeout=5)
