"""SLOs with real data behind them, for tests: counters in the built-in store, then a rollup."""

from collections.abc import Callable
from datetime import datetime, timedelta

from signals.models import Sample
from signals.services import label_key_for
from signals.slo_spec import MetricRef, SLISpec, SLOSpec

DAY = 86400


def ratio_spec(name: str = "login-availability", **overrides) -> SLOSpec:
    indicator = SLISpec(
        kind="ratio",
        bad=MetricRef(metric="login_failures_total"),
        total=MetricRef(metric="login_requests_total"),
        counter=True,
    )
    values = {
        "name": name,
        "service": "login",
        "indicator": indicator,
        "objective": 0.999,
        "window_seconds": 30 * DAY,
    }
    return SLOSpec(**(values | overrides))


def counters(
    *,
    start: datetime,
    end: datetime,
    rps: float,
    error_ratio_at: Callable[[datetime], float],
    step: int = 10,
    requests_metric: str = "login_requests_total",
    failures_metric: str = "login_failures_total",
) -> None:
    """Two cumulative counters scraped every `step` seconds; `error_ratio_at(moment)` is the share
    of requests failing at that moment."""
    rows, requests, failures = [], 0.0, 0.0
    moment = start
    while moment < end:
        requests += rps * step
        failures += rps * step * error_ratio_at(moment)
        for name, value in ((requests_metric, requests), (failures_metric, failures)):
            rows.append(
                Sample(
                    name=name, labels={}, label_key=label_key_for({}), timestamp=moment, value=value
                )
            )
        moment += timedelta(seconds=step)
    Sample.objects.bulk_create(rows, batch_size=5_000)
