import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from signals.openslo import openslo_export, openslo_parse
from signals.slo_spec import BUILTIN, MetricRef, SLISpec, SLOInvalid, SLOSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "openslo"


def prometheus(query: str, ref: str = "prometheus") -> dict[str, Any]:
    return {
        "metricSource": {"metricSourceRef": ref, "type": "Prometheus", "spec": {"query": query}}
    }


def builtin(metric: str, **spec: Any) -> dict[str, Any]:
    return {"metricSource": {"type": "Stepwise", "spec": {"metric": metric, **spec}}}


def slo_document(**spec: Any) -> dict[str, Any]:
    """A valid ratio SLO on the built-in store; keyword arguments replace parts of `spec`."""
    document = {
        "apiVersion": "openslo/v1",
        "kind": "SLO",
        "metadata": {"name": "login-availability"},
        "spec": {
            "service": "login",
            "indicator": {
                "metadata": {"name": "login-failures"},
                "spec": {
                    "ratioMetric": {
                        "counter": True,
                        "bad": builtin("login_failures_total"),
                        "total": builtin("login_requests_total"),
                    }
                },
            },
            "timeWindow": [{"duration": "28d", "isRolling": True}],
            "budgetingMethod": "Occurrences",
            "objectives": [{"target": 0.999}],
        },
    }
    document["spec"] |= spec
    return document


def threshold_document(**objective: Any) -> dict[str, Any]:
    return slo_document(
        indicator={
            "metadata": {"name": "login-p99"},
            "spec": {"thresholdMetric": builtin("login_duration_ms", aggregation="p99")},
        },
        objectives=[{"target": 0.99, "op": "lt", "value": 300} | objective],
    )


def dump(*documents: Any) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


def parse_one(document: dict[str, Any]) -> SLOSpec:
    (spec,) = openslo_parse(dump(document)).slos
    return spec


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(SLOInvalid) as caught:
        openslo_parse(text)
    return caught.value.problems


def reason_at(problems: list[tuple[str, str]], path: str) -> str:
    reasons = [reason for where, reason in problems if where == path]
    assert reasons, f"no problem at {path}; got {problems}"
    return reasons[0]


def with_change(path: list[Any], value: Any, document: dict[str, Any] | None = None) -> str:
    """The default SLO with the value at `path` replaced (or removed when value is ...)."""
    document = copy.deepcopy(document or slo_document())
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value is ...:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return dump(document)


# --- examples ------------------------------------------------------------------------------------


def test_examples__directory__holds_the_documented_files():
    assert {path.name for path in EXAMPLES.glob("*.yaml")} >= {
        "checkout-availability.yaml",
        "accounts-api.yaml",
        "login-latency.yaml",
        "login-availability.yaml",
        "payments-monthly.yaml",
    }


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_openslo_parse__every_example__parses_and_round_trips(path):
    specs = openslo_parse(path.read_text()).slos
    assert specs
    assert openslo_parse(openslo_export(specs)).slos == specs


def test_openslo_parse__checkout_example__prometheus_ratio():
    (spec,) = openslo_parse((EXAMPLES / "checkout-availability.yaml").read_text()).slos
    assert spec.name == "checkout-availability"
    assert spec.service == "checkout"
    assert spec.objective == 0.999
    assert (spec.window_seconds, spec.window_text, spec.rolling) == (28 * 86400, "28d", True)
    assert spec.budgeting == "Occurrences"
    assert spec.indicator.kind == "ratio"
    assert spec.indicator.source == "prometheus"
    assert spec.indicator.good == MetricRef(
        query='sum(rate(http_requests_total{service="checkout",code!~"5.."}[5m]))'
    )
    assert spec.indicator.bad is None
    assert spec.indicator.total == MetricRef(
        query='sum(rate(http_requests_total{service="checkout"}[5m]))'
    )


def test_openslo_parse__accounts_example__indicator_ref_resolved():
    (spec,) = openslo_parse((EXAMPLES / "accounts-api.yaml").read_text()).slos
    assert spec.name == "accounts-api-availability"
    assert spec.indicator_name == "accounts-api-errors"
    assert spec.objective == 0.995
    assert spec.indicator == SLISpec(
        kind="ratio",
        source=BUILTIN,
        bad=MetricRef(metric="http_request_errors_total", matchers={"service": "accounts-api"}),
        total=MetricRef(metric="http_requests_total", matchers={"service": "accounts-api"}),
        counter=True,
    )


def test_openslo_parse__login_latency_example__threshold_with_timeslices():
    (spec,) = openslo_parse((EXAMPLES / "login-latency.yaml").read_text()).slos
    assert spec.indicator == SLISpec(
        kind="threshold",
        source=BUILTIN,
        metric=MetricRef(metric="login_duration_ms", aggregation="p99"),
    )
    assert (spec.threshold_op, spec.threshold) == ("lt", 300.0)
    assert (spec.budgeting, spec.time_slice_target) == ("Timeslices", 0.95)
    assert (spec.objective, spec.window_seconds) == (0.99, 7 * 86400)


