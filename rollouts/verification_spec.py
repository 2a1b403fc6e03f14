"""The verification a step declares before it starts: measurements, pass and fail conditions over
them, Argo-style limits, an optional canary check, and a per-target convergence predicate.

Pure parsing: every problem is reported with the path below the step where it is, so the plan
file and the import page can point at the line.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from signals.canary import CanaryConfigInvalid, CanaryMetric, Direction, canary_judge
from signals.conditions import CompiledCondition, ConditionInvalid, condition_compile
from signals.measurements import (
    MeasurementInvalid,
    MeasurementSpec,
    duration_seconds,
    duration_spec,
    measurement_spec_parse,
)

# Argo Rollouts' defaults, except count: Argo runs forever without one, a step must finish.
LIMIT_DEFAULTS = {
    "failure_limit": 0,
    "consecutive_error_limit": 4,
    "inconclusive_limit": 0,
}
ANALYSIS_FIELDS = (
    "verify_interval_seconds",
    "verify_count",
    "verify_initial_delay_seconds",
    *LIMIT_DEFAULTS,
)
DEFAULT_INTERVAL_SECONDS = 60
DEFAULT_COUNT = 3
MAX_COUNT = 10_000
CONVERGENCE_VALUE = "value"
_CANARY_METRIC_FIELDS = {"direction", "effect_size", "critical", "must_have_data", "weight"}
_CANARY_FIELDS = {"confidence", "pass_score", "marginal_score", "metrics"}


@dataclass(frozen=True)
class Problem:
    path: tuple[str | int, ...]
    message: str


@dataclass(frozen=True)
class CanarySpec:
    confidence: float
    pass_score: float
    marginal_score: float
    metrics: tuple[tuple[CanaryMetric, MeasurementSpec], ...]

    def to_dict(self) -> dict[str, Any]:
        metrics = {}
        for metric, measurement in self.metrics:
            doc = measurement.to_dict()
            doc["direction"] = str(metric.direction)
            if metric.effect_size:
                doc["effect_size"] = metric.effect_size
            if metric.critical:
                doc["critical"] = True
            if metric.must_have_data:
                doc["must_have_data"] = True
            if metric.weight != 1.0:
                doc["weight"] = metric.weight
            metrics[metric.name] = doc
        return {
            "confidence": self.confidence,
            "pass_score": self.pass_score,
            "marginal_score": self.marginal_score,
            "metrics": metrics,
        }


@dataclass(frozen=True)
class ConvergenceSpec:
    measurement: MeasurementSpec
    condition: CompiledCondition

    def to_dict(self) -> dict[str, Any]:
        return {"measurement": self.measurement.to_dict(), "condition": self.condition.text}


def measurements_parse(raw: Any) -> tuple[dict[str, MeasurementSpec], list[Problem]]:
    if not isinstance(raw, dict) or not raw:
        return {}, [Problem((), "declare the measurements the conditions read (name: query)")]
    specs, problems = {}, []
    for name, doc in raw.items():
        try:
            specs[name] = measurement_spec_parse(name, doc)
        except MeasurementInvalid as exc:
            path = (name, exc.field) if exc.field else (name,)
            problems.append(Problem(path, str(exc)))
    return specs, problems


def _condition(
    text: Any,
    path: str,
    names: set[str],
    measurements: dict[str, MeasurementSpec],
    problems: list[Problem],
) -> CompiledCondition | None:
    if not isinstance(text, str) or not text.strip():
        return None  # the schema reports a missing or empty condition
    try:
        compiled = condition_compile(text=text, measurements=names)
    except ConditionInvalid as exc:
        problems.append(Problem((path,), str(exc)))
        return None
    for name in sorted(compiled.baseline):
        if name in measurements and not measurements[name].has_baseline:
            problems.append(
                Problem(
                    (path,),
                    f"baseline.{name} is read, but measurement {name!r} declares no baseline "
                    "(baseline_matchers or baseline_query)",
                )
            )
    return compiled


def _limit(raw: dict, key: str, default: int, problems: list[Problem], *, low: int = 0) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
        problems.append(Problem((key,), f"must be a whole number from {low} to {MAX_COUNT}"))
        return default
    return value


def analysis_parse(raw: dict[str, Any]) -> tuple[dict[str, int], list[Problem]]:
    """interval, count, initial_delay and the limits, with Argo's defaults."""
    problems: list[Problem] = []
    out = {
        "verify_count": _limit(raw, "count", DEFAULT_COUNT, problems, low=1),
        **{name: _limit(raw, name, d, problems) for name, d in LIMIT_DEFAULTS.items()},
    }
    for key, default, column in (
        ("interval", DEFAULT_INTERVAL_SECONDS, "verify_interval_seconds"),
        ("initial_delay", 0, "verify_initial_delay_seconds"),
    ):
        try:
            seconds = duration_seconds(raw[key], field=key) if key in raw else default
        except MeasurementInvalid as exc:
            problems.append(Problem((key,), str(exc)))
            seconds = default
        if seconds != int(seconds):
            problems.append(Problem((key,), f"must be whole seconds (got {raw[key]!r})"))
        out[column] = int(seconds)
    return out, problems


def analysis_document(values: dict[str, int]) -> dict[str, Any]:
    """The non-default analysis settings in plan-file form."""
    doc: dict[str, Any] = {}
    if values["verify_interval_seconds"] != DEFAULT_INTERVAL_SECONDS:
        doc["interval"] = duration_spec(values["verify_interval_seconds"])
    if values["verify_count"] != DEFAULT_COUNT:
        doc["count"] = values["verify_count"]
    if values["verify_initial_delay_seconds"]:
        doc["initial_delay"] = duration_spec(values["verify_initial_delay_seconds"])
    for name, default in LIMIT_DEFAULTS.items():
        if values[name] != default:
            doc[name] = values[name]
    return doc


