"""Verification blocks in plan files: measurements, conditions over them, analysis settings, the
canary check and per-target convergence, as parsed, reported and exported."""

from typing import Any

import pytest
import yaml

from rollouts.models import Plan
from rollouts.plan_spec import (
    plan_spec_document,
    plan_spec_dump,
    plan_spec_errors,
    plan_spec_from_plan,
    plan_spec_parse,
)
from rollouts.services.plan_apply import PlanApplyRefused, plan_apply
from signals.services import metric_source_create, metric_source_mark_retired
from tests.rollouts.plan_factories import example_text, plan_yaml, step_doc

ERROR_RATE = {"metric": "http_error_ratio", "aggregation": "avg", "window": "5m"}
CANARY_LATENCY = {
    "metric": "http_request_duration_ms",
    "aggregation": "p99",
    "matchers": {"track": "canary"},
    "baseline_matchers": {"track": "stable"},
}
SCHEMA_VERSION = {
    "metric": "schema_version",
    "aggregation": "max",
    "matchers": {"region": "{target}"},
    "window": "5m",
}


def _verification(**fields: Any) -> dict[str, Any]:
    """A valid verification over `error_rate`; `fields` override or add (None removes)."""
    doc: dict[str, Any] = {
        "pass": "error_rate < 0.01",
        "fail": "error_rate > 0.02",
        "on_fail": "pause_plan",
        "measurements": {"error_rate": dict(ERROR_RATE)},
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not None}


def _errors(step: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    spec, errors = plan_spec_errors(plan_yaml(step))
    assert spec is None
    return [(e.path, e.message, e.line) for e in errors]


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# --- conditions ----------------------------------------------------------------------------------


def test_verification__no_measurements__error_asks_to_declare_them():
    text = plan_yaml(step_doc("a", verification=_verification(measurements=None)))

    _, errors = plan_spec_errors(text)

    assert [(e.path, e.message, e.line) for e in errors] == [
        (
            "spec.steps[0].verification.measurements",
            "declare the measurements the conditions read (name: query)",
            _line_of(text, "pass: error_rate < 0.01"),
        )
    ]


def test_verification_condition__undeclared_measurement__error_names_it_with_position():
    condition = "error_rate < 0.01 && p99_ms < 300"
    text = plan_yaml(step_doc("a", verification=_verification(**{"pass": condition})))

    _, errors = plan_spec_errors(text)

    assert len(errors) == 1
    error = errors[0]
    assert error.path == "spec.steps[0].verification.pass"
    assert error.line == _line_of(text, f"pass: {condition}")
    column = condition.index("p99_ms") + 1  # the position is inside the condition, from 1
    assert error.message.startswith(f"line 1, column {column}: unknown measurement 'p99_ms'")
    assert "known: error_rate" in error.message


def test_verification_condition__syntax_error__error_with_position():
    text = plan_yaml(step_doc("a", verification=_verification(fail="error_rate > > 0.02")))

    _, errors = plan_spec_errors(text)

    assert [(e.path, e.message, e.line) for e in errors] == [
        (
            "spec.steps[0].verification.fail",
            "line 1, column 14: syntax error: unexpected '>'",
            _line_of(text, "fail: error_rate > > 0.02"),
        )
    ]


def test_verification_condition__arithmetic_not_boolean__error():
    errors = _errors(step_doc("a", verification=_verification(**{"pass": "error_rate + 1"})))

    assert [(path, message) for path, message, _ in errors] == [
        (
            "spec.steps[0].verification.pass",
            "line 1, column 1: the condition must be true or false, but it gives a double",
        )
    ]


def test_verification_condition__baseline_read_without_baseline_matchers__error_names_it():
    verification = _verification(
        **{"pass": "error_rate <= baseline.error_rate * 1.05"},
    )

    errors = _errors(step_doc("a", verification=verification))

    assert len(errors) == 1
    path, message, _ = errors[0]
    assert path == "spec.steps[0].verification.pass"
    assert message.startswith("baseline.error_rate is read, but measurement 'error_rate'")
    assert "baseline_matchers" in message


def test_verification_condition__baseline_with_baseline_matchers__valid():
    measurement = {**ERROR_RATE, "matchers": {"track": "canary"}}
    measurement["baseline_matchers"] = {"track": "stable"}
    verification = _verification(
        **{"pass": "error_rate <= baseline.error_rate * 1.05"},
        measurements={"error_rate": measurement},
    )

    spec = plan_spec_parse(plan_yaml(step_doc("a", verification=verification)))

    assert spec.steps[0].measurements["error_rate"]["baseline_matchers"] == {"track": "stable"}


# --- measurements --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measurement", "path", "words"),
    [
        (
            {"metric": "http_error_ratio", "aggregation": "mean"},
            "error_rate.aggregation",
            "aggregation must be one of avg, sum, min, max, count, rate",
        ),
        (
            {**ERROR_RATE, "window": "5 minutes"},
            "error_rate.window",
            "window must be a duration like 30s, 5m or 1h (got '5 minutes')",
        ),
        (
            {**ERROR_RATE, "labels": {"track": "canary"}},
            "error_rate.labels",
            "unknown field 'labels'; known: aggregation, baseline_matchers",
        ),
        (
            {"query": "sum(rate(http_errors_total[5m]))"},
            "error_rate.source",
            "a PromQL query needs source: the name of a Prometheus metric source",
        ),
        (
            {"source": "prom", "query": "sum(rate(http_errors_total[5m]))", "metric": "x"},
            "error_rate.metric",
            "metric is for the built-in store; a PromQL query says it all",
        ),
        (
            {"metric": "http_errors", "aggregation": "ratio"},
            "error_rate.denominator",
            "a ratio needs denominator",
        ),
    ],
    ids=[
        "aggregation",
        "window",
        "unknown-field",
        "query-without-source",
        "query-and-metric",
        "ratio",
    ],
)
def test_measurement__invalid__error_at_the_measurement_field(measurement, path, words):
    text = plan_yaml(
        step_doc("a", verification=_verification(measurements={"error_rate": measurement}))
    )

    _, errors = plan_spec_errors(text)

    assert [e.path for e in errors] == [f"spec.steps[0].verification.measurements.{path}"]
    assert words in errors[0].message
    assert errors[0].line is not None and errors[0].line > _line_of(text, "measurements:")


