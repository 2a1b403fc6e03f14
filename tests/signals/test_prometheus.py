"""The Prometheus client against a real Prometheus, and against a tiny HTTP server for the
failures a real one will not produce on demand (timeouts, 503s, a proxy's HTML)."""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from signals.models import MetricSource
from signals.prometheus import PrometheusError, prometheus_instant, prometheus_range

# Importing the fixture is what makes it available here as `prometheus`.
from tests.prometheus_server import (
    PrometheusServer,
    free_port,
    prometheus_fixture,  # noqa: F401
    values,
)

SECRET = "Bearer s3cret-token-42"


def _source(url: str, **kwargs: Any) -> MetricSource:
    return MetricSource(
        name="prom-eu", kind="prometheus", url=url, **({"timeout_seconds": 3.0} | kwargs)
    )


# --- a real Prometheus ---------------------------------------------------------------------------


@pytest.mark.prometheus
def test_prometheus_instant__scalar__its_value(prometheus: PrometheusServer):
    assert prometheus_instant(source=_source(prometheus.url), promql="1 + 1.5") == 2.5


@pytest.mark.prometheus
def test_prometheus_instant__at_given__evaluated_at_that_time(prometheus: PrometheusServer):
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = prometheus_instant(source=_source(prometheus.url), promql="time()", at=at)
    assert value == at.timestamp()


@pytest.mark.prometheus
def test_prometheus_instant__one_series_vector__the_gauge_value(prometheus: PrometheusServer):
    prometheus.hit_ratio.labels(track="canary").set(0.93)
    prometheus.wait_for("stepwise_test_hit_ratio", lambda r: values(r).get("canary") == 0.93)

    value = prometheus_instant(
        source=_source(prometheus.url), promql='stepwise_test_hit_ratio{track="canary"}'
    )

    assert value == 0.93


@pytest.mark.prometheus
def test_prometheus_instant__sum_of_counters__the_total_the_exporter_serves(
    prometheus: PrometheusServer,
):
    prometheus.requests.labels(track="canary").inc(5)
    prometheus.requests.labels(track="baseline").inc(7)
    expected = sum(
        prometheus.registry.get_sample_value("stepwise_test_requests_total", {"track": track})
        for track in ("canary", "baseline")
    )
    prometheus.wait_for(
        "sum(stepwise_test_requests_total)", lambda r: r and float(r[0]["value"][1]) == expected
    )

    value = prometheus_instant(
        source=_source(prometheus.url), promql="sum(stepwise_test_requests_total)"
    )

    assert value == expected >= 12


@pytest.mark.prometheus
def test_prometheus_instant__sum_of_rates__positive_and_as_prometheus_computes_it(
    prometheus: PrometheusServer,
):
    promql = "sum(rate(stepwise_test_requests_total[30s]))"
    prometheus.requests.labels(track="canary").inc(30)
    prometheus.wait_for(promql, lambda r: r and float(r[0]["value"][1]) > 0)
    # At the last scrape's own timestamp the answer is fixed: a later scrape is later in time.
    (last,) = prometheus.query("max(timestamp(stepwise_test_requests_total))")["result"]
    at = datetime.fromtimestamp(float(last["value"][1]), tz=UTC)
    (expected,) = prometheus.query(promql, at=at.timestamp())["result"]

    value = prometheus_instant(source=_source(prometheus.url), promql=promql, at=at)

    assert value == float(expected["value"][1]) > 0


@pytest.mark.prometheus
def test_prometheus_instant__histogram_quantile__inside_the_observed_bucket(
    prometheus: PrometheusServer,
):
    promql = (
        "histogram_quantile(0.5, sum by (le) "
        '(rate(stepwise_test_latency_seconds_bucket{track="canary"}[30s])))'
    )
    for _ in range(20):
        prometheus.latency.labels(track="canary").observe(0.07)
    # Every new observation is in the (0.05, 0.1] bucket: the median interpolates to its middle.
    prometheus.wait_for(promql, lambda r: values(r).get("") == pytest.approx(0.075))

    value = prometheus_instant(source=_source(prometheus.url), promql=promql)

    assert value == pytest.approx(0.075)


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("promql", "words"),
    [
        ("stepwise_test_hit_ratio", 'a vector of 2 series ({track="baseline"}, {track="canary"})'),
        (
            'stepwise_test_latency_seconds_bucket{track="canary"}',
            'a vector of 6 series ({le="+Inf"}, {le="0.05"}, {le="0.1"}, …)',
        ),
    ],
)
def test_prometheus_instant__vector_of_many_series__refused_naming_count_and_labels(
    prometheus: PrometheusServer, promql, words
):
    with pytest.raises(PrometheusError) as caught:
        prometheus_instant(source=_source(prometheus.url), promql=promql)

    assert str(caught.value) == (
        f"prom-eu: {promql!r} returned {words}; aggregate it to one number, e.g. sum(...)"
    )
    assert caught.value.retryable is False


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("promql", "words"),
    [("stepwise_test_hit_ratio[1m]", "returned a matrix"), ('"text"', "returned a string")],
)
def test_prometheus_instant__not_a_number__refused_naming_result_type(
    prometheus: PrometheusServer, promql, words
):
    with pytest.raises(PrometheusError, match=words) as caught:
        prometheus_instant(source=_source(prometheus.url), promql=promql)
    assert caught.value.retryable is False


