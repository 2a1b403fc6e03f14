"""What an SLO declares, independent of how it was written (OpenSLO YAML, a form, the seed).

A ratio SLI counts good (or bad) events against total events. A threshold SLI compares values
with a threshold: Prometheus gives one number per minute; from the built-in store each sample
is compared, and under Timeslices a minute is good when at least `time_slice_target` of its
samples hold (docs/openslo.md). The computation of what an SLO *is now* lives in `signals.slos`.
"""

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from signals.selectors import matchers_text

BUILTIN = "builtin"
THRESHOLD_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
BUDGETING = ("Occurrences", "Timeslices")
CALENDAR_UNITS = ("d", "w", "M")


class SLOInvalid(ValueError):
    """A refused SLO. `problems` is a list of (path, reason), path like `spec.objectives[0].target`."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


@dataclass(frozen=True)
class MetricRef:
    """One series read from a source: a PromQL query, or a built-in metric with label matchers.

    For the built-in store `aggregation` is used by threshold SLIs (`p99`, `p999`, `avg`, `max`):
    the per-minute number compared with the threshold.
    """

    query: str = ""
    metric: str = ""
    matchers: dict[str, str] = field(default_factory=dict)
    aggregation: str = ""

    def to_dict(self) -> dict[str, Any]:
        if self.query:
            return {"query": self.query}
        data: dict[str, Any] = {"metric": self.metric}
        if self.matchers:
            data["matchers"] = dict(self.matchers)
        if self.aggregation:
            data["aggregation"] = self.aggregation
        return data

    def describe(self) -> str:
        """The PromQL, or the built-in selector as PromQL would write it."""
        if self.query:
            return self.query
        per_minute = f" ({self.aggregation} per minute)" if self.aggregation else ""
        return f"{self.metric}{matchers_text(self.matchers)}{per_minute}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetricRef":
        return cls(
            query=data.get("query", ""),
            metric=data.get("metric", ""),
            matchers=dict(data.get("matchers") or {}),
            aggregation=data.get("aggregation", ""),
        )


@dataclass(frozen=True)
class SLISpec:
    kind: Literal["ratio", "threshold"]
    # The MetricSource name, or BUILTIN for the built-in store.
    source: str = BUILTIN
    # ratio: `good` or `bad`, with `total`. `counter` says the series are cumulative counters
    # (their increase is the event count); otherwise each sample is a count of events.
    good: MetricRef | None = None
    bad: MetricRef | None = None
    total: MetricRef | None = None
    counter: bool = True
    # threshold: the per-minute number, compared with `op` and `value` (from the objective).
    metric: MetricRef | None = None


@dataclass(frozen=True)
class SLOSpec:
    name: str  # a DNS-label-like slug, unique
    service: str
    indicator: SLISpec
    objective: float  # in (0, 1), e.g. 0.999
    window_seconds: int
    display_name: str = ""
    description: str = ""
    owner: str = ""
    indicator_name: str = ""  # metadata.name of the SLI, kept for export
    objective_name: str = ""  # objectives[0].displayName
    rolling: bool = True
    # A calendar window: `window_text` like "1M", "1w", "28d"; periods start at `calendar_start`
    # (ISO-8601 with offset) in `calendar_timezone`.
    window_text: str = ""
    calendar_start: str = ""
    calendar_timezone: str = ""
    budgeting: str = "Occurrences"
    # Timeslices: a slice is good when its ratio is at least `time_slice_target`. Slices are one
    # minute long (the rollup's resolution).
    time_slice_target: float | None = None
    # threshold SLIs: the comparison of each minute's number with `threshold`.
    threshold_op: str = ""
    threshold: float | None = None
    # Burn-rate alerts need at least this many events in the long window (low traffic would page
    # on a handful of errors otherwise).
    alert_min_events: int = 20


# A PromQL function that already turns a counter into a per-second (or per-window) number.
_RATE_FUNCTION = re.compile(r"(?<![\w:])(rate|irate|increase)\s*\(")
# A series name ending like a counter (Prometheus naming: _total, and a histogram's or summary's
# _count and _sum), not followed by "(" (a function) and not inside a quoted label value.
_COUNTER_NAME = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*_(?:total|count|sum))\b(?!\s*\()")
_QUOTED = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")


def sli_warnings(sli: SLISpec) -> list[tuple[str, str]]:
    """(metric key, reason) for each ratio metric whose query contradicts `counter`: a counter
    SLI whose query is already a rate, or a rate SLI that reads a raw counter. The SLO still
    works as declared; the warning says the numbers are likely not what was meant."""
    if sli.kind != "ratio":
        return []
    warnings = []
    for key in ("good", "bad", "total"):
        ref = getattr(sli, key)
        if ref is None:
            continue
        text = _QUOTED.sub('""', ref.query) if ref.query else ref.metric
        rate = _RATE_FUNCTION.search(text)
        counter_name = _COUNTER_NAME.search(text)
        if sli.counter and rate:
            warnings.append(
                (
                    key,
                    f"counter: true, but the query already computes {rate.group(1)}(): Stepwise "
                    "takes the increase of a counter, so this counts the increase of a rate. "
                    "Query the raw counter (e.g. http_requests_total{...}) or set counter: false",
                )
            )
        elif not sli.counter and counter_name and not rate:
            reads = (
                "each sample as a count of events"
                if ref.metric
                else "the query as a per-second rate of events"
            )
            warnings.append(
                (
                    key,
                    f"counter: false reads {reads}, but {counter_name.group(1)} is a raw counter "
                    f"(it only grows). Set counter: true"
                    + ("" if ref.metric else " or wrap it in rate(...[5m])"),
                )
            )
    return warnings