# --- analysis settings ---------------------------------------------------------------------------


def test_verification_analysis__count_0_failure_limit_negative_interval_fast__error_for_each():
    verification = _verification(count=0, failure_limit=-1, interval="fast")

    errors = _errors(step_doc("a", verification=verification))

    assert [(path, message) for path, message, _ in errors] == [
        ("spec.steps[0].verification.count", "must be a whole number from 1 to 10000"),
        ("spec.steps[0].verification.failure_limit", "must be a whole number from 0 to 10000"),
        (
            "spec.steps[0].verification.interval",
            "interval must be a duration like 30s, 5m or 1h (got 'fast')",
        ),
    ]


def test_verification_analysis__interval_count_failure_limit__parsed_into_step_spec():
    verification = _verification(interval="30s", count=5, failure_limit=1)

    spec = plan_spec_parse(plan_yaml(step_doc("a", verification=verification)))

    assert spec.steps[0].analysis == {
        "verify_interval_seconds": 30,
        "verify_count": 5,
        "verify_initial_delay_seconds": 0,
        "failure_limit": 1,
        "consecutive_error_limit": 4,
        "inconclusive_limit": 0,
    }


# --- canary --------------------------------------------------------------------------------------


def _canary(**fields: Any) -> dict[str, Any]:
    metric = {**CANARY_LATENCY, **fields.pop("metric", {})}
    return {"metrics": {"latency": {k: v for k, v in metric.items() if v is not None}}, **fields}


def test_canary__metric_without_baseline_matchers__error():
    verification = _verification(canary=_canary(metric={"baseline_matchers": None}))

    errors = _errors(step_doc("a", verification=verification))

    assert [(path, message) for path, message, _ in errors] == [
        (
            "spec.steps[0].verification.canary.metrics.latency",
            "a canary metric compares with a baseline: add baseline_matchers",
        )
    ]


def test_canary__direction_sideways__error():
    verification = _verification(canary=_canary(metric={"direction": "sideways"}))

    errors = _errors(step_doc("a", verification=verification))

    assert [(path, message) for path, message, _ in errors] == [
        (
            "spec.steps[0].verification.canary.metrics.latency.direction",
            "must be increase, decrease or either",
        )
    ]