@pytest.mark.prometheus
def test_prometheus_instant__no_series_matched__empty_vector_not_retryable(
    prometheus: PrometheusServer,
):
    with pytest.raises(PrometheusError, match=r"empty vector \(no series matched\)") as caught:
        prometheus_instant(
            source=_source(prometheus.url), promql='stepwise_test_hit_ratio{track="nowhere"}'
        )
    assert caught.value.retryable is False


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("promql", "spelled"),
    [("0/0", "NaN"), ("1/0", "+Inf"), ("-1/0", "-Inf"), ("vector(0)/0", "NaN")],
)
def test_prometheus_instant__not_finite__refused(prometheus: PrometheusServer, promql, spelled):
    with pytest.raises(PrometheusError) as caught:
        prometheus_instant(source=_source(prometheus.url), promql=promql)
    assert f"returned {spelled}, which is not a finite number" in str(caught.value)
    assert caught.value.retryable is False


@pytest.mark.prometheus
def test_prometheus_instant__bad_promql__not_retryable_with_prometheus_message(
    prometheus: PrometheusServer,
):
    with pytest.raises(PrometheusError) as caught:
        prometheus_instant(source=_source(prometheus.url), promql="sum(stepwise_test_hit_ratio")

    assert str(caught.value).startswith("prom-eu: Prometheus refused the query: ")
    assert "unclosed left parenthesis" in str(caught.value)
    assert caught.value.retryable is False


@pytest.mark.prometheus
def test_prometheus_range__two_series__every_point_series_after_series(
    prometheus: PrometheusServer,
):
    prometheus.hit_ratio.labels(track="baseline").set(0.5)
    prometheus.hit_ratio.labels(track="canary").set(0.9)
    prometheus.wait_for(
        "stepwise_test_hit_ratio", lambda r: values(r) == {"baseline": 0.5, "canary": 0.9}
    )
    # From now on every evaluation reads these values, even at times not yet scraped.
    start = datetime.now(UTC)

    found = prometheus_range(
        source=_source(prometheus.url),
        promql="stepwise_test_hit_ratio",
        start=start,
        end=start + timedelta(seconds=2),
        step_seconds=1,
    )

    assert found == [0.5, 0.5, 0.5, 0.9, 0.9, 0.9]


@pytest.mark.prometheus
def test_prometheus_range__infinite_values__dropped(prometheus: PrometheusServer):
    prometheus.hit_ratio.labels(track="baseline").set(0.5)
    prometheus.hit_ratio.labels(track="canary").set(0.9)
    prometheus.wait_for(
        "stepwise_test_hit_ratio", lambda r: values(r) == {"baseline": 0.5, "canary": 0.9}
    )
    start = datetime.now(UTC)

    # baseline: 0.5 / 0 = +Inf; canary: 0.9 / 0.4
    found = prometheus_range(
        source=_source(prometheus.url),
        promql="stepwise_test_hit_ratio / (stepwise_test_hit_ratio - 0.5)",
        start=start,
        end=start + timedelta(seconds=2),
        step_seconds=1,
    )

    assert found == pytest.approx([2.25, 2.25, 2.25])


@pytest.mark.prometheus
def test_prometheus_range__no_series_matched__empty_list(prometheus: PrometheusServer):
    end = datetime.now(UTC)
    found = prometheus_range(
        source=_source(prometheus.url),
        promql='stepwise_test_hit_ratio{track="nowhere"}',
        start=end - timedelta(minutes=1),
        end=end,
        step_seconds=5,
    )
    assert found == []


# --- a tiny HTTP server that answers as told -----------------------------------------------------


SCALAR = {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "4.5"]}}


@dataclass
class FakeApi:
    url: str = ""
    status: int = 200
    body: bytes = json.dumps(SCALAR).encode()
    content_type: str = "application/json"
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
        self.status, self.content_type = status, content_type
        self.body = body.encode() if isinstance(body, str) else json.dumps(body).encode()


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            fake.requests.append(
                {"path": url.path, "params": parse_qs(url.query), "headers": dict(self.headers)}
            )
            if fake.delay:
                fake.release.wait(fake.delay)
            try:
                self.send_response(fake.status)
                self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)
            except OSError:  # the client gave up waiting: that was the test
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("auth_header", [SECRET, ""])
def test_prometheus_instant__auth_header__sent_verbatim_only_when_set(fake_api, auth_header):
    value = prometheus_instant(
        source=_source(fake_api.url + "/", auth_header=auth_header), promql="up"
    )

    (request,) = fake_api.requests
    assert value == 4.5
    assert request["path"] == "/api/v1/query"
    assert request["params"] == {"query": ["up"]}
    assert request["headers"].get("Authorization") == (auth_header or None)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
        (503, "Service Unavailable"),
        (200, "<html>login</html>"),
        (200, {"status": "success", "data": {"resultType": "vector", "result": []}}),
    ],
)
def test_prometheus_instant__fails_with_auth_header__header_not_in_message(fake_api, status, body):
    fake_api.answer(status, body)

    with pytest.raises(PrometheusError) as caught:
        prometheus_instant(source=_source(fake_api.url, auth_header=SECRET), promql="up")

    assert fake_api.requests[0]["headers"]["Authorization"] == SECRET
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(caught.value)