def test_openslo_parse__login_availability_example__owner_and_min_events():
    (spec,) = openslo_parse((EXAMPLES / "login-availability.yaml").read_text()).slos
    assert spec.owner == "identity-team"
    assert spec.alert_min_events == 50
    assert spec.indicator.bad == MetricRef(metric="login_failures_total")
    assert spec.indicator.total == MetricRef(metric="login_requests_total")
    assert spec.objective == 0.999


def test_openslo_parse__payments_example__calendar_month():
    (spec,) = openslo_parse((EXAMPLES / "payments-monthly.yaml").read_text()).slos
    assert spec.rolling is False
    assert (spec.window_text, spec.window_seconds) == ("1M", 30 * 86400)
    assert (spec.calendar_start, spec.calendar_timezone) == ("2026-01-01 00:00:00", "UTC")


# --- supported shapes ----------------------------------------------------------------------------


def test_openslo_parse__inline_builtin_ratio__all_fields_read():
    document = slo_document(description="Logins that work.")
    document["metadata"] |= {
        "displayName": "Login availability",
        "labels": {"tier": "1"},
        "annotations": {"stepwise.dev/owner": "identity-team", "example.com/other": "ignored"},
    }
    spec = parse_one(document)
    assert spec == SLOSpec(
        name="login-availability",
        service="login",
        indicator=SLISpec(
            kind="ratio",
            source=BUILTIN,
            bad=MetricRef(metric="login_failures_total"),
            total=MetricRef(metric="login_requests_total"),
            counter=True,
        ),
        objective=0.999,
        window_seconds=28 * 86400,
        display_name="Login availability",
        description="Logins that work.",
        owner="identity-team",
        indicator_name="login-failures",
        rolling=True,
        window_text="28d",
        budgeting="Occurrences",
    )


def test_openslo_parse__good_with_matchers_and_counter_false__kept():
    ratio = {
        "counter": False,
        "good": builtin("http_requests_total", matchers={"code!~": "5..", "service": "api"}),
        "total": builtin("http_requests_total", matchers={"service": "api"}),
    }
    spec = parse_one(
        slo_document(indicator={"metadata": {"name": "api"}, "spec": {"ratioMetric": ratio}})
    )
    assert spec.indicator.counter is False
    assert spec.indicator.good == MetricRef(
        metric="http_requests_total", matchers={"code!~": "5..", "service": "api"}
    )
    assert spec.indicator.bad is None


def test_openslo_parse__counter_left_out__defaults_to_true():
    text = with_change(["spec", "indicator", "spec", "ratioMetric", "counter"], ...)
    (spec,) = openslo_parse(text).slos
    assert spec.indicator.counter is True


def test_openslo_parse__builtin_metric_source_ref_builtin__accepted():
    metric = builtin("login_failures_total")
    metric["metricSource"]["metricSourceRef"] = "builtin"
    (spec,) = openslo_parse(
        with_change(["spec", "indicator", "spec", "ratioMetric", "bad"], metric)
    ).slos
    assert spec.indicator.source == BUILTIN


def test_openslo_parse__threshold_default_aggregation__p99():
    document = threshold_document()
    document["spec"]["indicator"]["spec"]["thresholdMetric"] = builtin("login_duration_ms")
    spec = parse_one(document)
    assert spec.indicator.metric == MetricRef(metric="login_duration_ms", aggregation="p99")


@pytest.mark.parametrize("op", ["lt", "lte", "gt", "gte"])
def test_openslo_parse__threshold_ops__kept(op):
    spec = parse_one(threshold_document(op=op, value=0.25))
    assert (spec.threshold_op, spec.threshold) == (op, 0.25)


def test_openslo_parse__prometheus_threshold__source_is_the_ref():
    document = threshold_document()
    document["spec"]["indicator"]["spec"]["thresholdMetric"] = prometheus(
        "histogram_quantile(0.99, sum by (le) (rate(login_seconds_bucket[1m])))", ref="prom-eu"
    )
    spec = parse_one(document)
    assert spec.indicator.source == "prom-eu"
    assert spec.indicator.metric == MetricRef(
        query="histogram_quantile(0.99, sum by (le) (rate(login_seconds_bucket[1m])))"
    )


def test_openslo_parse__occurrences_threshold__no_time_slice_target():
    spec = parse_one(threshold_document())
    assert (spec.budgeting, spec.time_slice_target) == ("Occurrences", None)


@pytest.mark.parametrize("window", ["1m", "60s", 60])
def test_openslo_parse__timeslices_one_minute__accepted(window):
    document = slo_document(budgetingMethod="Timeslices")
    document["spec"]["objectives"][0] |= {"timeSliceTarget": 1, "timeSliceWindow": window}
    spec = parse_one(document)
    assert (spec.budgeting, spec.time_slice_target) == ("Timeslices", 1.0)


@pytest.mark.parametrize(
    ("percent", "fraction"), [(99.9, 0.999), (99, 0.99), (99.95, 0.9995), (50, 0.5)]
)
def test_openslo_parse__target_percent__converted_to_fraction(percent, fraction):
    spec = parse_one(slo_document(objectives=[{"targetPercent": percent}]))
    assert spec.objective == fraction


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("30m", 1800), ("1h", 3600), ("7d", 604800), ("1w", 604800), ("4w", 2419200)],
)
def test_openslo_parse__rolling_durations__seconds(duration, seconds):
    spec = parse_one(slo_document(timeWindow=[{"duration": duration, "isRolling": True}]))
    assert (spec.window_text, spec.window_seconds, spec.rolling) == (duration, seconds, True)