def test_canary__marginal_score_above_pass_score__error_from_the_judge():
    verification = _verification(canary=_canary(pass_score=70, marginal_score=80))

    errors = _errors(step_doc("a", verification=verification))

    assert len(errors) == 1
    path, message, _ = errors[0]
    assert path == "spec.steps[0].verification.canary"
    assert "score thresholds must satisfy 0 ≤ marginal ≤ pass ≤ 100" in message
    assert "marginal 80.0 and pass 70.0" in message


def test_canary__valid__parsed_with_defaults_and_measurement():
    verification = _verification(
        canary=_canary(pass_score=90, metric={"direction": "either", "critical": True})
    )

    spec = plan_spec_parse(plan_yaml(step_doc("a", verification=verification)))

    assert spec.steps[0].canary == {
        "confidence": 0.98,
        "pass_score": 90.0,
        "marginal_score": 75.0,
        "metrics": {
            "latency": {
                "window": "5m",
                "metric": "http_request_duration_ms",
                "aggregation": "p99",
                "matchers": {"track": "canary"},
                "baseline_matchers": {"track": "stable"},
                "direction": "either",
                "critical": True,
            }
        },
    }


# --- convergence ---------------------------------------------------------------------------------


def test_convergence__on_a_flag_ramp__error():
    step = step_doc(
        "ramp",
        kind="flag_ramp",
        flag={"key": "new-login", "percentage": 5},
        convergence={"measurement": SCHEMA_VERSION, "condition": "value >= 42"},
    )

    errors = _errors(step)

    assert [path for path, _, _ in errors] == ["spec.steps[0].convergence"]
    assert "convergence predicates are for other steps" in errors[0][1]


def test_convergence__condition_reads_other_than_value__error():
    step = step_doc(
        "expand",
        kind="expand",
        convergence={"measurement": SCHEMA_VERSION, "condition": "schema_version >= 42"},
    )

    errors = _errors(step)

    assert len(errors) == 1
    path, message, _ = errors[0]
    assert path == "spec.steps[0].convergence.condition"
    assert "unknown measurement 'schema_version'" in message and "known: value" in message


def test_convergence__valid__parsed_with_target_placeholder():
    step = step_doc(
        "expand",
        kind="expand",
        targets=["eu-west", "us-east"],
        convergence={"measurement": SCHEMA_VERSION, "condition": "value >= 42"},
    )

    spec = plan_spec_parse(plan_yaml(step))

    assert spec.steps[0].convergence == {
        "measurement": {
            "window": "5m",
            "metric": "schema_version",
            "aggregation": "max",
            "matchers": {"region": "{target}"},
        },
        "condition": "value >= 42",
    }


# --- export and apply ----------------------------------------------------------------------------


def _full_plan_text() -> str:
    deploy = step_doc(
        "deploy",
        kind="deploy",
        service="accounts-api",
        verification={
            "pass": "error_rate < 0.01 && p99 <= baseline.p99 * 1.05",
            "fail": "error_rate > 0.02 || p99 > baseline.p99 * 1.25",
            "on_fail": "fail_and_page",
            "interval": "30s",
            "count": 5,
            "initial_delay": "2m",
            "failure_limit": 1,
            "consecutive_error_limit": 2,
            "inconclusive_limit": 1,
            "measurements": {
                "error_rate": {
                    "metric": "http_request_errors_total",
                    "aggregation": "ratio",
                    "ratio_of": "rate",
                    "matchers": {"service": "accounts-api", "track": "canary"},
                    "denominator": {
                        "metric": "http_requests_total",
                        "matchers": {"service": "accounts-api", "track": "canary"},
                    },
                    "window": "10m",
                },
                "p99": {
                    "metric": "http_request_duration_ms",
                    "aggregation": "p99",
                    "matchers": {"service": "accounts-api", "track": "canary"},
                    "baseline_matchers": {"service": "accounts-api", "track": "stable"},
                },
            },
            "canary": {
                "confidence": 0.95,
                "pass_score": 90,
                "marginal_score": 60,
                "metrics": {
                    "latency": {
                        **CANARY_LATENCY,
                        "direction": "increase",
                        "effect_size": 0.05,
                        "critical": True,
                        "weight": 2,
                    }
                },
            },
        },
    )
    expand = step_doc(
        "expand",
        kind="expand",
        targets=["eu-west", "us-east"],
        convergence={"measurement": SCHEMA_VERSION, "condition": "value >= 42"},
    )
    return plan_yaml(expand, deploy)


