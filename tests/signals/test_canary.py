import json
import math
from html import unescape

import numpy as np
import pytest

from rollouts.charts import canary_chart
from signals.canary import (
    CanaryConfigInvalid,
    CanaryJudgement,
    CanaryMetric,
    Direction,
    canary_judge,
)


def latency(seed: int, *, median: float = 100.0, n: int = 400) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(median), 0.25, n)


def steady(seed: int, n: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).normal(50.0, 5.0, n)


def verdict_of(judgement: CanaryJudgement, name: str):
    return next(m for m in judgement.metrics if m.name == name)


def test_canary_judge__identical_distributions__pass_with_score_100():
    judgement = canary_judge(
        metrics=[
            (CanaryMetric("p99"), latency(1), latency(2)),
            (CanaryMetric("cpu", direction=Direction.EITHER), steady(3), steady(4)),
        ]
    )

    assert judgement.score == 100.0
    assert judgement.verdict == "pass"
    assert [m.classification for m in judgement.metrics] == ["pass", "pass"]
    assert not any(m.failed for m in judgement.metrics)


def test_canary_judge__latency_up_30_percent_bad_increase__high_failed_and_scored():
    judgement = canary_judge(
        metrics=[
            (CanaryMetric("p99", direction=Direction.INCREASE), latency(1), latency(2, median=130)),
            (CanaryMetric("cpu"), steady(3), steady(4)),
        ]
    )

    p99 = verdict_of(judgement, "p99")
    assert p99.classification == "high"
    assert p99.failed
    assert p99.p_value is not None and p99.p_value < 0.02
    assert p99.relative_shift == pytest.approx(0.30, abs=0.05)
    assert p99.reason.startswith("canary p99 is ") and "higher than baseline" in p99.reason
    assert judgement.score == pytest.approx(50.0)
    assert judgement.verdict == "fail"
    assert "p99" in judgement.reason


def test_canary_judge__latency_up_30_percent_bad_decrease__high_not_failed():
    judgement = canary_judge(
        metrics=[
            (CanaryMetric("p99", direction=Direction.DECREASE), latency(1), latency(2, median=130)),
            (CanaryMetric("cpu"), steady(3), steady(4)),
        ]
    )

    p99 = verdict_of(judgement, "p99")
    assert p99.classification == "high"
    assert not p99.failed
    assert "only a decrease counts" in p99.reason
    assert judgement.score == 100.0
    assert judgement.verdict == "pass"


@pytest.mark.parametrize(
    ("direction", "canary_median", "failed"),
    [
        (Direction.EITHER, 130.0, True),
        (Direction.EITHER, 70.0, True),
        (Direction.INCREASE, 70.0, False),
        (Direction.DECREASE, 70.0, True),
    ],
)
def test_canary_judge__direction__decides_which_shift_fails(direction, canary_median, failed):
    judgement = canary_judge(
        metrics=[
            (
                CanaryMetric("p99", direction=direction),
                latency(1),
                latency(2, median=canary_median),
            )
        ]
    )

    p99 = judgement.metrics[0]
    assert p99.classification == ("high" if canary_median > 100 else "low")
    assert p99.failed is failed
    assert judgement.verdict == ("fail" if failed else "pass")


def test_canary_judge__significant_shift_within_effect_size__pass():
    baseline, canary = latency(1, n=5_000), latency(2, median=103, n=5_000)
    strict = canary_judge(metrics=[(CanaryMetric("p99"), baseline, canary)])
    tolerant = canary_judge(metrics=[(CanaryMetric("p99", effect_size=0.05), baseline, canary)])

    # the difference is real (and fails without a tolerance), only small enough to be allowed
    assert strict.metrics[0].classification == "high"
    p99 = tolerant.metrics[0]
    assert p99.p_value is not None and p99.p_value < 0.02
    assert p99.classification == "pass"
    assert not p99.failed
    assert "within the 5 % tolerance" in p99.reason
    assert tolerant.score == 100.0


def test_canary_judge__critical_metric_fails__score_0_and_fail():
    others = [(CanaryMetric(name), steady(i), steady(i + 10)) for i, name in enumerate("abc")]
    shifted = (latency(1), latency(2, median=130))
    normal = canary_judge(metrics=[(CanaryMetric("p99"), *shifted), *others])
    critical = canary_judge(metrics=[(CanaryMetric("p99", critical=True), *shifted), *others])

    assert normal.score == pytest.approx(75.0)
    assert critical.score == 0.0
    assert critical.verdict == "fail"
    assert "critical" in critical.reason and "p99" in critical.reason


def test_canary_judge__half_the_metrics_without_data__score_0():
    judgement = canary_judge(
        metrics=[
            (CanaryMetric("p99"), latency(1), latency(2)),
            (CanaryMetric("errors"), [0.1, 0.2], [0.1, 0.3, 0.2]),
        ]
    )

    assert verdict_of(judgement, "p99").classification == "pass"
    errors = verdict_of(judgement, "errors")
    assert errors.classification == "nodata"
    assert not errors.failed
    assert judgement.score == 0.0
    assert judgement.verdict == "fail"
    assert "1 of 2 metrics have no data" in judgement.reason


def test_canary_judge__nodata_metric_below_half__left_out_of_score():
    judgement = canary_judge(
        metrics=[
            (CanaryMetric("p99"), latency(1), latency(2)),
            (CanaryMetric("cpu"), steady(3), steady(4)),
            (CanaryMetric("errors"), [], []),
        ]
    )

    assert verdict_of(judgement, "errors").classification == "nodata"
    assert judgement.score == 100.0
    assert judgement.verdict == "pass"