@pytest.mark.parametrize(
    ("duration", "seconds"), [("1M", 30 * 86400), ("1w", 7 * 86400), ("28d", 28 * 86400)]
)
def test_openslo_parse__calendar_durations__seconds(duration, seconds):
    window = {
        "duration": duration,
        "isRolling": False,
        "calendar": {"startTime": "2026-01-05 00:00:00", "timeZone": "Europe/Paris"},
    }
    spec = parse_one(slo_document(timeWindow=[window]))
    assert (spec.rolling, spec.window_text, spec.window_seconds) == (False, duration, seconds)
    assert (spec.calendar_start, spec.calendar_timezone) == ("2026-01-05 00:00:00", "Europe/Paris")


def test_openslo_parse__calendar_without_is_rolling__calendar_aligned():
    window = {"duration": "1M", "calendar": {"startTime": "2026-01-01 00:00:00", "timeZone": "UTC"}}
    spec = parse_one(slo_document(timeWindow=[window]))
    assert spec.rolling is False


def test_openslo_parse__unquoted_start_time__kept_as_text():
    text = dump(slo_document()).replace(
        "  - duration: 28d\n    isRolling: true\n",
        "  - duration: 1M\n    isRolling: false\n"
        "    calendar: {startTime: 2026-01-01 00:00:00, timeZone: UTC}\n",
    )
    (spec,) = openslo_parse(text).slos
    assert spec.calendar_start == "2026-01-01 00:00:00"
    assert openslo_parse(openslo_export([spec])).slos == [spec]


def test_openslo_parse__alert_min_events_unquoted__read_as_int():
    document = slo_document()
    document["metadata"]["annotations"] = {"stepwise.dev/alert-min-events": 100}
    assert parse_one(document).alert_min_events == 100


def test_openslo_parse__empty_trailing_document__ignored():
    assert len(openslo_parse(dump(slo_document()) + "---\n").slos) == 1


def test_openslo_parse__one_sli_for_two_slos__both_use_it():
    sli = {
        "apiVersion": "openslo/v1",
        "kind": "SLI",
        "metadata": {"name": "shared"},
        "spec": {"thresholdMetric": builtin("login_duration_ms", aggregation="p95")},
    }
    first = threshold_document()
    del first["spec"]["indicator"]
    first["spec"]["indicatorRef"] = "shared"
    second = copy.deepcopy(first)
    second["metadata"]["name"] = "login-latency-strict"
    second["spec"]["objectives"][0]["value"] = 200
    specs = openslo_parse(dump(first, second, sli)).slos
    assert [(s.name, s.threshold, s.indicator_name) for s in specs] == [
        ("login-availability", 300.0, "shared"),
        ("login-latency-strict", 200.0, "shared"),
    ]
    assert specs[0].indicator.metric == MetricRef(metric="login_duration_ms", aggregation="p95")


# --- export --------------------------------------------------------------------------------------


def test_openslo_export__two_specs__separated_documents_in_readable_order():
    text = dump(slo_document(), threshold_document()).replace("login-a", "x-a", 1)
    specs = openslo_parse(text).slos
    text = openslo_export(specs)
    documents = text.split("\n---\n")
    assert len(documents) == 2
    assert all(
        doc.startswith("apiVersion: openslo/v1\nkind: SLO\nmetadata:\n") for doc in documents
    )
    assert list(yaml.safe_load(documents[0])["spec"]) == [
        "service",
        "indicator",
        "timeWindow",
        "budgetingMethod",
        "objectives",
    ]
    assert openslo_parse(text).slos == specs


def test_openslo_export__defaults__no_annotations_written():
    text = openslo_export([parse_one(slo_document())])
    assert "annotations" not in text
    assert "displayName" not in text


def test_openslo_export__annotations__written_as_text():
    document = slo_document()
    document["metadata"]["annotations"] = {
        "stepwise.dev/owner": "identity-team",
        "stepwise.dev/alert-min-events": "5",
    }
    exported = yaml.safe_load(openslo_export([parse_one(document)]))
    assert exported["metadata"]["annotations"] == {
        "stepwise.dev/owner": "identity-team",
        "stepwise.dev/alert-min-events": "5",
    }


def test_openslo_export__threshold_timeslices__objective_fields():
    document = threshold_document(timeSliceTarget=0.95, timeSliceWindow="60s")
    document["spec"]["budgetingMethod"] = "Timeslices"
    spec = parse_one(document)
    exported = yaml.safe_load(openslo_export([spec]))
    assert exported["spec"]["objectives"] == [
        {"target": 0.99, "op": "lt", "value": 300, "timeSliceTarget": 0.95, "timeSliceWindow": "1m"}
    ]
    assert openslo_parse(openslo_export([spec])).slos == [spec]


