"""Measurements: one named number read from a metric source over a window.

A measurement is read on the canary and, when it declares a baseline, on the baseline: the same
query with other label matchers (built-in store) or another PromQL expression (Prometheus), so a
condition can say `p99 <= baseline.p99 * 1.05`. A `{target}` in matchers or PromQL is replaced by
the target's name, which is how one convergence predicate is checked per region.
"""

import math
import random
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from signals.models import MetricSource
from signals.prometheus import PrometheusError, prometheus_instant, prometheus_range
from signals.selectors import (
    AGGREGATIONS,
    MAX_WINDOW_SECONDS,
    RATIO_OF,
    QueryInvalid,
    Selector,
    matchers_text,
    metric_query,
    metric_values,
)
from signals.services import METRIC_NAME

BUILTIN = "builtin"
NAME = re.compile(r"[a-z_][a-z0-9_]*")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_FIELDS = {
    "source",
    "window",
    "metric",
    "aggregation",
    "matchers",
    "baseline_matchers",
    "ratio_of",
    "denominator",
    "query",
    "baseline_query",
}
TARGET_PLACEHOLDER = "{target}"
# Range queries for canary distributions: one point per this many seconds of the window.
DISTRIBUTION_STEP_SECONDS = 15.0


class MeasurementInvalid(ValueError):
    """A measurement that cannot be saved; `field` names where the problem is."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def duration_seconds(value: Any, *, field: str = "window") -> float:
    """Seconds from a number of seconds or a duration like `30s`, `5m`, `1h`, `1d`."""
    if isinstance(value, bool):
        raise MeasurementInvalid(f"{field} must be a duration like 30s or 5m", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise MeasurementInvalid(
            f"{field} must be a duration like 30s, 5m or 1h (got {value!r})", field=field
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise MeasurementInvalid(f"{field} must be longer than 0 (got {value!r})", field=field)
    return seconds


def duration_spec(seconds: float) -> str:
    """Seconds in the notation specs are written in: 300 -> "5m", 90 -> "90s"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _matchers(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MeasurementInvalid(
            f"{field} must map label names to strings, e.g. {{track: canary}}", field=field
        )
    return dict(value)


@dataclass(frozen=True)
class Reading:
    """One number, or why there is none: `error` (the source or query failed, never a pass) or,
    when not an error, not enough data yet (inconclusive)."""

    value: float | None
    query: str
    problem: str = ""
    error: bool = False
    retryable: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"value": self.value, "query": self.query}
        if self.problem:
            data |= {"problem": self.problem, "error": self.error}
        return data


@dataclass(frozen=True)
class MeasurementSpec:
    name: str
    window_seconds: float
    source: str = BUILTIN
    metric: str = ""
    aggregation: str = ""
    matchers: dict[str, str] = field(default_factory=dict)
    baseline_matchers: dict[str, str] | None = None
    ratio_of: str = ""
    denominator_metric: str = ""
    denominator_matchers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    baseline_query: str = ""

    @property
    def is_prometheus(self) -> bool:
        return bool(self.query)

    @property
    def has_baseline(self) -> bool:
        return bool(self.baseline_query) or self.baseline_matchers is not None

    def to_dict(self) -> dict[str, Any]:
        """The plan-file form, without defaults: stored on the step and exported back."""
        data: dict[str, Any] = {}
        if self.source != BUILTIN:
            data["source"] = self.source
        data["window"] = duration_spec(self.window_seconds)
        if self.is_prometheus:
            data["query"] = self.query
            if self.baseline_query:
                data["baseline_query"] = self.baseline_query
            return data
        data |= {"metric": self.metric, "aggregation": self.aggregation}
        if self.matchers:
            data["matchers"] = dict(self.matchers)
        if self.baseline_matchers is not None:
            data["baseline_matchers"] = dict(self.baseline_matchers)
        if self.aggregation == "ratio":
            data["ratio_of"] = self.ratio_of
            data["denominator"] = {"metric": self.denominator_metric}
            if self.denominator_matchers:
                data["denominator"]["matchers"] = dict(self.denominator_matchers)
        return data

    def for_target(self, target: str) -> "MeasurementSpec":
        def sub(matchers: dict[str, str] | None) -> dict[str, str] | None:
            if matchers is None:
                return None
            return {k: v.replace(TARGET_PLACEHOLDER, target) for k, v in matchers.items()}

        return replace(
            self,
            matchers=sub(self.matchers) or {},
            baseline_matchers=sub(self.baseline_matchers),
            denominator_matchers=sub(self.denominator_matchers) or {},
            query=self.query.replace(TARGET_PLACEHOLDER, target),
            baseline_query=self.baseline_query.replace(TARGET_PLACEHOLDER, target),
        )

    def describe(self, *, baseline: bool = False) -> str:
        """The exact query, as it is shown beside the number it produced."""
        if self.is_prometheus:
            return self.baseline_query if baseline else self.query
        matchers = self.baseline_matchers if baseline else self.matchers
        window = duration_spec(self.window_seconds)
        selector = f"{self.metric}{matchers_text(matchers or {})}[{window}]"
        if self.aggregation == "ratio":
            denominator = (
                f"{self.denominator_metric}{matchers_text(self.denominator_matchers)}[{window}]"
            )
            return f"{self.ratio_of}({selector}) / {self.ratio_of}({denominator})"
        return f"{self.aggregation}({selector})"


