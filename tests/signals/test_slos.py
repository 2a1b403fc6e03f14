"""SLO rollup, SLI, error budget, burn rates and the SRE Workbook's multiwindow alerts."""

from datetime import UTC, datetime, timedelta

import pytest

from signals.models import SLO, MetricSource, Sample, SLIBucket, SLOAlert
from signals.services import slo_save, slo_spec_of
from signals.slo_spec import MetricRef, SLISpec, SLOInvalid, SLOSpec
from signals.slos import (
    ALERT_RULES,
    slo_alerts_evaluate,
    slo_refresh,
    slo_rollup,
    slo_status,
    window_start,
)
from tests.slo_data import DAY, counters, ratio_spec

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)


def test_slo_rollup__counter_ratio__counts_increases_per_minute_and_running_totals():
    slo, _ = slo_save(spec=ratio_spec())
    start = NOW - timedelta(minutes=30)
    counters(start=start, end=NOW, rps=10, error_ratio_at=lambda m: 0.01)

    written = slo_rollup(slo_id=slo.pk, now=NOW)

    slo.refresh_from_db()
    buckets = list(slo.buckets.order_by("end"))
    assert written == len(buckets) == 30
    assert buckets[0].total == 0  # the first scraped minute has no earlier value to increase from
    assert slo.rolled_up_to == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    full = buckets[5]
    assert full.total == pytest.approx(600)
    assert full.good == pytest.approx(594)
    assert buckets[-1].cum_total == pytest.approx(sum(b.total for b in buckets))
    # A second run has nothing new to roll up.
    assert slo_rollup(slo_id=slo.pk, now=NOW) == 0


def test_slo_status__one_percent_errors__sli_budget_and_burn_rate():
    slo, _ = slo_save(spec=ratio_spec())
    counters(start=NOW - timedelta(hours=2), end=NOW, rps=10, error_ratio_at=lambda m: 0.01)
    slo_rollup(slo_id=slo.pk, now=NOW)

    status = slo_status(SLO.objects.get(pk=slo.pk))

    assert status.sli == pytest.approx(0.99)
    assert status.burn_rates["1h"] == pytest.approx(10.0)
    assert status.burn_rates["5m"] == pytest.approx(10.0)
    # 1 % bad against a 0.1 % budget: ten times the budget is spent.
    assert status.budget_consumed == pytest.approx(10.0)
    assert status.exhausted and status.state == "exhausted"


def test_slo_status__no_traffic__no_data_and_budget_untouched():
    slo, _ = slo_save(spec=ratio_spec())
    rows = [
        Sample(
            name=name, labels={}, label_key="{}", timestamp=NOW - timedelta(seconds=s), value=5.0
        )
        for s in range(600, 0, -10)
        for name in ("login_requests_total", "login_failures_total")
    ]
    Sample.objects.bulk_create(rows)
    slo_rollup(slo_id=slo.pk, now=NOW)

    status = slo_status(SLO.objects.get(pk=slo.pk))

    assert status.state == "no data"
    assert status.sli is None and status.budget_remaining is None
    assert status.burn_rates["5m"] is None
    assert not status.exhausted


def _workbook_alerts(error_ratio_at, *, hours: float = 7) -> set[tuple[str, int]]:
    slo, _ = slo_save(spec=ratio_spec())
    counters(
        start=NOW - timedelta(hours=hours), end=NOW, rps=20, error_ratio_at=error_ratio_at, step=30
    )
    slo_refresh(slo_id=slo.pk, now=NOW)
    return {
        (a.severity, a.long_window_seconds)
        for a in SLOAlert.objects.filter(slo=slo, resolved_at__isnull=True)
    }


def test_burn_rate_alert__workbook_page_rate_exceeded__pages_on_1h_and_5m():
    # 99.9 % over 30 days: the page threshold is 14.4x, i.e. an error ratio above 1.44 %.
    assert ALERT_RULES[0].threshold(30 * DAY) == pytest.approx(14.4)
    assert ALERT_RULES[1].threshold(30 * DAY) == pytest.approx(6.0)
    assert ALERT_RULES[2].threshold(30 * DAY) == pytest.approx(1.0)
    fired = _workbook_alerts(lambda m: 0.015)
    assert fired == {("page", 3600), ("page", 21600), ("ticket", 259200)}


def test_burn_rate_alert__just_below_14_4x__only_the_slower_rules_fire():
    fired = _workbook_alerts(lambda m: 0.0140)
    assert ("page", 3600) not in fired
    assert ("page", 21600) in fired  # 14x is above 6x over 6h and 30m