def test_openslo_export__spec_made_elsewhere__names_and_window_filled_in():
    spec = SLOSpec(
        name="api-availability",
        service="api",
        indicator=SLISpec(
            kind="ratio",
            source="prom",
            good=MetricRef(query="sum(rate(ok[5m]))"),
            total=MetricRef(query="sum(rate(all[5m]))"),
        ),
        objective=0.99,
        window_seconds=14 * 86400,
    )
    (back,) = openslo_parse(openslo_export([spec])).slos
    assert (back.indicator_name, back.window_text) == ("api-availability", "14d")
    assert back.indicator == spec.indicator
    assert back.window_seconds == spec.window_seconds


def test_openslo_export__no_specs__empty_text():
    assert openslo_export([]) == ""


# --- refused -------------------------------------------------------------------------------------

IND = ["spec", "indicator", "spec", "ratioMetric"]


@pytest.mark.parametrize(
    ("change", "value", "path", "reason"),
    [
        (["apiVersion"], ..., "documents[0].apiVersion", "required"),
        (["apiVersion"], "openslo/v2", "documents[0].apiVersion", "must be openslo/v1"),
        (["kind"], ..., "documents[0].kind", "required"),
        (["kind"], "Widget", "documents[0].kind", "unknown kind 'Widget'"),
        (["metadata"], ..., "documents[0].metadata", "required"),
        (["metadata", "name"], ..., "documents[0].metadata.name", "required"),
        (["metadata", "name"], "Login", "documents[0].metadata.name", "DNS label"),
        (["metadata", "name"], "login-", "documents[0].metadata.name", "DNS label"),
        (["metadata", "name"], "a" * 64, "documents[0].metadata.name", "at most 63"),
        (["spec"], ..., "documents[0].spec", "required"),
        (["spec", "service"], ..., "documents[0].spec.service", "required"),
        (["spec", "service"], "", "documents[0].spec.service", "non-empty"),
        (["spec", "indicator"], ..., "documents[0].spec", "exactly one of indicator"),
        (["spec", "indicatorRef"], "x", "documents[0].spec", "exactly one of indicator"),
        (["spec", "timeWindow"], ..., "documents[0].spec.timeWindow", "required"),
        (
            ["spec", "timeWindow"],
            [{"duration": "7d", "isRolling": True}, {"duration": "7d", "isRolling": True}],
            "documents[0].spec.timeWindow",
            "exactly one time window",
        ),
        (["spec", "budgetingMethod"], ..., "documents[0].spec.budgetingMethod", "required"),
        (
            ["spec", "budgetingMethod"],
            "RatioTimeslices",
            "documents[0].spec.budgetingMethod",
            "not supported: RatioTimeslices",
        ),
        (["spec", "budgetingMethod"], "Minutes", "documents[0].spec.budgetingMethod", "must be"),
        (["spec", "objectives"], ..., "documents[0].spec.objectives", "required"),
        (["spec", "objectives"], [], "documents[0].spec.objectives", "exactly one objective"),
        (
            ["spec", "objectives"],
            [{"target": 0.9}, {"target": 0.99}],
            "documents[0].spec.objectives",
            "exactly one objective",
        ),
        (["spec", "objectives"], [{}], "documents[0].spec.objectives[0].target", "required"),
        (
            ["spec", "indicator", "metadata", "name"],
            ...,
            "documents[0].spec.indicator.metadata.name",
            "required",
        ),
        (["spec", "indicator", "spec"], {}, "documents[0].spec.indicator.spec", "exactly one of"),
        (
            [*IND, "counter"],
            "yes please",
            "documents[0].spec.indicator.spec.ratioMetric.counter",
            "true or false",
        ),
        ([*IND, "total"], ..., "documents[0].spec.indicator.spec.ratioMetric.total", "required"),
        ([*IND, "bad"], ..., "documents[0].spec.indicator.spec.ratioMetric", "exactly one of good"),
        (
            [*IND, "good"],
            builtin("ok_total"),
            "documents[0].spec.indicator.spec.ratioMetric",
            "exactly one of good",
        ),
    ],
)
def test_openslo_parse__missing_or_wrong_field__refused_at_path(change, value, path, reason):
    assert reason in reason_at(problems_of(with_change(change, value)), path)


@pytest.mark.parametrize("target", [0, 1, 1.5, -0.1, 99.9, "high", True, None, float("nan")])
def test_openslo_parse__target_outside_zero_one__refused(target):
    text = with_change(["spec", "objectives"], [{"target": target}])
    assert "between 0 and 1" in reason_at(
        problems_of(text), "documents[0].spec.objectives[0].target"
    )


@pytest.mark.parametrize("percent", [0, 100, 100.1, -5, "99.9"])
def test_openslo_parse__target_percent_outside_zero_hundred__refused(percent):
    text = with_change(["spec", "objectives"], [{"targetPercent": percent}])
    assert "between 0 and 100" in reason_at(
        problems_of(text), "documents[0].spec.objectives[0].targetPercent"
    )