@pytest.mark.django_db
def test_plan_export__measurements_analysis_canary_convergence__round_trip_is_a_no_op():
    text = _full_plan_text()
    plan = plan_apply(text=text, actor=None).plan
    deploy = plan.steps.get(key="deploy")
    assert (deploy.verify_interval_seconds, deploy.verify_count, deploy.failure_limit) == (30, 5, 1)
    assert deploy.verify_initial_delay_seconds == 120
    assert deploy.measurements["error_rate"]["denominator"]["metric"] == "http_requests_total"
    assert deploy.canary["metrics"]["latency"]["weight"] == 2.0
    assert plan.steps.get(key="expand").convergence["condition"] == "value >= 42"

    document = plan_spec_document(plan_spec_from_plan(plan))
    exported = plan_spec_dump(plan_spec_from_plan(plan))

    verification = document["spec"]["steps"][1]["verification"]
    assert verification["interval"] == "30s" and verification["initial_delay"] == "2m"
    assert verification["measurements"]["p99"]["baseline_matchers"]["track"] == "stable"
    assert yaml.safe_load(exported)["spec"]["steps"][0]["convergence"]["condition"] == "value >= 42"
    assert plan_spec_parse(exported).digest() == plan_spec_parse(text).digest()
    assert plan_apply(text=exported, actor=None).diff.empty


@pytest.mark.django_db
def test_plan_apply__prometheus_source_not_registered__refused_then_applied_once_registered():
    verification = _verification(
        measurements={
            "error_rate": {
                "source": "prom",
                "query": 'sum(rate(http_errors_total{track="canary"}[5m]))',
                "window": "5m",
            }
        }
    )
    text = plan_yaml(step_doc("a", verification=verification))

    with pytest.raises(PlanApplyRefused) as info:
        plan_apply(text=text, actor=None)

    assert info.value.reasons == [
        "step a reads metric source 'prom', which is not a registered Prometheus source "
        "(Prometheus sources: none is registered)"
    ]
    assert not Plan.objects.exists()

    metric_source_create(name="prom", kind="prometheus", url="http://127.0.0.1:9")
    result = plan_apply(text=text, actor=None)

    assert result.applied
    stored = result.plan.steps.get(key="a").measurements["error_rate"]
    assert stored["source"] == "prom" and stored["query"].startswith("sum(rate(")


@pytest.mark.django_db
def test_plan_apply__retired_source__refused_for_a_new_reader_kept_by_the_step_that_read_it():
    reads_prom = _verification(
        measurements={"error_rate": {"source": "prom", "query": "sum(up)", "window": "5m"}}
    )
    metric_source_create(name="prom", kind="prometheus", url="http://127.0.0.1:9")
    metric_source_create(name="thanos", kind="prometheus", url="http://127.0.0.1:10")
    plan_apply(text=plan_yaml(step_doc("a", verification=reads_prom)), actor=None)
    metric_source_mark_retired(name="prom")

    with pytest.raises(PlanApplyRefused) as info:
        plan_apply(
            text=plan_yaml(
                step_doc("a", verification=reads_prom), step_doc("b", verification=reads_prom)
            ),
            actor=None,
        )
    kept = plan_apply(
        text=plan_yaml(step_doc("a", title="A, renamed", verification=reads_prom)), actor=None
    )

    assert info.value.reasons == [
        "step b reads metric source 'prom', which is retired: no step may start reading it "
        "(Prometheus sources: thanos)"
    ]
    assert kept.applied and kept.plan.steps.get(key="a").title == "A, renamed"


def test_example_file__parsed__no_errors_and_measurements_declared():
    spec, errors = plan_spec_errors(example_text())

    assert errors == []
    steps = {s.key: s for s in spec.steps}
    assert steps["accounts-deploy"].measurements["error_rate"]["denominator"] == {
        "metric": "http_requests_total",
        "matchers": {"service": "accounts-api", "track": "canary"},
    }
    assert all(s.measurements for s in spec.steps)