def test_canary_judge__must_have_data_without_data__failed():
    judgement = canary_judge(
        metrics=[
            (CanaryMetric("p99"), latency(1), latency(2)),
            (CanaryMetric("cpu"), steady(3), steady(4)),
            (CanaryMetric("errors", must_have_data=True), [0.1] * 10, []),
        ]
    )

    errors = verdict_of(judgement, "errors")
    assert errors.classification == "nodata"
    assert errors.failed
    assert "must have data" in errors.reason
    assert judgement.score == pytest.approx(200 / 3)
    assert judgement.verdict == "fail"


def test_canary_judge__score_between_thresholds__marginal():
    metrics = [
        (CanaryMetric("p99", weight=1.0), latency(1), latency(2, median=130)),
        (CanaryMetric("cpu", weight=4.0), steady(3), steady(4)),
    ]

    judgement = canary_judge(metrics=metrics)

    assert judgement.score == pytest.approx(80.0)
    assert judgement.verdict == "marginal"
    assert canary_judge(metrics=metrics, marginal_score=85.0).verdict == "fail"
    assert canary_judge(metrics=metrics, pass_score=80.0).verdict == "pass"


def test_canary_judge__nan_and_inf_values__dropped_and_reported():
    baseline = np.append(steady(3), [np.nan, np.inf])
    canary = np.append(steady(4), [-np.inf])

    judgement = canary_judge(metrics=[(CanaryMetric("cpu"), baseline, canary)])

    cpu = judgement.metrics[0]
    assert (cpu.baseline_count, cpu.canary_count) == (200, 200)
    assert cpu.classification == "pass"
    assert "3 NaN/Inf values dropped" in cpu.reason


def test_canary_judge__baseline_median_zero__absolute_shift_compared():
    baseline = [0.0] * 150 + [1.0] * 50
    canary = [0.0] * 50 + [2.0] * 150

    judgement = canary_judge(
        metrics=[(CanaryMetric("queue_depth", effect_size=0.5), baseline, canary)]
    )

    queue = judgement.metrics[0]
    assert queue.relative_shift is None
    assert queue.shift == pytest.approx(2.0)
    assert queue.classification == "high"
    assert "shift is absolute" in queue.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": []}, "at least one metric"),
        ({"confidence": 1.0}, "confidence must be between 0 and 1"),
        ({"confidence": 0.0}, "confidence must be between 0 and 1"),
        ({"marginal_score": 96.0}, "0 ≤ marginal ≤ pass ≤ 100"),
        ({"pass_score": 101.0}, "0 ≤ marginal ≤ pass ≤ 100"),
        ({"marginal_score": -1.0}, "0 ≤ marginal ≤ pass ≤ 100"),
        ({"min_samples": 0}, "min_samples must be at least 1"),
        (
            {"metrics": [(CanaryMetric("p99", effect_size=-0.1), [1.0], [1.0])]},
            "'p99': effect_size must be 0 or more",
        ),
        (
            {"metrics": [(CanaryMetric("p99", weight=0.0), [1.0], [1.0])]},
            "'p99': weight must be a positive number",
        ),
        (
            {"metrics": [(CanaryMetric("p99", direction="up"), [1.0], [1.0])]},
            "'p99': direction must be one of increase, decrease, either",
        ),
        (
            {"metrics": [(CanaryMetric("p99"), [1.0], [1.0])] * 2},
            "metric name 'p99' is used more than once",
        ),
    ],
)
def test_canary_judge__invalid_config__refused_with_message(kwargs, message):
    arguments = {"metrics": [(CanaryMetric("p99"), [1.0], [1.0])], **kwargs}

    with pytest.raises(CanaryConfigInvalid) as caught:
        canary_judge(**arguments)

    assert message in str(caught.value)


def test_canary_judgement__to_dict_from_dict__round_trip_through_json():
    judgement = canary_judge(
        metrics=[
            (CanaryMetric("p99"), latency(1), latency(2, median=130)),
            (CanaryMetric("cpu"), steady(3), steady(4)),
            (CanaryMetric("errors", must_have_data=True), [], [1.0]),
        ]
    )

    stored = json.loads(json.dumps(judgement.to_dict(), allow_nan=False))

    assert CanaryJudgement.from_dict(stored) == judgement
    assert stored["metrics"][2]["p_value"] is None


def test_canary_judge__10k_vs_10k_samples__judged():
    baseline, canary = latency(1, n=10_000), latency(2, median=130, n=10_000)

    judgement = canary_judge(metrics=[(CanaryMetric("p99"), baseline, canary)])

    p99 = judgement.metrics[0]
    assert (p99.baseline_count, p99.canary_count) == (10_000, 10_000)
    assert p99.classification == "high"
    assert p99.relative_shift == pytest.approx(0.30, abs=0.03)
    assert math.isfinite(judgement.score)


def test_canary_chart__two_metrics__names_and_verdict_rendered():
    distributions = {
        "p99": (latency(1), latency(2, median=130)),
        "cpu_seconds": (steady(3), steady(4)),
    }
    judgement = canary_judge(
        metrics=[
            (CanaryMetric("p99"), *distributions["p99"]),
            (CanaryMetric("cpu_seconds"), *distributions["cpu_seconds"]),
        ]
    )

    html = canary_chart(judgement, distributions)

    assert html.lstrip().startswith("<div")
    assert "p99" in html and "cpu_seconds" in html
    assert "FAIL" in html  # the figure title: score 50 is a fail
    assert "HIGH" in html and "PASS" in html  # each panel's own verdict
    # The figure travels as an attribute (rollouts/charts.py figure_html): read it unescaped.
    assert unescape(html).count('"line":{"color":"#b42318"}') == 1  # only the failed canary is red