def test_openslo_parse__target_and_target_percent__refused():
    text = with_change(["spec", "objectives"], [{"target": 0.99, "targetPercent": 99}])
    assert "not both" in reason_at(problems_of(text), "documents[0].spec.objectives[0]")


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("Service", "spec.service"),
        ("AlertPolicy", "burn rates"),
        ("AlertCondition", "burn rates"),
        ("AlertNotificationTarget", "incident command"),
    ],
)
def test_openslo_parse__other_openslo_kinds__not_supported_with_reason(kind, why):
    other = {"apiVersion": "openslo/v1", "kind": kind, "metadata": {"name": "x"}, "spec": {}}
    problems = problems_of(dump(slo_document(), other))
    reason = reason_at(problems, "documents[1].kind")
    assert reason.startswith("not supported: ")
    assert why in reason
    assert problems == [("documents[1].kind", reason)]


@pytest.mark.parametrize(
    ("window", "path", "reason"),
    [
        ({"duration": "1M", "isRolling": True}, ".duration", "use m, h, d or w"),
        ({"duration": "90s", "isRolling": True}, ".duration", "whole number of minutes"),
        ({"duration": "32d", "isRolling": True}, ".duration", "at most 31d"),
        ({"duration": "5w", "isRolling": True}, ".duration", "at most 31d"),
        ({"duration": "0d", "isRolling": True}, ".duration", "longer than 0"),
        ({"duration": "1.5d", "isRolling": True}, ".duration", "whole number and a unit"),
        ({"duration": 28, "isRolling": True}, ".duration", "text"),
        ({"isRolling": True}, ".duration", "required"),
        ({"duration": "7d", "isRolling": "yes please"}, ".isRolling", "true or false"),
        ({"duration": "1M", "isRolling": False}, ".calendar", "required"),
        (
            {
                "duration": "7d",
                "isRolling": True,
                "calendar": {"startTime": "x", "timeZone": "UTC"},
            },
            ".calendar",
            "isRolling: false",
        ),
        (
            {
                "duration": "1h",
                "isRolling": False,
                "calendar": {"startTime": "2026-01-01 00:00:00", "timeZone": "UTC"},
            },
            ".duration",
            "d, w or M",
        ),
        (
            {
                "duration": "2M",
                "isRolling": False,
                "calendar": {"startTime": "2026-01-01 00:00:00", "timeZone": "UTC"},
            },
            ".duration",
            "at most 31d",
        ),
        (
            {
                "duration": "1M",
                "isRolling": False,
                "calendar": {"startTime": "2026-01-01 00:00:00", "timeZone": "Mars/Olympus"},
            },
            ".calendar.timeZone",
            "IANA time zone",
        ),
        (
            {"duration": "1M", "isRolling": False, "calendar": {"timeZone": "UTC"}},
            ".calendar.startTime",
            "required",
        ),
        (
            {
                "duration": "1M",
                "isRolling": False,
                "calendar": {"startTime": "soon", "timeZone": "UTC"},
            },
            ".calendar.startTime",
            "date and time",
        ),
        (
            {"duration": "1M", "isRolling": False, "calendar": {"startTime": "2026-01-01"}},
            ".calendar.timeZone",
            "required",
        ),
    ],
)
def test_openslo_parse__bad_time_window__refused_at_path(window, path, reason):
    problems = problems_of(with_change(["spec", "timeWindow"], [window]))
    assert reason in reason_at(problems, "documents[0].spec.timeWindow[0]" + path)


@pytest.mark.parametrize(
    ("objective", "path", "reason"),
    [
        ({"timeSliceTarget": 0.95}, ".timeSliceWindow", "required"),
        ({"timeSliceWindow": "1m"}, ".timeSliceTarget", "required"),
        ({"timeSliceTarget": 0, "timeSliceWindow": "1m"}, ".timeSliceTarget", "(0, 1]"),
        ({"timeSliceTarget": 1.5, "timeSliceWindow": "1m"}, ".timeSliceTarget", "(0, 1]"),
        ({"timeSliceTarget": 0.9, "timeSliceWindow": "5m"}, ".timeSliceWindow", "per minute"),
        ({"timeSliceTarget": 0.9, "timeSliceWindow": "1h"}, ".timeSliceWindow", "per minute"),
    ],
)
def test_openslo_parse__bad_timeslices__refused_at_path(objective, path, reason):
    text = with_change(["spec", "objectives"], [{"target": 0.99} | objective])
    text = text.replace("budgetingMethod: Occurrences", "budgetingMethod: Timeslices")
    problems = problems_of(text)
    found = reason_at(problems, "documents[0].spec.objectives[0]" + path)
    assert reason in found
    if path == ".timeSliceWindow" and reason == "per minute":
        assert found.startswith("not supported")


@pytest.mark.parametrize("key", ["timeSliceTarget", "timeSliceWindow"])
def test_openslo_parse__time_slice_fields_with_occurrences__refused(key):
    text = with_change(["spec", "objectives"], [{"target": 0.99, key: "1m"}])
    assert "Timeslices" in reason_at(problems_of(text), f"documents[0].spec.objectives[0].{key}")


