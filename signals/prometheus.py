"""Read one number, or a distribution of numbers, from a Prometheus server's HTTP API."""

import base64
import copy
import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from signals.models import MetricSource

# Prometheus refuses a range query of more points per series than this ("exceeded maximum
# resolution of 11,000 points per timeseries"); refusing first gives the caller a clearer reason.
MAX_RANGE_POINTS = 11_000
LABEL_SETS_SHOWN = 3
# Visible ASCII, spaces and tabs inside: what an HTTP/1.1 header value may hold.
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[ \t\x21-\x7e]*[\x21-\x7e])?)?")


class PrometheusError(Exception):
    """A query that gave no usable number.

    `retryable` is True for a failure of the source (connection refused, timeout, HTTP 5xx or 429,
    a response that is not the Prometheus API's JSON), False for a failure of the query (HTTP
    400/422 bad PromQL, status "error", a result that is not one number, NaN/±Inf, an empty vector).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def prometheus_instant(*, source: MetricSource, promql: str, at: datetime | None = None) -> float:
    """The one number `promql` evaluates to at `at` (Prometheus' "now" when None)."""
    params: dict[str, str | float] = {"query": promql}
    if at is not None:
        params["time"] = _unix(at)
    data = _get(source=source, path="/api/v1/query", params=params)
    result_type, result = data["resultType"], data["result"]
    if result_type == "scalar":
        value = _number(source, result)
    elif result_type == "vector":
        if not result:
            raise PrometheusError(
                f"{source.name}: {promql!r} returned an empty vector (no series matched)",
                retryable=False,
            )
        if len(result) > 1:
            raise PrometheusError(
                f"{source.name}: {promql!r} returned a vector of {len(result)} series "
                f"({_label_sets(result)}); aggregate it to one number, e.g. sum(...)",
                retryable=False,
            )
        value = _number(source, _field(source, result[0], "value"))
    else:
        raise PrometheusError(
            f"{source.name}: {promql!r} returned a {result_type}, not one number; "
            "an instant query needs a scalar or a single-series vector",
            retryable=False,
        )
    if not math.isfinite(value):
        raise PrometheusError(
            f"{source.name}: {promql!r} returned {_spelled(value)}, which is not a finite number",
            retryable=False,
        )
    return value


PROBE_QUERY = "count(up)"
PROBE_TIMEOUT_SECONDS = 3.0
MAX_PROBE_QUERY = 2_000
# Probes run here, so a page or API waits at most the probe's deadline even when the name
# resolver (which no HTTP timeout covers) hangs; a stuck probe finishes on its own thread.
_PROBES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prometheus-probe")


@dataclass(frozen=True)
class Probe:
    """One live query against a source: its number, or why there is none."""

    query: str
    value: float | None
    error: str
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.error


def prometheus_probe(*, source: MetricSource, promql: str = PROBE_QUERY) -> Probe:
    """Ask `source` for `promql` now, answering within PROBE_TIMEOUT_SECONDS (less when the
    source's own timeout is shorter) whatever the network does. Never raises for the source."""
    promql = promql.strip() or PROBE_QUERY
    if len(promql) > MAX_PROBE_QUERY:
        return Probe(
            promql[:80] + "…", None, f"a test query is at most {MAX_PROBE_QUERY} characters", 0.0
        )
    deadline = min(source.timeout_seconds, PROBE_TIMEOUT_SECONDS)
    quick = copy.copy(source)  # unsaved: only this probe waits less
    quick.timeout_seconds = deadline
    started = time.monotonic()
    future = _PROBES.submit(prometheus_instant, source=quick, promql=promql)
    try:
        value = future.result(timeout=deadline + 0.5)
    except PrometheusError as exc:
        return Probe(promql, None, str(exc), time.monotonic() - started)
    except FutureTimeout:
        future.cancel()
        error = f"{source.name}: no answer within {deadline:g} s"
        return Probe(promql, None, error, time.monotonic() - started)
    return Probe(promql, value, "", time.monotonic() - started)


def prometheus_range(
    *, source: MetricSource, promql: str, start: datetime, end: datetime, step_seconds: float
) -> list[float]:
    """Every finite value of every series over [start, end], series after series, in order."""
    return [
        value
        for _, value in prometheus_range_points(
            source=source, promql=promql, start=start, end=end, step_seconds=step_seconds
        )
    ]


def prometheus_range_points(
    *, source: MetricSource, promql: str, start: datetime, end: datetime, step_seconds: float
) -> list[tuple[float, float]]:
    """(unix time, value) of every finite point of every series over [start, end]."""
    if not step_seconds > 0:
        raise PrometheusError(
            f"{source.name}: the step of a range query must be a positive number of seconds",
            retryable=False,
        )
    start_unix, end_unix = _unix(start), _unix(end)
    if end_unix < start_unix:
        raise PrometheusError(
            f"{source.name}: the range query ends before it starts", retryable=False
        )
    points = math.floor((end_unix - start_unix) / step_seconds) + 1
    if points > MAX_RANGE_POINTS:
        raise PrometheusError(
            f"{source.name}: a range of {points} points per series exceeds Prometheus' limit of "
            f"{MAX_RANGE_POINTS:,}; use a larger step or a shorter range",
            retryable=False,
        )
    params: dict[str, str | float] = {
        "query": promql,
        "start": start_unix,
        "end": end_unix,
        "step": step_seconds,
    }
    data = _get(source=source, path="/api/v1/query_range", params=params)
    if data["resultType"] != "matrix":
        raise PrometheusError(
            f"{source.name}: {promql!r} returned a {data['resultType']} to a range query",
            retryable=False,
        )
    points: list[tuple[float, float]] = []
    for series in data["result"]:
        for point in _field(source, series, "values"):
            value = _number(source, point)
            if math.isfinite(value):
                points.append((float(point[0]), value))
    return points


def _unix(moment: datetime) -> float:
    if moment.tzinfo is None:
        # A naive datetime would be read in the server process' local time zone.
        raise ValueError("Prometheus queries need an aware datetime")
    return moment.timestamp()


def _authorization(source: MetricSource) -> str:
    """The Authorization header's value ("" for none): the secret read now from the environment
    variable the source's reference names, or a legacy header stored verbatim."""
    if source.auth_scheme == MetricSource.AuthScheme.NONE or not source.auth_secret_ref:
        return source.auth_header
    variable = source.auth_secret_ref.removeprefix("env:")
    secret = os.environ.get(variable)
    if not secret:
        raise PrometheusError(
            f"{source.name}: the secret's environment variable {variable} is not set in this "
            "process (set it for the web, worker and beat processes alike)",
            retryable=False,
        )
    if source.auth_scheme == MetricSource.AuthScheme.BASIC:
        pair = f"{source.auth_username}:{secret}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return f"Bearer {secret}"


def _get(*, source: MetricSource, path: str, params: dict[str, str | float]) -> dict[str, Any]:
    """The `data` of a successful API response, or PrometheusError."""
    authorization = _authorization(source)
    if not _HEADER_VALUE.fullmatch(authorization):
        # httpx and h11 would refuse it with an error that quotes the value: the credential.
        raise PrometheusError(
            f"{source.name}: the auth header has characters an HTTP header cannot carry",
            retryable=False,
        )
    headers = {"Authorization": authorization} if authorization else {}
    try:
        with httpx.Client(timeout=source.timeout_seconds, verify=source.verify_tls) as client:
            response = client.get(source.url.rstrip("/") + path, params=params, headers=headers)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise PrometheusError(
            f"{source.name}: the source URL is not an http(s) URL", retryable=False
        ) from None
    except httpx.TimeoutException:
        raise PrometheusError(
            f"{source.name}: no answer within {source.timeout_seconds:g} s", retryable=True
        ) from None
    except httpx.HTTPError as exc:
        reason = str(exc).replace(authorization, "…") if authorization else str(exc)
        raise PrometheusError(
            f"{source.name}: cannot reach Prometheus ({reason})", retryable=True
        ) from None

    body = _json(response)
    error = body.get("error") if body else None
    status = response.status_code
    if status in (400, 422):
        raise PrometheusError(
            f"{source.name}: Prometheus refused the query: {error or f'HTTP {status}'}",
            retryable=False,
        )
    if not response.is_success:
        detail = f": {error}" if error else ""
        raise PrometheusError(
            f"{source.name}: HTTP {status} from Prometheus{detail}", retryable=True
        )
    if body is None:
        raise PrometheusError(
            f"{source.name}: the response is not the Prometheus API's JSON (HTTP {status}, "
            f"{response.headers.get('content-type') or 'no content type'})",
            retryable=True,
        )
    if body.get("status") == "error":
        raise PrometheusError(f"{source.name}: the query failed: {error}", retryable=False)
    data = body.get("data")
    if (
        body.get("status") != "success"
        or not isinstance(data, dict)
        or not isinstance(data.get("resultType"), str)
        or not isinstance(data.get("result"), list)
    ):
        raise PrometheusError(
            f"{source.name}: the response is not the Prometheus API's JSON (no status and data)",
            retryable=True,
        )
    return data


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _field(source: MetricSource, sample: Any, key: str) -> Any:
    if not isinstance(sample, dict) or key not in sample:
        raise PrometheusError(
            f"{source.name}: the response is not the Prometheus API's JSON (a sample without {key})",
            retryable=True,
        )
    return sample[key]


def _number(source: MetricSource, point: Any) -> float:
    """The value of a `[timestamp, "value"]` pair; Prometheus sends numbers as strings."""
    try:
        _, text = point
        return float(text)
    except (TypeError, ValueError):
        raise PrometheusError(
            f"{source.name}: the response is not the Prometheus API's JSON (value {point!r:.60})",
            retryable=True,
        ) from None


def _label_sets(series: list[Any]) -> str:
    """The first few series by the labels that tell them apart: `{track="a"}, {track="b"}, …`."""
    metrics = [s.get("metric") if isinstance(s, dict) else None for s in series]
    metrics = [m if isinstance(m, dict) else {} for m in metrics]
    keys = {k for m in metrics for k in m}
    varying = sorted(k for k in keys if len({m.get(k) for m in metrics}) > 1)
    shown = []
    for metric in metrics[:LABEL_SETS_SHOWN]:
        name = metric.get("__name__", "") if "__name__" in varying else ""
        pairs = ", ".join(
            f"{k}={json.dumps(metric[k], ensure_ascii=False)}"
            for k in varying
            if k != "__name__" and k in metric
        )
        shown.append(f"{name}{{{pairs}}}")
    return ", ".join(shown) + (", …" if len(series) > LABEL_SETS_SHOWN else "")


def _spelled(value: float) -> str:
    """NaN and infinities as Prometheus writes them, so the message matches its UI."""
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"
