"""Queries over samples that went in through the ingest service (the one write path)."""

from datetime import UTC, datetime, timedelta

import pytest

from signals.selectors import QueryInvalid, Selector, metric_query
from signals.services import samples_ingest

pytestmark = pytest.mark.django_db
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def ingest(name: str, points: list[tuple[float, float]], **labels: str) -> None:
    """points: (seconds before AT, value)."""
    samples_ingest(
        payload={
            "samples": [
                {
                    "name": name,
                    "labels": labels,
                    "timestamp": (AT - timedelta(seconds=s)).isoformat(),
                    "value": v,
                }
                for s, v in points
            ]
        },
        now=AT,
    )


def query(name: str, aggregation: str, matchers=None, window: float = 60, **kwargs):
    return metric_query(
        name=name,
        matchers=matchers or {},
        window_seconds=window,
        aggregation=aggregation,
        at=AT,
        **kwargs,
    )


@pytest.fixture
def latency():
    ingest(
        "latency", [(50, 1.0), (40, 2.0), (30, 3.0), (20, 4.0)], region="eu-west", track="canary"
    )
    ingest("latency", [(50, 10.0), (10, 20.0)], region="us-east", track="baseline")
    ingest("latency", [(120, 1000.0)], region="eu-west", track="canary")  # outside a 60 s window
    ingest("other", [(10, 500.0)], region="eu-west", track="canary")


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("avg", 2.5),
        ("sum", 10.0),
        ("min", 1.0),
        ("max", 4.0),
        ("count", 4.0),
        ("p50", 2.5),
        ("p90", 3.7),
    ],
)
def test_metric_query__aggregation_over_matched_window__expected_number(
    latency, aggregation, expected
):
    result = query("latency", aggregation, {"region": "eu-west"})
    assert result.value == pytest.approx(expected)
    assert (result.samples, result.series, result.has_data) == (4, 1, True)


def test_metric_query__no_matchers__every_series_of_the_name(latency):
    result = query("latency", "sum")
    assert (result.value, result.series) == (40.0, 2)


@pytest.mark.parametrize(
    ("matchers", "expected_sum"),
    [
        ({"region!=": "eu-west"}, 30.0),
        ({"region=~": "eu-.*"}, 10.0),
        ({"region=~": "eu"}, None),  # anchored, as in Prometheus
        ({"region!~": "eu-.*", "track": "baseline"}, 30.0),
        ({"missing": ""}, 40.0),  # an absent label matches ""
        ({"region": "ap-south"}, None),
    ],
)
def test_metric_query__label_matchers__select_series(latency, matchers, expected_sum):
    assert query("latency", "sum", matchers).value == expected_sum


def test_metric_query__label_named_like_a_lookup__matched_as_a_label():
    ingest("jobs", [(5, 1.0)], contains="x")
    ingest("jobs", [(5, 2.0)], contains="y")
    assert query("jobs", "sum", {"contains": "y"}).value == 2.0


def test_metric_query__empty_window__no_data_not_zero(latency):
    result = query("latency", "sum", {"region": "eu-west"}, window=5)
    assert result.value is None and not result.has_data
    assert result.reason == "no data: no samples in the window"
    assert query("nothing", "count").value is None


def test_metric_query__window_excludes_its_start_and_includes_at():
    ingest("edge", [(60, 1.0), (0, 2.0)])
    assert query("edge", "sum", window=60).value == 2.0


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("p50", 50.5), ("p95", 95.05), ("p99", 99.01), ("p999", 99.901)],
)
def test_metric_query__percentiles__linear_interpolation(aggregation, expected):
    ingest("lat", [(50 - i * 0.25, float(i)) for i in range(1, 101)])
    assert query("lat", aggregation).value == pytest.approx(expected)


def test_metric_query__out_of_order_ingest__rate_uses_time_order():
    ingest("requests_total", [(10, 130.0), (50, 10.0), (30, 70.0)])  # 120 over 40 s
    assert query("requests_total", "rate").value == pytest.approx(3.0)


def test_metric_query__counter_reset__rate_counts_the_restart():
    # 100 -> 160 (+60), reset, 0 -> 20 (+20): 80 over 40 s
    ingest("requests_total", [(50, 100.0), (40, 160.0), (30, 0.0), (10, 20.0)])
    assert query("requests_total", "rate").value == pytest.approx(2.0)


def test_metric_query__rate_over_two_series__summed():
    ingest("requests_total", [(50, 0.0), (10, 40.0)], pod="a")  # 1/s
    ingest("requests_total", [(50, 0.0), (10, 80.0)], pod="b")  # 2/s
    assert query("requests_total", "rate").value == pytest.approx(3.0)


def test_metric_query__rate_with_one_sample__no_data_with_reason():
    ingest("requests_total", [(10, 5.0)])
    result = query("requests_total", "rate")
    assert result.value is None
    assert "rate needs two samples" in result.reason


def test_metric_query__ratio_of_rates__error_fraction():
    ingest("requests_total", [(50, 0.0), (10, 400.0)], code="200")
    ingest("requests_total", [(50, 0.0), (10, 100.0)], code="500")
    result = query(
        "requests_total",
        "ratio",
        {"code=~": "5.."},
        denominator=Selector("requests_total"),
        ratio_of="rate",
    )
    assert result.value == pytest.approx(0.2)


def test_metric_query__ratio_without_errors__zero_not_no_data():
    ingest("requests_total", [(50, 0.0), (10, 400.0)], code="200")
    result = query("errors_total", "ratio", denominator=Selector("requests_total"), ratio_of="rate")
    assert result.value == 0.0


@pytest.mark.parametrize(
    ("denominator_points", "reason"),
    [
        ([], "denominator no data: no samples in the window"),
        ([(10, 0.0)], "no data: denominator is 0"),
    ],
)
def test_metric_query__ratio_empty_or_zero_denominator__no_data(denominator_points, reason):
    ingest("errors", [(10, 1.0)])
    if denominator_points:
        ingest("total", denominator_points)
    result = query("errors", "ratio", denominator=Selector("total"))
    assert (result.value, result.reason) == (None, reason)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"aggregation": "median"}, "unknown aggregation 'median'"),
        ({"aggregation": "ratio"}, "a ratio needs a denominator series"),
        ({"aggregation": "sum", "matchers": {"code=~": "5(("}}, "bad regex"),
        ({"aggregation": "sum", "matchers": {"bad-label": "x"}}, "is not a label name"),
        ({"aggregation": "sum", "window_seconds": 0}, "the window must be between"),
    ],
)
def test_metric_query__invalid_query__refused_with_reason(kwargs, words):
    with pytest.raises(QueryInvalid, match=words):
        metric_query(**({"name": "x", "window_seconds": 60, "at": AT} | kwargs))