@pytest.mark.parametrize(
    ("objective", "path", "reason"),
    [
        ({"op": ...}, ".op", "required"),
        ({"value": ...}, ".value", "required"),
        ({"op": "eq"}, ".op", "must be one of lt, lte, gt, gte"),
        ({"value": "fast"}, ".value", "must be a number"),
        ({"value": True}, ".value", "must be a number"),
    ],
)
def test_openslo_parse__bad_threshold_objective__refused_at_path(objective, path, reason):
    document = threshold_document()
    for key, value in objective.items():
        if value is ...:
            del document["spec"]["objectives"][0][key]
        else:
            document["spec"]["objectives"][0][key] = value
    assert reason in reason_at(
        problems_of(dump(document)), "documents[0].spec.objectives[0]" + path
    )


def test_openslo_parse__op_on_ratio_objective__refused():
    text = with_change(["spec", "objectives"], [{"target": 0.99, "op": "lt", "value": 1}])
    problems = problems_of(text)
    assert "thresholdMetric" in reason_at(problems, "documents[0].spec.objectives[0].op")
    assert "thresholdMetric" in reason_at(problems, "documents[0].spec.objectives[0].value")


SOURCE = "documents[0].spec.indicator.spec.ratioMetric.bad.metricSource"


@pytest.mark.parametrize(
    ("metric", "path", "reason"),
    [
        ({"metricSource": {"type": "Datadog", "spec": {}}}, ".type", "not supported: 'Datadog'"),
        ({"metricSource": {"spec": {"metric": "x"}}}, ".type", "required"),
        ({}, "", "required"),
        ({"metricSource": {"type": "Stepwise"}}, ".spec", "required"),
        (builtin("9lives"), ".spec.metric", "not a metric name"),
        (builtin(""), ".spec.metric", "non-empty"),
        (builtin("x_total", aggregation="p99"), ".spec.aggregation", "not supported: a ratio"),
        (builtin("x_total", matchers={"code=~": "5(("}), ".spec.matchers", "bad regex"),
        (builtin("x_total", matchers={"9code": "5"}), ".spec.matchers", "not a label name"),
        (builtin("x_total", matchers={"code": 500}), ".spec.matchers", "map label names"),
        (builtin("x_total", matchers=["code"]), ".spec.matchers", "map label names"),
        (
            {
                "metricSource": {
                    "type": "Stepwise",
                    "metricSourceRef": "prom",
                    "spec": {"metric": "x"},
                }
            },
            ".metricSourceRef",
            "built-in store",
        ),
        (
            {"metricSource": {"type": "Prometheus", "metricSourceRef": 7, "spec": {"query": "x"}}},
            ".metricSourceRef",
            "must be the name of a registered Prometheus metric source, or left out",
        ),
        (prometheus("sum(x)", ref="builtin"), ".metricSourceRef", "use type: Stepwise"),
        (prometheus(""), ".spec.query", "non-empty"),
        (
            {"metricSource": {"type": "Prometheus", "metricSourceRef": "p", "spec": {}}},
            ".spec.query",
            "required",
        ),
    ],
)
def test_openslo_parse__bad_metric_source__refused_at_path(metric, path, reason):
    problems = problems_of(with_change([*IND, "bad"], metric))
    assert reason in reason_at(problems, SOURCE + path)


def test_openslo_parse__threshold_aggregation_unknown__refused():
    document = threshold_document()
    document["spec"]["indicator"]["spec"]["thresholdMetric"] = builtin("x_ms", aggregation="p42")
    path = "documents[0].spec.indicator.spec.thresholdMetric.metricSource.spec.aggregation"
    assert "p50, p90, p95, p99, p999, avg, max, min" in reason_at(problems_of(dump(document)), path)


def test_openslo_parse__metrics_from_two_sources__refused():
    ratio = {"bad": builtin("errors_total"), "total": prometheus("sum(rate(all[5m]))")}
    problems = problems_of(with_change(IND, ratio))
    reason = reason_at(problems, "documents[0].spec.indicator.spec.ratioMetric.total.metricSource")
    assert "same source" in reason
    assert "'prometheus'" in reason


def test_openslo_parse__two_prometheus_sources__refused():
    ratio = {"good": prometheus("sum(ok)", ref="prom-a"), "total": prometheus("sum(all)", "prom-b")}
    problems = problems_of(with_change(IND, ratio))
    assert "same source" in reason_at(
        problems, "documents[0].spec.indicator.spec.ratioMetric.total.metricSource"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "whole number from 1 to 1,000,000,000"),
        ("many", "whole number from 1"),
        ("-3", "whole number from 1"),
        ("99999999999999999999", "whole number from 1 to 1,000,000,000"),
    ],
)
def test_openslo_parse__bad_alert_min_events__refused(value, reason):
    text = with_change(
        ["metadata", "annotations"], {"stepwise.dev/alert-min-events": value, "team": "x"}
    )
    path = 'documents[0].metadata.annotations["stepwise.dev/alert-min-events"]'
    assert reason in reason_at(problems_of(text), path)


