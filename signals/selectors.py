"""Reads of the built-in metric store: name + label matchers + window + aggregation -> one number."""

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

from django.db.models import QuerySet
from django.utils import timezone

from signals.models import Sample

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
AGGREGATIONS = ("avg", "sum", "min", "max", "count", "rate", *PERCENTILES, "ratio")
RATIO_OF = ("avg", "sum", "min", "max", "count", "rate")
# A window that holds more samples than this is refused rather than loaded: a query must stay
# cheap enough to run on every evaluation interval.
MAX_QUERY_SAMPLES = 200_000
MAX_WINDOW_SECONDS = 31 * 24 * 3600


class QueryInvalid(ValueError):
    pass


@dataclass(frozen=True)
class QueryResult:
    """One number, or `value is None` with the reason there is none ("no data" is not 0)."""

    value: float | None
    aggregation: str
    samples: int
    series: int
    reason: str = ""

    @property
    def has_data(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class Selector:
    """The second series of a ratio."""

    name: str
    matchers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Matcher:
    label: str
    op: str  # "=", "!=", "=~", "!~"
    value: str
    pattern: re.Pattern[str] | None

    def matches(self, labels: dict[str, str]) -> bool:
        # As in Prometheus: an absent label reads as "", and regexes are anchored.
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found


def matchers_parse(matchers: dict[str, str]) -> list[_Matcher]:
    """`{"region": "eu"}` is equality; the operator may follow the label: `{"code=~": "5.."}`."""
    parsed = []
    for key, value in matchers.items():
        if not isinstance(value, str):
            raise QueryInvalid(f"matcher {key!r} needs a string value")
        op = "="
        for suffix in ("!=", "=~", "!~"):
            if key.endswith(suffix):
                key, op = key[: -len(suffix)], suffix
                break
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", key):
            raise QueryInvalid(f"matcher label {key!r} is not a label name")
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise QueryInvalid(f"matcher {key}{op}{value!r}: bad regex ({exc})") from None
        parsed.append(_Matcher(key, op, value, pattern))
    return parsed


def matchers_text(matchers: dict[str, str]) -> str:
    if not matchers:
        return ""
    parts = []
    # Sorted: the same query reads the same whatever order the matchers were stored in
    # (PostgreSQL's jsonb does not keep key order).
    for key, value in sorted(matchers.items()):
        op = "="
        for suffix in ("!=", "=~", "!~"):
            if key.endswith(suffix):
                key, op = key[: -len(suffix)], suffix
                break
        parts.append(f'{key}{op}"{value}"')
    return "{" + ",".join(parts) + "}"


def label_key_filter(matchers: dict[str, str]) -> Callable[[str], bool]:
    """Whether a series (by its canonical label_key) is selected by the matchers."""
    parsed = matchers_parse(matchers)

    def selected(label_key: str) -> bool:
        labels = json.loads(label_key)
        return all(m.matches(labels) for m in parsed)

    return selected


def samples_narrowed(rows: QuerySet[Sample], matchers: dict[str, str]) -> QuerySet[Sample]:
    """Narrow in SQL by a substring of the canonical label_key for each equality matcher, which
    means the same on both databases (JSON key extraction does not). Callers still match every
    series exactly: a substring can over-select."""
    for m in matchers_parse(matchers):
        if m.op == "=" and m.value:
            fragment = json.dumps({m.label: m.value}, separators=(",", ":"), ensure_ascii=False)
            rows = rows.filter(label_key__contains=fragment[1:-1])
    return rows


def _series_in_window(
    *, name: str, matchers: dict[str, str], start: datetime, end: datetime
) -> dict[str, list[tuple[datetime, float]]]:
    """Samples in (start, end] of every series of `name` that the matchers select, by label_key."""
    parsed = matchers_parse(matchers)
    rows = samples_narrowed(
        Sample.objects.filter(name=name, timestamp__gt=start, timestamp__lte=end), matchers
    )
    values = rows.order_by("label_key", "timestamp").values_list("label_key", "timestamp", "value")
    chosen: dict[str, bool] = {}
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for count, (label_key, timestamp, value) in enumerate(values[: MAX_QUERY_SAMPLES + 1]):
        if count == MAX_QUERY_SAMPLES:
            raise QueryInvalid(
                f"{name} has more than {MAX_QUERY_SAMPLES} samples in the window; "
                "narrow the matchers or the window"
            )
        if label_key not in chosen:
            labels = json.loads(label_key)
            chosen[label_key] = all(m.matches(labels) for m in parsed)
        if chosen[label_key]:
            series[label_key].append((timestamp, value))
    return series


def percentile(sorted_values: list[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default "linear" method).
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _rate(series: dict[str, list[tuple[datetime, float]]]) -> float | None:
    """Sum over series of each counter's per-second increase; a drop is a counter reset."""
    total, any_rate = 0.0, False
    for points in series.values():
        if len(points) < 2:
            continue
        increase = 0.0
        for (_, before), (_, after) in pairwise(points):
            # After a reset the counter restarted from 0, so all of `after` is new increase.
            increase += after - before if after >= before else after
        seconds = (points[-1][0] - points[0][0]).total_seconds()
        if seconds > 0:
            total += increase / seconds
            any_rate = True
    return total if any_rate else None


def _aggregate(
    aggregation: str, series: dict[str, list[tuple[datetime, float]]]
) -> tuple[float | None, str]:
    values = [v for points in series.values() for _, v in points]
    if not values:
        return None, "no data: no samples in the window"
    if aggregation == "count":
        return float(len(values)), ""
    if aggregation == "sum":
        return math.fsum(values), ""
    if aggregation == "avg":
        return math.fsum(values) / len(values), ""
    if aggregation == "min":
        return min(values), ""
    if aggregation == "max":
        return max(values), ""
    if aggregation == "rate":
        rate = _rate(series)
        if rate is None:
            return None, "no data: rate needs two samples of one series at different times"
        return rate, ""
    return percentile(sorted(values), PERCENTILES[aggregation]), ""


def metric_query(
    *,
    name: str,
    matchers: dict[str, str] | None = None,
    window_seconds: float,
    aggregation: str,
    at: datetime | None = None,
    denominator: Selector | None = None,
    ratio_of: str = "sum",
) -> QueryResult:
    """One number from the built-in store over the window (at - window_seconds, at].

    Aggregations run over every sample of every matched series in the window; `rate` is the sum
    of each series' per-second increase. `ratio` divides this selector's `ratio_of` aggregate
    by the same aggregate of `denominator` (e.g. errors / requests with ratio_of="rate").
    """
    if aggregation not in AGGREGATIONS:
        raise QueryInvalid(f"unknown aggregation {aggregation!r}; known: {', '.join(AGGREGATIONS)}")
    if not (0 < window_seconds <= MAX_WINDOW_SECONDS):
        raise QueryInvalid(f"the window must be between 0 and {MAX_WINDOW_SECONDS} seconds")
    end = at or timezone.now()
    start = end - timedelta(seconds=window_seconds)

    if aggregation == "ratio":
        if denominator is None:
            raise QueryInvalid("a ratio needs a denominator series")
        if ratio_of not in RATIO_OF:
            raise QueryInvalid(f"a ratio divides one of {', '.join(RATIO_OF)}, not {ratio_of!r}")
        top = _series_in_window(name=name, matchers=matchers or {}, start=start, end=end)
        bottom = _series_in_window(
            name=denominator.name, matchers=denominator.matchers, start=start, end=end
        )
        counts = {
            "samples": sum(map(len, top.values())) + sum(map(len, bottom.values())),
            "series": len(top) + len(bottom),
        }
        numerator, why = _aggregate(ratio_of, top)
        # A numerator with no samples (no errors at all) is 0, not "no data", when the
        # denominator has data: that is the usual, healthy case for error counters.
        if numerator is None and ratio_of in ("sum", "count", "rate") and not top:
            numerator = 0.0
        divisor, why_bottom = _aggregate(ratio_of, bottom)
        if divisor is None:
            return QueryResult(None, aggregation, **counts, reason=f"denominator {why_bottom}")
        if numerator is None:
            return QueryResult(None, aggregation, **counts, reason=f"numerator {why}")
        if divisor == 0:
            return QueryResult(None, aggregation, **counts, reason="no data: denominator is 0")
        return QueryResult(numerator / divisor, aggregation, **counts)

    series = _series_in_window(name=name, matchers=matchers or {}, start=start, end=end)
    value, reason = _aggregate(aggregation, series)
    return QueryResult(
        value,
        aggregation,
        samples=sum(map(len, series.values())),
        series=len(series),
        reason=reason,
    )


def metric_values(
    *, name: str, matchers: dict[str, str] | None = None, window_seconds: float, at: datetime
) -> list[float]:
    """Every sample value of the matched series in (at - window_seconds, at]: a distribution."""
    if not (0 < window_seconds <= MAX_WINDOW_SECONDS):
        raise QueryInvalid(f"the window must be between 0 and {MAX_WINDOW_SECONDS} seconds")
    series = _series_in_window(
        name=name, matchers=matchers or {}, start=at - timedelta(seconds=window_seconds), end=at
    )
    return [value for points in series.values() for _, value in points]