def test_burn_rate_alert__burst_over__short_window_keeps_the_page_quiet():
    # A burst of 20 % errors that stopped 10 minutes ago: the 1h window is still far above
    # 14.4x, but the 5m window is clean, so the page does not fire (the workbook's reset).
    ended = NOW - timedelta(minutes=10)
    burst = NOW - timedelta(minutes=25)
    fired = _workbook_alerts(lambda m: 0.2 if burst <= m < ended else 0.0, hours=2)
    assert ("page", 3600) not in fired


def test_burn_rate_alert__28_day_window__thresholds_scale():
    assert ALERT_RULES[0].threshold(28 * DAY) == pytest.approx(13.44)
    assert ALERT_RULES[1].threshold(28 * DAY) == pytest.approx(5.6)
    assert ALERT_RULES[2].threshold(28 * DAY) == pytest.approx(0.9333, abs=1e-4)


def test_burn_rate_alert__low_traffic__needs_minimum_events():
    slo, _ = slo_save(spec=ratio_spec(alert_min_events=10_000))
    counters(
        start=NOW - timedelta(hours=2), end=NOW, rps=0.5, error_ratio_at=lambda m: 0.5, step=30
    )
    slo_refresh(slo_id=slo.pk, now=NOW)
    assert not SLOAlert.objects.filter(slo=slo).exists()


def test_burn_rate_alert__errors_stop__alert_resolves():
    slo, _ = slo_save(spec=ratio_spec())
    counters(
        start=NOW - timedelta(hours=2), end=NOW, rps=20, error_ratio_at=lambda m: 0.05, step=30
    )
    slo_refresh(slo_id=slo.pk, now=NOW)
    assert SLOAlert.objects.filter(slo=slo, severity="page", long_window_seconds=3600).exists()

    later = NOW + timedelta(minutes=90)
    counters(start=NOW, end=later, rps=20, error_ratio_at=lambda m: 0.0, step=30)
    # The counters restart from 0 in the second call: the rollup reads that as a reset.
    slo_refresh(slo_id=slo.pk, now=later)

    alert = SLOAlert.objects.get(slo=slo, long_window_seconds=3600)
    assert alert.resolved_at is not None
    assert alert.peak_burn_rate >= alert.long_burn_rate


def test_burn_rate_alert__source_goes_silent__page_stays_open_until_data_resolves_it():
    slo, _ = slo_save(spec=ratio_spec())
    counters(
        start=NOW - timedelta(hours=2), end=NOW, rps=20, error_ratio_at=lambda m: 0.05, step=30
    )
    slo_refresh(slo_id=slo.pk, now=NOW)

    # The exporter dies: an hour of nothing. The burn windows empty, but no data is not
    # "no longer burning", so the page stays open and the SLO says it is silent.
    silent_until = NOW + timedelta(hours=1)
    slo_refresh(slo_id=slo.pk, now=silent_until)
    page = SLOAlert.objects.get(slo=slo, long_window_seconds=3600)
    assert page.resolved_at is None
    status = slo_status(SLO.objects.get(pk=slo.pk))
    assert status.silent_for == "5m"
    assert page.pk in [a.pk for a in status.open_alerts]

    # Clean traffic returns: data, not silence, resolves it.
    back = silent_until + timedelta(minutes=90)
    counters(start=silent_until, end=back, rps=20, error_ratio_at=lambda m: 0.0, step=30)
    slo_refresh(slo_id=slo.pk, now=back)
    page.refresh_from_db()
    assert page.resolved_at is not None
    assert slo_status(SLO.objects.get(pk=slo.pk)).silent_for is None


def test_slo_rollup__threshold_timeslices__a_slice_is_good_when_enough_samples_pass():
    spec = SLOSpec(
        name="login-latency",
        service="login",
        indicator=SLISpec(
            kind="threshold", metric=MetricRef(metric="login_duration_ms", aggregation="p99")
        ),
        objective=0.99,
        window_seconds=7 * DAY,
        budgeting="Timeslices",
        time_slice_target=0.95,
        threshold_op="lt",
        threshold=300.0,
    )
    slo, _ = slo_save(spec=spec)
    start = NOW.replace(second=0) - timedelta(minutes=10)
    rows = []
    for minute in range(10):
        slow = 10 if minute == 3 else 0  # one minute with 10 % slow logins fails its slice
        for i in range(100):
            value = 900.0 if i < slow else 120.0
            at = start + timedelta(minutes=minute, seconds=i * 0.5)
            rows.append(
                Sample(
                    name="login_duration_ms", labels={}, label_key="{}", timestamp=at, value=value
                )
            )
    Sample.objects.bulk_create(rows)

    slo_rollup(slo_id=slo.pk, now=NOW)

    buckets = list(slo.buckets.order_by("end"))
    assert [b.good for b in buckets] == [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]
    assert buckets[3].p99 == pytest.approx(900.0)
    assert buckets[0].value == pytest.approx(120.0)
    assert slo_status(SLO.objects.get(pk=slo.pk)).sli == pytest.approx(0.9)