def test_openslo_parse__empty_owner__refused():
    text = with_change(["metadata", "annotations"], {"stepwise.dev/owner": ""})
    assert "team" in reason_at(
        problems_of(text), 'documents[0].metadata.annotations["stepwise.dev/owner"]'
    )


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (["status"], "documents[0].status"),
        (["metadata", "namespace"], "documents[0].metadata.namespace"),
        (["spec", "alertPolicies"], "documents[0].spec.alertPolicies"),
        (["spec", "color"], "documents[0].spec.color"),
        (["spec", "indicator", "kind"], "documents[0].spec.indicator.kind"),
        (
            ["spec", "indicator", "metadata", "displayName"],
            "documents[0].spec.indicator.metadata.displayName",
        ),
        (
            ["spec", "indicator", "spec", "description"],
            "documents[0].spec.indicator.spec.description",
        ),
        ([*IND, "rawType"], "documents[0].spec.indicator.spec.ratioMetric.rawType"),
        ([*IND, "total", "unit"], "documents[0].spec.indicator.spec.ratioMetric.total.unit"),
        ([*IND, "total", "metricSource", "extra"], f"{SOURCE.replace('bad', 'total')}.extra"),
        (
            [*IND, "total", "metricSource", "spec", "interval"],
            f"{SOURCE.replace('bad', 'total')}.spec.interval",
        ),
        (["spec", "timeWindow", 0, "alignment"], "documents[0].spec.timeWindow[0].alignment"),
        (
            ["spec", "objectives", 0, "compositeWeight"],
            "documents[0].spec.objectives[0].compositeWeight",
        ),
        (["spec", "objectives", 0, "indicatorRef"], "documents[0].spec.objectives[0].indicatorRef"),
    ],
)
def test_openslo_parse__unknown_field__reported_by_path(change, path):
    problems = problems_of(with_change(change, "something"))
    assert reason_at(problems, path).startswith("not supported")


def test_openslo_parse__unknown_calendar_field__reported_by_path():
    window = {
        "duration": "1M",
        "isRolling": False,
        "calendar": {"startTime": "2026-01-01 00:00:00", "timeZone": "UTC", "weekStart": "mon"},
    }
    problems = problems_of(with_change(["spec", "timeWindow"], [window]))
    assert problems == [("documents[0].spec.timeWindow[0].calendar.weekStart", "not supported")]


def test_openslo_parse__unknown_prometheus_spec_field__reported_by_path():
    metric = prometheus("sum(rate(errors[5m]))")
    metric["metricSource"]["spec"]["step"] = "30s"
    problems = problems_of(with_change([*IND, "bad"], metric))
    assert problems == [(f"{SOURCE}.spec.step", "not supported")]


def test_openslo_parse__several_problems__all_reported():
    document = slo_document(service="", objectives=[{"target": 2}], budgetingMethod="Nope")
    document["metadata"]["name"] = "Bad Name"
    document["spec"]["extra"] = 1
    paths = [path for path, _ in problems_of(dump(document))]
    assert sorted(paths) == sorted(
        [
            "documents[0].metadata.name",
            "documents[0].spec.service",
            "documents[0].spec.extra",
            "documents[0].spec.budgetingMethod",
            "documents[0].spec.objectives[0].target",
        ]
    )


def test_openslo_parse__problems_in_two_documents__both_reported():
    second = slo_document(service=None)
    second["metadata"]["name"] = "other"
    first = with_change(["spec", "objectives"], [{"target": 5}])
    problems = problems_of(first + "---\n" + dump(second))
    assert [path for path, _ in problems] == [
        "documents[0].spec.objectives[0].target",
        "documents[1].spec.service",
    ]


def test_openslo_parse__error_message__names_every_path():
    with pytest.raises(SLOInvalid) as caught:
        openslo_parse(with_change(["spec", "service"], ...))
    assert str(caught.value) == "documents[0].spec.service: required"


# --- files ---------------------------------------------------------------------------------------


def test_openslo_parse__duplicate_slo_names__refused():
    problems = problems_of(dump(slo_document(), threshold_document()))
    assert problems == [
        ("documents[1].metadata.name", "duplicate SLO name; documents[0] has it too"),
    ]


def test_openslo_parse__duplicate_sli_names__refused():
    sli = {
        "apiVersion": "openslo/v1",
        "kind": "SLI",
        "metadata": {"name": "errors"},
        "spec": {"thresholdMetric": builtin("x_ms")},
    }
    problems = problems_of(dump(slo_document(), sli, sli))
    assert reason_at(problems, "documents[2].metadata.name").startswith("duplicate SLI name")


def test_openslo_parse__indicator_ref_to_missing_sli__refused():
    document = slo_document(indicatorRef="nowhere")
    del document["spec"]["indicator"]
    problems = problems_of(dump(document))
    assert problems == [("documents[0].spec.indicatorRef", "no SLI named 'nowhere' in this file")]


def test_openslo_parse__referenced_sli_broken__reported_once_at_the_sli():
    sli = {
        "apiVersion": "openslo/v1",
        "kind": "SLI",
        "metadata": {"name": "errors"},
        "spec": {"ratioMetric": {"bad": builtin("errors_total")}},
    }
    document = slo_document(indicatorRef="errors")
    del document["spec"]["indicator"]
    problems = problems_of(dump(sli, document))
    assert problems == [("documents[0].spec.ratioMetric.total", "required")]


