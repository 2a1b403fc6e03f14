"""SLOs read from Prometheus: the range query each rollup sends, and what it makes of the answer."""

from datetime import UTC, datetime, timedelta

import pytest

from signals.models import SLO, MetricSource
from signals.prometheus import PrometheusError
from signals.services import slo_save
from signals.slo_spec import MetricRef, SLISpec, SLOSpec
from signals.slos import slo_rollup, slo_status

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
CLOSED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _matrix(points: list[tuple[datetime, float]]) -> dict:
    values = [[moment.timestamp(), str(value)] for moment, value in points]
    return {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": {}, "values": values}]},
    }


def _threshold_slo(url: str) -> SLO:
    MetricSource.objects.create(name="prom", kind="prometheus", url=url)
    spec = SLOSpec(
        name="checkout-latency",
        service="checkout",
        indicator=SLISpec(
            kind="threshold",
            source="prom",
            metric=MetricRef(query="histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"),
        ),
        objective=0.99,
        window_seconds=3600,
        budgeting="Timeslices",
        threshold_op="lt",
        threshold=0.3,
    )
    return slo_save(spec=spec)[0]


def test_slo_rollup__prometheus_threshold__one_slice_per_minute_end(fake_api):
    slo = _threshold_slo(fake_api.url)
    minutes = [CLOSED - timedelta(minutes=m) for m in range(10, 0, -1)]
    fake_api.answer(200, _matrix([(m, 0.9 if i == 3 else 0.1) for i, m in enumerate(minutes)]))

    slo_rollup(slo_id=slo.pk, now=NOW)

    query = fake_api.requests[-1]
    assert query["path"] == "/api/v1/query_range"
    assert query["params"]["step"] == ["60"]
    assert query["params"]["query"] == [slo.indicator["metric"]["query"]]
    buckets = {b.end: b for b in slo.buckets.all()}
    assert buckets[minutes[3]].good == 0 and buckets[minutes[3]].value == pytest.approx(0.9)
    assert buckets[minutes[4]].good == 1
    assert slo_status(SLO.objects.get(pk=slo.pk)).sli == pytest.approx(9 / 10)


def test_slo_rollup__prometheus_counter_ratio__increase_per_minute_query(fake_api):
    MetricSource.objects.create(name="prom", kind="prometheus", url=fake_api.url)
    spec = SLOSpec(
        name="checkout-availability",
        service="checkout",
        indicator=SLISpec(
            kind="ratio",
            source="prom",
            good=MetricRef(query='http_requests_total{code!~"5.."}'),
            total=MetricRef(query="http_requests_total"),
        ),
        objective=0.999,
        window_seconds=3600,
    )
    slo, _ = slo_save(spec=spec)
    fake_api.answer(200, _matrix([(CLOSED - timedelta(minutes=1), 120.0)]))

    slo_rollup(slo_id=slo.pk, now=NOW)

    sent = sorted(r["params"]["query"][0] for r in fake_api.requests)
    assert sent == [
        "sum(increase((http_requests_total)[1m:15s]))",
        'sum(increase((http_requests_total{code!~"5.."})[1m:15s]))',
    ]
    assert slo.buckets.get(end=CLOSED - timedelta(minutes=1)).total == pytest.approx(120.0)


def test_slo_rollup__prometheus_down__raises_and_writes_nothing(fake_api):
    slo = _threshold_slo(fake_api.url)
    fake_api.answer(503, "unavailable", content_type="text/plain")

    with pytest.raises(PrometheusError):
        slo_rollup(slo_id=slo.pk, now=NOW)

    slo.refresh_from_db()
    assert slo.rolled_up_to is None and not slo.buckets.exists()
