"""Stepwise's own metrics, in the Prometheus exposition format (GET /metrics).

Two kinds, so that web and worker processes on any number of hosts need no shared exporter:

- read at scrape time from where the truth is kept, the same from every web process: evaluations
  by outcome and their durations, detect → revert times (rows of `Evaluation`), ledger appends
  (the ledger's gapless sequence), Celery queue depths (Redis list lengths);
- counted in the web process that served them (`core.metrics`): OFREP requests and latency, live
  push latency, open websockets, ingested samples. Per host; summed over a host's uvicorn
  workers when PROMETHEUS_MULTIPROC_DIR is set.
"""

import ipaddress
import logging
import threading
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from accounts.models import ApiToken
from core.metrics import metrics_multiprocess
from core.redis import redis_client
from ledger.models import LedgerEntry
from rollouts.models import Evaluation

logger = logging.getLogger(__name__)

SCOPE = "metrics:read"
EVALUATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REVERT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def address_allowed(
    address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # no peer address (a unix socket), or not one
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def metrics_refusal(*, address: str, token: ApiToken | None) -> tuple[int, str] | None:
    """Why a scrape is refused, as (status, reason), or None. A token (already authenticated by
    the token middleware) decides when presented; without one, only an allowed address may."""
    if token is not None:
        return None if token.allows(SCOPE) else (403, f"this token lacks the {SCOPE!r} scope")
    if address_allowed(address, settings.METRICS_ALLOW_NETWORKS):
        return None
    return 401, f"send an API token with the {SCOPE!r} scope: Authorization: Bearer sw_..."


class _InProcess(Collector):
    """This process's instruments (core.metrics) and the client's process/runtime metrics."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    row: dict[str, Any],
    prefix: str,
    buckets: tuple[float, ...],
) -> None:
    family.add_metric(
        labels,
        [(str(b), row[f"{prefix}{i}"]) for i, b in enumerate(buckets)]
        + [("+Inf", row[f"{prefix}count"])],
        sum_value=row[f"{prefix}sum"],
    )


def _bucket_counts(field: str, prefix: str, buckets: tuple[float, ...]) -> dict[str, Any]:
    return {
        f"{prefix}count": Count(field),
        f"{prefix}sum": Sum(field),
        **{
            f"{prefix}{i}": Count("pk", filter=Q(**{f"{field}__lte": b}))
            for i, b in enumerate(buckets)
        },
    }


# Per outcome, in one pass over the rows whatever the number of buckets.
_EVALUATION_AGGREGATES = {
    "total": Count("pk"),
    **_bucket_counts("duration_seconds", "d_", EVALUATION_BUCKETS),
    **_bucket_counts("revert_seconds", "r_", REVERT_BUCKETS),
}
Tally = dict[str, dict[str, float]]


def _tally(evaluations: QuerySet) -> Tally:
    """{outcome: {aggregate: value}} of these evaluations, every outcome present."""
    found = {
        row.pop("outcome"): row
        for row in evaluations.order_by().values("outcome").annotate(**_EVALUATION_AGGREGATES)
    }
    return {
        outcome: {key: found.get(outcome, {}).get(key) or 0 for key in _EVALUATION_AGGREGATES}
        for outcome in Evaluation.Outcome.values
    }


def _tally_add(into: Tally, more: Tally) -> None:
    for outcome, values in more.items():
        for key, amount in values.items():
            into[outcome][key] += amount


# An evaluation older than this is taken to be committed: its transaction (which holds the
# plan's lock) would have had to stay open for a minute for it still to appear later.
SETTLED_SECONDS = 60.0


class EvaluationTally:
    """Every evaluation's outcome, duration and revert time, summed without reading the whole
    table at each scrape: the table grows by every run every interval (millions of rows a day
    at 500 steps; a full pass over 1M took 0.7 s here). Rows settled for a minute are summed
    once, by id, into running totals; a scrape reads only the rows after them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled_upto = 0
        self._settled: Tally = _tally(Evaluation.objects.none())

    def totals(self) -> Tally:
        with self._lock:
            cutoff = timezone.now() - timedelta(seconds=SETTLED_SECONDS)
            newer = Evaluation.objects.filter(pk__gt=self._settled_upto)
            upto = newer.filter(evaluated_at__lt=cutoff).aggregate(upto=Max("pk"))["upto"]
            if upto is not None:
                _tally_add(self._settled, _tally(newer.filter(pk__lte=upto)))
                self._settled_upto = upto
            totals = {outcome: dict(values) for outcome, values in self._settled.items()}
            _tally_add(totals, _tally(Evaluation.objects.filter(pk__gt=self._settled_upto)))
        return totals


evaluation_tally = EvaluationTally()


class _Stored(Collector):
    """Read at scrape time: the database and the broker are the truth for these."""

    def collect(self) -> Iterator[Metric]:
        yield from self._evaluations()
        yield self._ledger()
        depths = self._queue_depths()
        if depths is not None:
            yield depths

    def _evaluations(self) -> Iterator[Metric]:
        tally = evaluation_tally.totals()
        counts = CounterMetricFamily(
            "stepwise_verification_evaluations",
            "Verification evaluations recorded, by outcome",
            labels=["outcome"],
        )
        durations = HistogramMetricFamily(
            "stepwise_verification_evaluation_duration_seconds",
            "From the start of measuring to the verdict written, by outcome",
            labels=["outcome"],
        )
        for outcome, row in tally.items():
            counts.add_metric([outcome], row["total"])
            _histogram(durations, [outcome], row, "d_", EVALUATION_BUCKETS)
        reverts = HistogramMetricFamily(
            "stepwise_detect_to_revert_seconds",
            "From a breach detected (a breaching sample ingested, else its evaluation begun) "
            "to its verification's action changing the step's flag",
        )
        every = {key: sum(row[key] for row in tally.values()) for key in _EVALUATION_AGGREGATES}
        _histogram(reverts, [], every, "r_", REVERT_BUCKETS)
        yield from (counts, durations, reverts)

    def _ledger(self) -> Metric:
        # The sequence is gapless from 1: the highest is the number of appends, in one index read.
        appended = LedgerEntry.objects.aggregate(seq=Max("seq"))["seq"] or 0
        return CounterMetricFamily(
            "stepwise_ledger_appends", "Entries appended to the ledger", value=appended
        )

    def _queue_depths(self) -> Metric | None:
        """Messages waiting per Celery queue; None without Redis (the embedded broker is a
        directory of files) or while Redis cannot be read."""
        if not settings.REDIS_URL:
            return None
        prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
        queues = [queue.name for queue in settings.CELERY_TASK_QUEUES]
        try:
            with redis_client().pipeline(transaction=False) as pipe:
                # kombu keeps a queue's messages of each priority step in a list of its own.
                for queue in queues:
                    for step in PRIORITY_STEPS:
                        suffix = f"{RedisChannel.sep}{step}" if step else ""
                        pipe.llen(f"{prefix}{queue}{suffix}")
                lengths = pipe.execute()
        except Exception as exc:
            logger.warning("metrics: Celery queue depths unreadable: %s", exc)
            return None
        depths = GaugeMetricFamily(
            "stepwise_celery_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"]
        )
        per_queue = len(PRIORITY_STEPS)
        for i, queue in enumerate(queues):
            depths.add_metric([queue], sum(lengths[i * per_queue : (i + 1) * per_queue]))
        return depths


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_exposition() -> bytes:
    """Every Stepwise metric, in the text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    if metrics_multiprocess():
        MultiProcessCollector(registry)
    else:
        registry.register(_InProcess())
    registry.register(_Stored())
    return generate_latest(registry)