def test_openslo_parse__only_an_sli__no_slo_refused():
    sli = {
        "apiVersion": "openslo/v1",
        "kind": "SLI",
        "metadata": {"name": "errors"},
        "spec": {"thresholdMetric": builtin("x_ms")},
    }
    assert problems_of(dump(sli)) == [("documents", "no SLO or DataSource document in the file")]


@pytest.mark.parametrize("text", ["", "# nothing here\n", "---\n"])
def test_openslo_parse__empty_file__no_slo_refused(text):
    assert problems_of(text) == [("documents", "no SLO or DataSource document in the file")]


@pytest.mark.parametrize("other", ["- a\n- b\n", "just text\n", "42\n"])
def test_openslo_parse__non_mapping_document__refused(other):
    problems = problems_of(dump(slo_document()) + "---\n" + other)
    assert problems == [
        ("documents[1]", "a document is a mapping (apiVersion, kind, metadata, spec)")
    ]


def test_openslo_parse__yaml_syntax_error__line_reported():
    text = "apiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: [unclosed\nspec: {}\n"
    ((path, reason),) = problems_of(text)
    assert path == "line 5"
    assert reason.startswith("YAML syntax error")


def test_openslo_parse__yaml_error_in_second_document__line_reported():
    text = dump(slo_document()) + "---\nkind: SLO\n  bad: indent\n"
    ((path, reason),) = problems_of(text)
    assert path == f"line {text.splitlines().index('  bad: indent') + 1}"
    assert "YAML syntax error" in reason


def test_openslo_parse__duplicate_key__refused_with_line():
    text = dump(slo_document()).replace(
        "  - target: 0.999\n", "  - target: 0.999\n    target: 0.9\n"
    )
    line = text.splitlines().index("    target: 0.9") + 1
    ((path, reason),) = problems_of(text)
    assert path == f"line {line}"
    assert "duplicate key 'target'" in reason


def test_openslo_parse__wrong_api_version__body_not_checked():
    document = slo_document()
    document["apiVersion"] = "openslo/v1alpha"
    document["spec"] = {"thresholdMetric": "old shape"}
    assert problems_of(dump(document)) == [
        ("documents[0].apiVersion", "must be openslo/v1 (got 'openslo/v1alpha')")
    ]


# --- hostile or oversized input: refused by path, never an exception ----------------------------


@pytest.mark.parametrize(
    ("path", "value", "at", "reason"),
    [
        (["spec", "service"], "s" * 81, "documents[0].spec.service", "at most 80 characters"),
        (
            ["metadata", "displayName"],
            "d" * 201,
            "documents[0].metadata.displayName",
            "at most 200 characters",
        ),
        (
            ["metadata", "annotations"],
            {"stepwise.dev/owner": "o" * 81},
            'documents[0].metadata.annotations["stepwise.dev/owner"]',
            "at most 80 characters",
        ),
        (
            ["spec", "objectives"],
            [{"target": 0.999, "displayName": "n" * 101}],
            "documents[0].spec.objectives[0].displayName",
            "at most 100 characters",
        ),
        (
            ["spec", "objectives"],
            [{"target": 10**400}],
            "documents[0].spec.objectives[0].target",
            "a fraction between 0 and 1",
        ),
        (
            ["spec", "objectives"],
            [{"targetPercent": 5e-324}],
            "documents[0].spec.objectives[0].targetPercent",
            "too close to 0 or 100",
        ),
        (
            ["spec", "timeWindow"],
            [{"duration": "٢٨d", "isRolling": True}],
            "documents[0].spec.timeWindow[0].duration",
            "a whole number and a unit",
        ),
        (
            ["spec", "timeWindow"],
            [
                {
                    "duration": "1M",
                    "calendar": {"startTime": "2026-01-01T00:00:00+05:00", "timeZone": "UTC"},
                }
            ],
            "documents[0].spec.timeWindow[0].calendar.startTime",
            "without an offset",
        ),
    ],
)
def test_openslo_parse__too_long_too_big_or_offset__refused_at_path(path, value, at, reason):
    assert reason in reason_at(problems_of(with_change(path, value)), at)


def test_openslo_parse__huge_time_slice_window__refused_at_path():
    text = dump(
        slo_document(
            budgetingMethod="Timeslices",
            objectives=[{"target": 0.99, "timeSliceTarget": 0.9, "timeSliceWindow": 10**400}],
        )
    )
    assert "not supported" in reason_at(
        problems_of(text), "documents[0].spec.objectives[0].timeSliceWindow"
    )


def test_openslo_parse__aliases__refused_before_they_expand():
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )

    [(where, reason)] = problems_of(laughs)

    assert where == "line 2" and "aliases (*name) are not supported" in reason


def test_openslo_parse__nested_thousands_deep__refused_not_a_crash():
    assert problems_of("[" * 5000 + "]" * 5000) == [("text", "nested too deeply to read")]


def test_openslo_parse__window_and_calendar_start__stored_normalised():
    spec = parse_one(
        slo_document(
            timeWindow=[
                {
                    "duration": "0030d",
                    "calendar": {"startTime": "2026-01-01T00:00", "timeZone": "UTC"},
                }
            ]
        )
    )
    assert (spec.window_text, spec.calendar_start) == ("30d", "2026-01-01 00:00:00")
