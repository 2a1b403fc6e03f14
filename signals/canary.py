"""Kayenta-style canary judgement: canary vs baseline samples, per metric, then one weighted score.

Each input is `(metric, baseline_values, canary_values)`. Per metric:

- NaN and ±Inf values are dropped first (the reason says how many). Fewer than `min_samples`
  values left on either side is "nodata".
- A two-sided Mann-Whitney U test gives p; the difference is significant when p < 1 - confidence.
- The shift is the Hodges-Lehmann estimate (median of all pairwise canary - baseline differences),
  relative to |baseline median|. When the baseline median is 0 a relative shift means nothing, so
  the absolute shift is compared with `effect_size` instead (and the reason says so).
- Significant and above +effect_size is "high", below -effect_size is "low", anything else "pass".
  "high" fails an `increase` or `either` metric, "low" fails a `decrease` or `either` metric; a
  significant shift in the harmless direction does not fail. "nodata" fails only a
  `must_have_data` metric; otherwise it is left out of the score.

Score (0-100): weight of non-failed metrics / weight of metrics counted, where a metric is counted
when it has data or is a failed must-have. It is 0 when half or more of the metrics (by count) have
no data, or when any critical metric failed. Verdict: score ≥ pass_score is "pass", ≥ marginal_score
"marginal", else "fail".
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

# The pairwise differences behind Hodges-Lehmann grow as n x m; 2,000 quantile-spaced values per
# side (4 M differences) keep a 10k-vs-10k judgement well under a second and move the estimate by
# far less than any effect size worth configuring.
_HODGES_LEHMANN_CAP = 2_000


class Direction(StrEnum):
    INCREASE = "increase"  # an increase is bad
    DECREASE = "decrease"  # a decrease is bad
    EITHER = "either"


class CanaryConfigInvalid(ValueError):
    """A canary configuration that cannot be judged; the message names the problem."""


@dataclass(frozen=True)
class CanaryMetric:
    name: str
    direction: Direction = Direction.INCREASE
    effect_size: float = 0.0  # tolerated relative shift (0.05 = 5 %) before a difference counts
    critical: bool = False  # failing it makes the whole score 0
    must_have_data: bool = False  # no data fails it; otherwise no data leaves it out of the score
    weight: float = 1.0


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    classification: str  # "pass" | "high" | "low" | "nodata"
    failed: bool
    p_value: float | None
    canary_median: float | None
    baseline_median: float | None
    shift: float | None  # Hodges-Lehmann estimate of canary - baseline, in the metric's unit
    relative_shift: float | None  # shift / |baseline median|; None when the baseline median is 0
    canary_count: int
    baseline_count: int
    reason: str


@dataclass(frozen=True)
class CanaryJudgement:
    score: float
    verdict: str  # "pass" | "marginal" | "fail"
    metrics: tuple[MetricVerdict, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "verdict": self.verdict,
            "reason": self.reason,
            "metrics": [asdict(m) for m in self.metrics],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CanaryJudgement":
        return cls(
            score=float(data["score"]),
            verdict=data["verdict"],
            reason=data["reason"],
            metrics=tuple(MetricVerdict(**m) for m in data["metrics"]),
        )


def canary_judge(
    *,
    metrics: Sequence[tuple[CanaryMetric, Sequence[float], Sequence[float]]],
    confidence: float = 0.98,
    pass_score: float = 95.0,
    marginal_score: float = 75.0,
    min_samples: int = 3,
) -> CanaryJudgement:
    """Judge a canary: `metrics` holds `(metric, baseline_values, canary_values)` triples."""
    _validate(
        metrics=[m for m, _, _ in metrics],
        confidence=confidence,
        pass_score=pass_score,
        marginal_score=marginal_score,
        min_samples=min_samples,
    )
    alpha = 1.0 - confidence
    verdicts = tuple(
        _metric_judge(
            metric=metric,
            baseline=baseline,
            canary=canary,
            alpha=alpha,
            min_samples=min_samples,
        )
        for metric, baseline, canary in metrics
    )
    weights = {m.name: float(m.weight) for m, _, _ in metrics}
    critical = {m.name for m, _, _ in metrics if m.critical}

    nodata = [v for v in verdicts if v.classification == "nodata"]
    failed = [v for v in verdicts if v.failed]
    counted = [v for v in verdicts if v.classification != "nodata" or v.failed]
    failed_critical = [v for v in failed if v.name in critical]
    if failed_critical:
        score = 0.0
        reason = "score 0: critical " + "; ".join(
            f"metric {v.name} failed ({v.reason})" for v in failed_critical
        )
    elif 2 * len(nodata) >= len(verdicts):
        score = 0.0
        reason = (
            f"score 0: {len(nodata)} of {len(verdicts)} metrics have no data "
            f"({', '.join(v.name for v in nodata)}); half or more without data scores 0"
        )
    else:
        total = sum(weights[v.name] for v in counted)
        score = 100.0 * sum(weights[v.name] for v in counted if not v.failed) / total
        reason = f"score {_number(score)}"
        if failed:
            reason += f": {len(failed)} of {len(counted)} metrics failed — " + "; ".join(
                v.reason for v in failed
            )
        else:
            reason += f": all {len(counted)} metrics with data pass"
        if nodata:
            reason += f" (left out for no data: {', '.join(v.name for v in nodata)})"
    if score >= pass_score:
        verdict = "pass"
    elif score >= marginal_score:
        verdict = "marginal"
    else:
        verdict = "fail"
    reason += f"; {verdict} (pass ≥ {_number(pass_score)}, marginal ≥ {_number(marginal_score)})"
    return CanaryJudgement(score=score, verdict=verdict, metrics=verdicts, reason=reason)


def _validate(
    *,
    metrics: list[CanaryMetric],
    confidence: float,
    pass_score: float,
    marginal_score: float,
    min_samples: int,
) -> None:
    if not metrics:
        raise CanaryConfigInvalid("a canary judgement needs at least one metric")
    if not 0.0 < confidence < 1.0:
        raise CanaryConfigInvalid(
            f"confidence must be between 0 and 1 (exclusive), not {confidence}"
        )
    if not 0.0 <= marginal_score <= pass_score <= 100.0:
        raise CanaryConfigInvalid(
            "score thresholds must satisfy 0 ≤ marginal ≤ pass ≤ 100, "
            f"not marginal {marginal_score} and pass {pass_score}"
        )
    if min_samples < 1:
        raise CanaryConfigInvalid(f"min_samples must be at least 1, not {min_samples}")
    seen: set[str] = set()
    for metric in metrics:
        if metric.name in seen:
            raise CanaryConfigInvalid(f"metric name {metric.name!r} is used more than once")
        seen.add(metric.name)
        if metric.direction not in tuple(Direction):
            raise CanaryConfigInvalid(
                f"metric {metric.name!r}: direction must be one of "
                f"{', '.join(Direction)}, not {metric.direction!r}"
            )
        if not metric.effect_size >= 0.0:  # also refuses NaN
            raise CanaryConfigInvalid(
                f"metric {metric.name!r}: effect_size must be 0 or more, not {metric.effect_size}"
            )
        if not (metric.weight > 0.0 and math.isfinite(metric.weight)):
            raise CanaryConfigInvalid(
                f"metric {metric.name!r}: weight must be a positive number, not {metric.weight}"
            )


def _metric_judge(
    *,
    metric: CanaryMetric,
    baseline: Sequence[float],
    canary: Sequence[float],
    alpha: float,
    min_samples: int,
) -> MetricVerdict:
    base_all = np.asarray(baseline, dtype=float).ravel()
    can_all = np.asarray(canary, dtype=float).ravel()
    base, can = base_all[np.isfinite(base_all)], can_all[np.isfinite(can_all)]
    dropped = (base_all.size - base.size) + (can_all.size - can.size)
    note = f" ({dropped} NaN/Inf value{'s' if dropped != 1 else ''} dropped)" if dropped else ""
    base_median = float(np.median(base)) if base.size else None
    can_median = float(np.median(can)) if can.size else None

    if base.size < min_samples or can.size < min_samples:
        failed = metric.must_have_data
        reason = (
            f"{metric.name} has {can.size} canary and {base.size} baseline values, "
            f"fewer than the {min_samples} needed on each side"
            + ("; it must have data, so it fails" if failed else "")
            + note
        )
        return MetricVerdict(
            name=metric.name,
            classification="nodata",
            failed=failed,
            p_value=None,
            canary_median=can_median,
            baseline_median=base_median,
            shift=None,
            relative_shift=None,
            canary_count=int(can.size),
            baseline_count=int(base.size),
            reason=reason,
        )

    p = float(mannwhitneyu(can, base, alternative="two-sided", method="auto").pvalue)
    if math.isnan(p):  # no variation at all on both sides: no evidence of a difference
        p = 1.0
    shift = _hodges_lehmann(canary=can, baseline=base)
    base_median, can_median = float(np.median(base)), float(np.median(can))
    relative = shift / abs(base_median) if base_median != 0 else None
    compared = relative if relative is not None else shift

    if p < alpha and compared > metric.effect_size:
        classification = "high"
    elif p < alpha and compared < -metric.effect_size:
        classification = "low"
    else:
        classification = "pass"
    direction = Direction(metric.direction)
    failed = (classification == "high" and direction != Direction.DECREASE) or (
        classification == "low" and direction != Direction.INCREASE
    )

    higher = "higher" if shift > 0 else "lower"
    if relative is not None:
        size, tolerance, absolute = (
            f"{_percent(abs(relative))} {higher}",
            _percent(metric.effect_size),
            "",
        )
    else:
        size, tolerance = f"{abs(shift):.3g} {higher}", f"{metric.effect_size:g}"
        absolute = "; the baseline median is 0, so the shift is absolute"
    p_text = _p_value(p)
    if classification == "pass" and p >= alpha:
        reason = f"no significant difference between canary and baseline {metric.name} ({p_text})"
    elif classification == "pass":
        reason = f"canary {metric.name} is {size} than baseline, within the {tolerance} tolerance ({p_text}){absolute}"
    else:
        reason = f"canary {metric.name} is {size} than baseline ({p_text}){absolute}"
        if not failed:
            harmful = "an increase" if direction == Direction.INCREASE else "a decrease"
            reason += f"; only {harmful} counts against it"
    return MetricVerdict(
        name=metric.name,
        classification=classification,
        failed=failed,
        p_value=p,
        canary_median=can_median,
        baseline_median=base_median,
        shift=shift,
        relative_shift=relative,
        canary_count=int(can.size),
        baseline_count=int(base.size),
        reason=reason + note,
    )


def _hodges_lehmann(*, canary: np.ndarray, baseline: np.ndarray) -> float:
    """Median of all pairwise canary - baseline differences, on at most `_HODGES_LEHMANN_CAP`
    quantile-spaced values per side (deterministic, and keeps each side's shape)."""
    can, base = _quantile_subsample(canary), _quantile_subsample(baseline)
    return float(np.median(can[:, None] - base[None, :]))


def _quantile_subsample(values: np.ndarray) -> np.ndarray:
    if values.size <= _HODGES_LEHMANN_CAP:
        return values
    ordered = np.sort(values)
    return ordered[np.linspace(0, ordered.size - 1, _HODGES_LEHMANN_CAP).round().astype(int)]


def _percent(fraction: float) -> str:
    value = 100.0 * fraction
    return (_number(value) if value < 10 else f"{value:.0f}") + " %"


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _p_value(p: float) -> str:
    return "p < 0.0001" if p < 0.0001 else f"p = {p:.2g}"