def measurement_spec_parse(name: str, raw: Any) -> MeasurementSpec:
    """A measurement from its plan-file form, or MeasurementInvalid naming the field."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name == "baseline":
        raise MeasurementInvalid(
            f"measurement name {name!r} must be lower_snake_case and not 'baseline'"
        )
    if not isinstance(raw, dict):
        raise MeasurementInvalid("a measurement is a mapping (metric + aggregation, or query)")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise MeasurementInvalid(
            f"unknown field {unknown[0]!r}; known: {', '.join(sorted(_FIELDS))}", field=unknown[0]
        )
    source = raw.get("source", BUILTIN)
    if not isinstance(source, str) or not source.strip():
        raise MeasurementInvalid("source must name a metric source", field="source")
    window = duration_seconds(raw.get("window", "5m"))
    if window > MAX_WINDOW_SECONDS:
        raise MeasurementInvalid(
            f"window must be at most {duration_spec(MAX_WINDOW_SECONDS)}", field="window"
        )
    if "query" in raw:
        builtin_only = sorted(
            set(raw)
            & {"metric", "aggregation", "matchers", "baseline_matchers", "ratio_of", "denominator"}
        )
        if builtin_only:
            raise MeasurementInvalid(
                f"{builtin_only[0]} is for the built-in store; a PromQL query says it all",
                field=builtin_only[0],
            )
        if source == BUILTIN:
            raise MeasurementInvalid(
                "a PromQL query needs source: the name of a Prometheus metric source",
                field="source",
            )
        query, baseline = raw.get("query"), raw.get("baseline_query", "")
        for key, text in (("query", query), ("baseline_query", baseline)):
            if not isinstance(text, str) or (key == "query" and not text.strip()):
                raise MeasurementInvalid(f"{key} must be PromQL text", field=key)
        return MeasurementSpec(
            name=name,
            source=source.strip(),
            window_seconds=window,
            query=query.strip(),
            baseline_query=baseline.strip(),
        )
    if "baseline_query" in raw:
        raise MeasurementInvalid("baseline_query goes with query", field="baseline_query")
    if source != BUILTIN:
        raise MeasurementInvalid(
            f"source {source!r} takes a PromQL query; metric and aggregation read the "
            "built-in store (leave source out)",
            field="source",
        )
    metric = raw.get("metric")
    if not isinstance(metric, str) or not METRIC_NAME.fullmatch(metric):
        raise MeasurementInvalid(
            "metric must be a metric name (or give a PromQL query instead)", field="metric"
        )
    aggregation = raw.get("aggregation")
    if aggregation not in AGGREGATIONS:
        raise MeasurementInvalid(
            f"aggregation must be one of {', '.join(AGGREGATIONS)} (got {aggregation!r})",
            field="aggregation",
        )
    spec = MeasurementSpec(
        name=name,
        source=source.strip(),
        window_seconds=window,
        metric=metric,
        aggregation=aggregation,
        matchers=_matchers(raw.get("matchers"), "matchers"),
        baseline_matchers=(
            _matchers(raw["baseline_matchers"], "baseline_matchers")
            if "baseline_matchers" in raw
            else None
        ),
    )
    if aggregation != "ratio":
        for key in ("ratio_of", "denominator"):
            if key in raw:
                raise MeasurementInvalid(f"{key} is only for aggregation: ratio", field=key)
        return spec
    ratio_of = raw.get("ratio_of", "sum")
    if ratio_of not in RATIO_OF:
        raise MeasurementInvalid(
            f"ratio_of must be one of {', '.join(RATIO_OF)} (got {ratio_of!r})", field="ratio_of"
        )
    denominator = raw.get("denominator")
    if not isinstance(denominator, dict) or not isinstance(denominator.get("metric"), str):
        raise MeasurementInvalid(
            "a ratio needs denominator: {metric: NAME, matchers: {...}}", field="denominator"
        )
    if not METRIC_NAME.fullmatch(denominator["metric"]) or set(denominator) - {
        "metric",
        "matchers",
    }:
        raise MeasurementInvalid(
            "denominator takes a metric name and matchers only", field="denominator"
        )
    return replace(
        spec,
        ratio_of=ratio_of,
        denominator_metric=denominator["metric"],
        denominator_matchers=_matchers(denominator.get("matchers"), "denominator.matchers"),
    )


def _source(name: str) -> MetricSource | str:
    """The Prometheus source, or a problem sentence."""
    source = MetricSource.objects.filter(name=name).first()
    if source is None:
        return f"no metric source named {name!r}"
    if source.kind != MetricSource.Kind.PROMETHEUS:
        return f"metric source {name!r} is not Prometheus"
    return source


def measurement_read(
    spec: MeasurementSpec, *, baseline: bool = False, at: datetime | None = None
) -> Reading:
    """Read one number now (or at `at`). Never raises for what the source or data says."""
    query = spec.describe(baseline=baseline)
    if spec.is_prometheus:
        source = _source(spec.source)
        if isinstance(source, str):
            return Reading(None, query, source, error=True)
        try:
            value = prometheus_instant(source=source, promql=query, at=at)
        except PrometheusError as exc:
            return Reading(None, query, str(exc), error=True, retryable=exc.retryable)
        return Reading(value, query)
    matchers = spec.baseline_matchers if baseline else spec.matchers
    try:
        result = metric_query(
            name=spec.metric,
            matchers=matchers or {},
            window_seconds=spec.window_seconds,
            aggregation=spec.aggregation,
            at=at,
            denominator=(
                Selector(spec.denominator_metric, spec.denominator_matchers)
                if spec.aggregation == "ratio"
                else None
            ),
            ratio_of=spec.ratio_of or "sum",
        )
    except QueryInvalid as exc:
        return Reading(None, query, str(exc), error=True)
    return Reading(result.value, query, result.reason)


def measurement_values(
    spec: MeasurementSpec, *, baseline: bool = False, at: datetime | None = None
) -> list[float]:
    """Every value in the window (a distribution, for canary checks). Raises on a source error:
    PrometheusError, QueryInvalid."""
    end = at or timezone.now()
    if spec.is_prometheus:
        source = _source(spec.source)
        if isinstance(source, str):
            raise QueryInvalid(source)
        return prometheus_range(
            source=source,
            promql=spec.describe(baseline=baseline),
            start=end - timedelta(seconds=spec.window_seconds),
            end=end,
            step_seconds=max(DISTRIBUTION_STEP_SECONDS, spec.window_seconds / 10_000),
        )
    matchers = spec.baseline_matchers if baseline else spec.matchers
    return metric_values(
        name=spec.metric, matchers=matchers or {}, window_seconds=spec.window_seconds, at=end
    )


def retry_delay_seconds(attempt: int, *, base: float = 1.0, cap: float = 30.0) -> float:
    """Capped exponential backoff with full jitter: spreads retries of many evaluations of one
    failing source instead of sending them back together."""
    return random.uniform(0, min(cap, base * 2**attempt))


def source_retry_allowed(source: str) -> bool:
    """Spend one retry from the source's per-minute budget (shared by every worker through the
    cache); False once it is spent, so a down Prometheus costs errors, not a retry storm."""
    minute = int(time.time() // 60)
    key = f"retry-budget:{source}:{minute}"
    cache.add(key, 0, timeout=120)
    try:
        spent = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.add(key, 1, timeout=120)
        spent = 1
    return spent <= settings.SOURCE_RETRY_BUDGET_PER_MINUTE