@pytest.mark.parametrize(
    "auth_header",
    ["Bearer s3cret\n", "Bearer s3cret\r\nX-Evil: 1", " Bearer s3cret", "Bearer s3cret…"],
)
def test_prometheus_instant__auth_header_not_sendable__refused_without_quoting_it(
    fake_api, auth_header
):
    with pytest.raises(PrometheusError, match="auth header has characters") as caught:
        prometheus_instant(source=_source(fake_api.url, auth_header=auth_header), promql="up")

    assert "s3cret" not in str(caught.value)
    assert caught.value.retryable is False
    assert fake_api.requests == []


def test_prometheus_instant__connection_refused__retryable():
    closed = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(PrometheusError, match=r"^prom-eu: cannot reach Prometheus") as caught:
        prometheus_instant(source=_source(closed), promql="up")

    assert caught.value.retryable is True


def test_prometheus_instant__slower_than_timeout__retryable(fake_api):
    fake_api.delay = 5

    with pytest.raises(PrometheusError, match=r"^prom-eu: no answer within 0.2 s") as caught:
        prometheus_instant(source=_source(fake_api.url, timeout_seconds=0.2), promql="up")

    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("status", "body", "retryable", "words"),
    [
        (503, "Service Unavailable", True, "HTTP 503 from Prometheus"),
        (500, {"status": "error", "error": "query timed out"}, True, "HTTP 500.*query timed out"),
        (429, "slow down", True, "HTTP 429 from Prometheus"),
        (200, "<html>proxy login</html>", True, "not the Prometheus API's JSON"),
        (200, {"data": {}}, True, "not the Prometheus API's JSON"),
        (422, {"status": "error", "error": "many-to-many matching"}, False, "many-to-many"),
        (200, {"status": "error", "error": "odd but possible"}, False, "failed: odd but possible"),
    ],
)
def test_prometheus_instant__http_answer__error_classified(
    fake_api, status, body, retryable, words
):
    fake_api.answer(status, body, "text/html" if isinstance(body, str) else "application/json")

    with pytest.raises(PrometheusError, match=rf"^prom-eu: .*{words}") as caught:
        prometheus_instant(source=_source(fake_api.url), promql="up")

    assert caught.value.retryable is retryable


def test_prometheus_range__matrix__start_end_step_sent_and_non_finite_dropped(fake_api):
    fake_api.answer(
        200,
        {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [
                    {"metric": {"track": "a"}, "values": [[1, "1"], [2, "NaN"], [3, "2"]]},
                    {"metric": {"track": "b"}, "values": [[1, "+Inf"], [2, "3"], [3, "-Inf"]]},
                ],
            },
        },
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)

    found = prometheus_range(
        source=_source(fake_api.url),
        promql="x",
        start=start,
        end=start + timedelta(minutes=1),
        step_seconds=15,
    )

    assert found == [1.0, 2.0, 3.0]
    (request,) = fake_api.requests
    assert request["path"] == "/api/v1/query_range"
    assert {k: float(v[0]) for k, v in request["params"].items() if k != "query"} == {
        "start": start.timestamp(),
        "end": start.timestamp() + 60,
        "step": 15.0,
    }


@pytest.mark.parametrize(
    ("seconds", "step_seconds", "words"),
    [
        (60, 0, "step .* must be a positive number"),
        (60, -5, "step .* must be a positive number"),
        (-60, 5, "ends before it starts"),
        (11_000, 1, "11001 points per series exceeds Prometheus' limit of 11,000"),
        (24 * 3600, 1, "86401 points per series exceeds Prometheus' limit of 11,000"),
    ],
)
def test_prometheus_range__bad_range__refused_before_sending(
    fake_api, seconds, step_seconds, words
):
    start = datetime(2026, 1, 1, tzinfo=UTC)

    with pytest.raises(PrometheusError, match=rf"^prom-eu: .*{words}") as caught:
        prometheus_range(
            source=_source(fake_api.url),
            promql="up",
            start=start,
            end=start + timedelta(seconds=seconds),
            step_seconds=step_seconds,
        )

    assert caught.value.retryable is False
    assert fake_api.requests == []


def test_prometheus_range__eleven_thousand_points__sent(fake_api):
    fake_api.answer(200, {"status": "success", "data": {"resultType": "matrix", "result": []}})
    start = datetime(2026, 1, 1, tzinfo=UTC)

    found = prometheus_range(
        source=_source(fake_api.url),
        promql="up",
        start=start,
        end=start + timedelta(seconds=10_999),
        step_seconds=1,
    )

    assert found == []
    assert len(fake_api.requests) == 1