def test_slo_save__changed_indicator__restarts_the_rollup():
    slo, _ = slo_save(spec=ratio_spec())
    counters(start=NOW - timedelta(minutes=10), end=NOW, rps=10, error_ratio_at=lambda m: 0.0)
    slo_rollup(slo_id=slo.pk, now=NOW)
    assert slo.buckets.exists()

    changed = ratio_spec(objective=0.99)
    slo, outcome = slo_save(spec=changed)
    assert outcome == "updated" and slo.buckets.exists()  # the objective does not change counts

    other = ratio_spec(
        indicator=SLISpec(
            kind="ratio",
            good=MetricRef(metric="login_requests_total", matchers={"code": "200"}),
            total=MetricRef(metric="login_requests_total"),
        )
    )
    slo, outcome = slo_save(spec=other)
    assert outcome == "updated"
    assert not slo.buckets.exists() and slo.rolled_up_to is None
    assert slo_spec_of(slo) == other


def test_slo_save__unknown_prometheus_source__refused_by_path():
    MetricSource.objects.create(name="store", kind="builtin")
    spec = ratio_spec(
        indicator=SLISpec(
            kind="ratio", source="prom-main", bad=MetricRef(query="x"), total=MetricRef(query="y")
        )
    )
    with pytest.raises(SLOInvalid) as refused:
        slo_save(spec=spec)
    assert refused.value.problems[0][0] == "source"
    assert "no metric source named 'prom-main'" in refused.value.problems[0][1]
    assert not SLO.objects.exists()


def test_window_start__calendar_month__starts_at_the_period():
    slo, _ = slo_save(
        spec=ratio_spec(
            rolling=False,
            window_text="1M",
            calendar_start="2026-01-01 00:00:00",
            calendar_timezone="UTC",
        )
    )
    assert window_start(slo, NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert window_start(slo, datetime(2026, 3, 31, 23, 0, tzinfo=UTC)) == datetime(
        2026, 3, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("anchor", "window", "at", "start"),
    [
        # Earlier in the month than the anchor's day: the period began last month.
        (
            "2026-01-15 00:00:00",
            "1M",
            datetime(2026, 3, 10, tzinfo=UTC),
            datetime(2026, 2, 15, tzinfo=UTC),
        ),
        # The 31st in a short month is its last day.
        (
            "2026-01-31 00:00:00",
            "1M",
            datetime(2026, 2, 10, tzinfo=UTC),
            datetime(2026, 1, 31, tzinfo=UTC),
        ),
        (
            "2026-01-31 00:00:00",
            "1M",
            datetime(2026, 3, 1, tzinfo=UTC),
            datetime(2026, 2, 28, tzinfo=UTC),
        ),
        # Same day, earlier hour than the anchor's time.
        (
            "2026-01-01 06:00:00",
            "1M",
            datetime(2026, 3, 1, 3, 0, tzinfo=UTC),
            datetime(2026, 2, 1, 6, 0, tzinfo=UTC),
        ),
        # Quarters from January, read in May.
        (
            "2026-01-01 00:00:00",
            "3M",
            datetime(2026, 5, 20, tzinfo=UTC),
            datetime(2026, 4, 1, tzinfo=UTC),
        ),
        (
            "2026-01-10 00:00:00",
            "3M",
            datetime(2026, 4, 5, tzinfo=UTC),
            datetime(2026, 1, 10, tzinfo=UTC),
        ),
    ],
)
def test_window_start__calendar_months__the_period_that_holds_the_moment(anchor, window, at, start):
    slo, _ = slo_save(
        spec=ratio_spec(
            rolling=False, window_text=window, calendar_start=anchor, calendar_timezone="UTC"
        )
    )
    assert window_start(slo, at) == start


def test_slo_alerts_evaluate__never_rolled_up__nothing():
    slo, _ = slo_save(spec=ratio_spec())
    assert slo_alerts_evaluate(slo_id=slo.pk) == []
    assert not SLIBucket.objects.exists()
