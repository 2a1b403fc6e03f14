"""What a web process measures about its own requests and sockets (prometheus_client).

Only what happens in the serving process lives here: OFREP answers, live pushes written to this
process's sockets, open websockets, samples taken in by the ingest API. What lives in the
database or the broker (evaluations, reverts, ledger appends, queue depths) is read at scrape
time by `stepwise.metrics`, so workers need no exporter of their own.

With several uvicorn workers on one host, set PROMETHEUS_MULTIPROC_DIR (an empty directory,
before the processes start): every process then writes its values to a file there and a scrape
of any of them sums them all (`stepwise.metrics`). `manage.py serve --web-workers N` does it.
"""

import os

from prometheus_client import Counter, Gauge, Histogram, multiprocess

OFREP_REQUESTS = Counter(
    "stepwise_ofrep_requests",
    "OFREP requests answered, by endpoint (single, bulk, other) and HTTP status",
    ["endpoint", "status"],
)
OFREP_SECONDS = Histogram(
    "stepwise_ofrep_request_duration_seconds",
    "Time from an OFREP request's arrival to its answer being handed to the server",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
LIVE_PUSH_SECONDS = Histogram(
    "stepwise_live_push_latency_seconds",
    "From a live frame's commit (any process) to its write to this process's websockets",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LIVE_WEBSOCKETS = Gauge(
    "stepwise_live_websockets",
    "Live-page websockets open",
    multiprocess_mode="livesum",
)
SAMPLES_INGESTED = Counter(
    "stepwise_samples_ingested",
    "Samples accepted by the built-in store's ingest (a retried duplicate counts again)",
)

# One child per label set, looked up in a plain dict: `labels()` takes the metric's lock on
# every call, and OFREP is a hot path (a bulk answer takes ~7 ms in all).
_ofrep_children: dict[tuple[str, int], tuple] = {}


def ofrep_observe(*, endpoint: str, status: int, seconds: float) -> None:
    children = _ofrep_children.get((endpoint, status))
    if children is None:
        children = _ofrep_children[(endpoint, status)] = (
            OFREP_REQUESTS.labels(endpoint, str(status)),
            OFREP_SECONDS.labels(endpoint),
        )
    children[0].inc()
    children[1].observe(seconds)


def metrics_multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def metrics_process_exit() -> None:
    """A serving process stops: its open-websocket count must stop counting."""
    if metrics_multiprocess():
        multiprocess.mark_process_dead(os.getpid())