def verification_parse(
    raw: dict[str, Any],
) -> tuple[dict[str, MeasurementSpec], CanarySpec | None, list[Problem]]:
    """Measurements, conditions and canary of one step's `verification` block."""
    measurements, found = measurements_parse(raw.get("measurements"))
    problems = [Problem(("measurements", *p.path), p.message) for p in found]
    declared = raw.get("measurements") if isinstance(raw.get("measurements"), dict) else {}
    if declared:
        # Conditions are checked against every declared name: a measurement with its own
        # error is reported there, not again as "unknown" in the conditions.
        for key in ("pass", "fail"):
            _condition(raw.get(key), key, set(declared), measurements, problems)
    _, analysis_problems = analysis_parse(raw)
    problems += analysis_problems
    canary = None
    if "canary" in raw:
        canary, canary_problems = canary_parse(raw["canary"])
        problems += [Problem(("canary", *p.path), p.message) for p in canary_problems]
    return measurements, canary, problems


def _number(raw: dict, key: str, default: float, problems: list[Problem], path=()) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(Problem((*path, key), f"must be a number (got {value!r})"))
        return default
    return float(value)


def canary_parse(raw: Any) -> tuple[CanarySpec | None, list[Problem]]:
    if not isinstance(raw, dict):
        return None, [Problem((), "canary must be a mapping with metrics")]
    problems = [
        Problem((key,), f"unknown field {key!r}; known: {', '.join(sorted(_CANARY_FIELDS))}")
        for key in sorted(set(raw) - _CANARY_FIELDS)
    ]
    confidence = _number(raw, "confidence", 0.98, problems)
    pass_score = _number(raw, "pass_score", 95.0, problems)
    marginal_score = _number(raw, "marginal_score", 75.0, problems)
    metrics_raw = raw.get("metrics")
    if not isinstance(metrics_raw, dict) or not metrics_raw:
        problems.append(Problem(("metrics",), "list the metrics to compare (name: query)"))
        return None, problems
    pairs = []
    for name, doc in metrics_raw.items():
        here = ("metrics", name)
        if not isinstance(doc, dict):
            problems.append(Problem(here, "a canary metric is a mapping"))
            continue
        query = {k: v for k, v in doc.items() if k not in _CANARY_METRIC_FIELDS}
        try:
            measurement = measurement_spec_parse(name, query)
        except MeasurementInvalid as exc:
            problems.append(Problem((*here, exc.field) if exc.field else here, str(exc)))
            continue
        if not measurement.has_baseline:
            problems.append(
                Problem(here, "a canary metric compares with a baseline: add baseline_matchers")
            )
            continue
        direction = doc.get("direction", "increase")
        if direction not in {d.value for d in Direction}:
            problems.append(Problem((*here, "direction"), "must be increase, decrease or either"))
            continue
        flags = {}
        for key in ("critical", "must_have_data"):
            flags[key] = doc.get(key, False)
            if not isinstance(flags[key], bool):
                problems.append(
                    Problem((*here, key), f"must be true or false (got {flags[key]!r})")
                )
        metric = CanaryMetric(
            name=name,
            direction=Direction(direction),
            effect_size=_number(doc, "effect_size", 0.0, problems, here),
            critical=flags["critical"] is True,
            must_have_data=flags["must_have_data"] is True,
            weight=_number(doc, "weight", 1.0, problems, here),
        )
        pairs.append((metric, measurement))
    if problems:
        return None, problems
    try:
        # Judging empty data validates the thresholds and metrics exactly as evaluation will.
        canary_judge(
            metrics=[(metric, [], []) for metric, _ in pairs],
            confidence=confidence,
            pass_score=pass_score,
            marginal_score=marginal_score,
        )
    except CanaryConfigInvalid as exc:
        return None, [Problem((), str(exc))]
    return CanarySpec(confidence, pass_score, marginal_score, tuple(pairs)), []


def convergence_parse(raw: Any) -> tuple[ConvergenceSpec | None, list[Problem]]:
    """`{measurement: {... {target} ...}, condition: "value >= 42"}`: checked once per target."""
    if not isinstance(raw, dict) or set(raw) != {"measurement", "condition"}:
        return None, [Problem((), "convergence takes a measurement and a condition over `value`")]
    try:
        measurement = measurement_spec_parse(CONVERGENCE_VALUE, raw["measurement"])
    except MeasurementInvalid as exc:
        path = ("measurement", exc.field) if exc.field else ("measurement",)
        return None, [Problem(path, str(exc))]
    text = raw["condition"]
    if not isinstance(text, str):
        return None, [Problem(("condition",), "must be a CEL condition over `value`")]
    try:
        compiled = condition_compile(text=text, measurements={CONVERGENCE_VALUE})
    except ConditionInvalid as exc:
        return None, [Problem(("condition",), str(exc))]
    if compiled.baseline:
        return None, [Problem(("condition",), "a convergence condition has no baseline")]
    return ConvergenceSpec(measurement, compiled), []


def stored_measurements(doc: dict[str, Any]) -> dict[str, MeasurementSpec]:
    """Measurements as stored on a step or verification (already validated when saved)."""
    return {name: measurement_spec_parse(name, raw) for name, raw in doc.items()}


@lru_cache(maxsize=4096)
def compiled_condition(text: str, measurements: frozenset[str]) -> CompiledCondition:
    """A stored condition, compiled once per process (it was checked when it was saved)."""
    return condition_compile(text=text, measurements=set(measurements))
