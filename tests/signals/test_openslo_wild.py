"""OpenSLO as Sloth, Pyrra and Nobl9 users write it: inline metric sources without a
metricSourceRef, DataSource documents, and the counter/rate lint. Pure parsing, no database."""

from pathlib import Path

import pytest

from signals.openslo import DataSourceSpec, openslo_export, openslo_parse
from signals.slo_spec import MetricRef, SLISpec, SLOInvalid, sli_warnings
from tests.signals.test_openslo import dump, slo_document

WILD = Path(__file__).resolve().parent / "openslo_wild"
SLOTH_BAD = "documents[0].spec.indicator.spec.ratioMetric.bad.metricSource"
ANNOTATION = 'documents[0].metadata.annotations["stepwise.dev/metric-source"]'


def wild(name: str) -> str:
    return (WILD / name).read_text()


def problems_of(text: str, *sources: str) -> list[tuple[str, str]]:
    with pytest.raises(SLOInvalid) as caught:
        openslo_parse(text, prometheus_sources=sources)
    return caught.value.problems


def prometheus_inline(query: str) -> dict:
    return {"metricSource": {"type": "Prometheus", "spec": {"query": query}}}


def data_source(name: str = "prom", **connection: object) -> dict:
    return {
        "apiVersion": "openslo/v1",
        "kind": "DataSource",
        "metadata": {"name": name},
        "spec": {"type": "Prometheus", "connectionDetails": connection or {"url": "http://p:9090"}},
    }


def test_openslo_parse__sloth_file_and_one_registered_source__reads_that_source():
    parsed = openslo_parse(wild("sloth.yaml"), prometheus_sources=["prometheus"])

    (spec,) = parsed.slos
    assert spec.indicator.source == "prometheus"
    assert spec.indicator.counter is True
    assert spec.indicator.bad == MetricRef(
        query='sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[5m]))'
    )
    assert (spec.window_text, spec.objective) == ("30d", 0.999)


def test_openslo_parse__sloth_file_counter_left_true_with_rate__warned_at_each_query():
    parsed = openslo_parse(wild("sloth.yaml"), prometheus_sources=["prometheus"])

    assert [path for path, _ in parsed.warnings] == [
        f"{SLOTH_BAD}.spec",
        "documents[0].spec.indicator.spec.ratioMetric.total.metricSource.spec",
    ]
    assert "counter: true, but the query already computes rate()" in parsed.warnings[0][1]


def test_openslo_parse__inline_source_and_none_registered__refused_at_the_metric():
    (problem,) = problems_of(wild("sloth.yaml"))
    assert problem[0] == f"{SLOTH_BAD}.metricSourceRef"
    assert "no Prometheus metric source is registered" in problem[1]


def test_openslo_parse__inline_source_and_two_registered__refused_naming_both():
    (problem,) = problems_of(wild("sloth.yaml"), "thanos", "prometheus")
    assert problem[0] == f"{SLOTH_BAD}.metricSourceRef"
    assert "2 Prometheus metric sources could serve this metric (prometheus, thanos)" in problem[1]
    assert "stepwise.dev/metric-source" in problem[1]


def test_openslo_parse__pyrra_file_annotation_names_one_of_two__that_one_and_no_warning():
    parsed = openslo_parse(wild("pyrra.yaml"), prometheus_sources=["prometheus-k8s", "thanos"])

    (spec,) = parsed.slos
    assert spec.indicator.source == "prometheus-k8s"
    assert (spec.objective, spec.window_seconds, spec.owner) == (0.99, 14 * 86400, "observability")
    assert parsed.warnings == []


def test_openslo_parse__annotation_names_an_unknown_source__refused_with_the_choices():
    problems = problems_of(wild("pyrra.yaml"), "thanos", "victoria")
    assert problems == [
        (
            ANNOTATION,
            "no Prometheus metric source named 'prometheus-k8s'; choose from thanos, victoria",
        )
    ]


def test_openslo_parse__nobl9_file__data_source_sli_ref_and_raw_counter_warning():
    parsed = openslo_parse(wild("nobl9.yaml"))

    assert parsed.data_sources == [
        DataSourceSpec(
            name="prometheus-prod", url="http://prometheus.monitoring.svc:9090", path="documents[0]"
        )
    ]
    latency, availability = parsed.slos
    assert latency.indicator_name == "web-latency-good"
    assert {latency.indicator.source, availability.indicator.source} == {"prometheus-prod"}
    ((path, reason),) = parsed.warnings
    assert path == "documents[3].spec.indicator.spec.ratioMetric.total.metricSource.spec"
    assert "counter: false" in reason and "http_requests_total is a raw counter" in reason


def test_openslo_parse__inline_source_and_only_a_declared_data_source__reads_it():
    document = slo_document(
        indicator={
            "metadata": {"name": "x"},
            "spec": {
                "ratioMetric": {
                    "counter": True,
                    "bad": prometheus_inline('errors_total{job="x"}'),
                    "total": prometheus_inline('requests_total{job="x"}'),
                }
            },
        }
    )
    (spec,) = openslo_parse(dump(data_source("prom"), document)).slos
    assert spec.indicator.source == "prom"


def test_openslo_parse__inline_threshold_source__resolved_too():
    document = slo_document(
        indicator={
            "metadata": {"name": "p99"},
            "spec": {"thresholdMetric": prometheus_inline("histogram_quantile(0.99, x)")},
        },
        objectives=[{"target": 0.99, "op": "lt", "value": 0.3}],
    )
    (spec,) = openslo_parse(dump(document), prometheus_sources=["prom"]).slos
    assert spec.indicator == SLISpec(
        kind="threshold", source="prom", metric=MetricRef(query="histogram_quantile(0.99, x)")
    )


@pytest.mark.parametrize(
    ("name", "registered"),
    [
        ("sloth.yaml", ["prometheus"]),
        ("pyrra.yaml", ["prometheus-k8s", "thanos"]),
        ("nobl9.yaml", []),
    ],
)
def test_openslo_export__wild_files__parse_back_to_the_same_specs(name, registered):
    specs = openslo_parse(wild(name), prometheus_sources=registered).slos
    # The export names each source: it parses back without any source registered.
    assert openslo_parse(openslo_export(specs)).slos == specs


@pytest.mark.parametrize(
    ("connection", "path", "words"),
    [
        ({"url": "prometheus:9090"}, ".url", "must be an http(s) URL with a host"),
        ({"url": "ftp://prometheus:9090"}, ".url", "must be an http(s) URL"),
        ({"url": "http://p:9090/?x=1"}, ".url", "without ?query"),
        ({"url": ""}, ".url", "non-empty"),
        ({"url": "http://p:9090", "bearerToken": "s3cret"}, ".bearerToken", "env: reference"),
        ({"url": "http://me:s3cret@p:9090"}, ".url", "credentials do not go in the URL"),
        ({"url": "http://p:port"}, ".url", "must be an http(s) URL"),
    ],
)
def test_openslo_parse__bad_data_source__refused_at_its_path(connection, path, words):
    problems = problems_of(dump(data_source(**connection), slo_document()))
    reasons = [r for p, r in problems if p == f"documents[0].spec.connectionDetails{path}"]
    assert reasons and words in reasons[0], problems
    assert all("s3cret" not in reason for _, reason in problems)


def test_openslo_parse__data_source_of_another_type__refused():
    document = data_source()
    document["spec"]["type"] = "Datadog"
    problems = problems_of(dump(document, slo_document()))
    assert problems[0][0] == "documents[0].spec.type"
    assert "must be Prometheus" in problems[0][1]


def test_openslo_parse__two_data_sources_of_one_name__refused():
    problems = problems_of(dump(data_source(), data_source(), slo_document()))
    assert problems == [
        ("documents[1].metadata.name", "duplicate DataSource name; documents[0] has it too")
    ]


def test_openslo_parse__only_data_sources__accepted_without_slos():
    parsed = openslo_parse(dump(data_source("a"), data_source("b")))
    assert ([s.name for s in parsed.data_sources], parsed.slos) == (["a", "b"], [])


@pytest.mark.parametrize(
    ("counter", "query", "warned"),
    [
        (True, "sum(irate(x_total[1m]))", "irate()"),
        (True, "sum(increase(x_total[1m]))", "increase()"),
        (True, 'x_total{path="/rate(x)"}', ""),
        (True, "x_total", ""),
        (False, "sum(rate(x_total[5m]))", ""),
        (False, "sum(x_count)", "x_count is a raw counter"),
        (False, "x_sum", "x_sum is a raw counter"),
        (False, 'sum(x{name="y_total"})', ""),
        (False, "sum(errors)", ""),
    ],
)
def test_sli_warnings__counter_and_query__warned_when_they_contradict(counter, query, warned):
    sli = SLISpec(
        kind="ratio",
        source="p",
        bad=MetricRef(query=query),
        total=MetricRef(query="t"),
        counter=counter,
    )
    warnings = [reason for key, reason in sli_warnings(sli) if key == "bad"]
    assert [warned in reason for reason in warnings] == ([True] if warned else [])


def test_sli_warnings__builtin_counter_false_on_a_total__warned():
    sli = SLISpec(
        kind="ratio",
        bad=MetricRef(metric="login_failures_total"),
        total=MetricRef(metric="logins"),
        counter=False,
    )
    ((key, reason),) = sli_warnings(sli)
    assert key == "bad" and "each sample as a count of events" in reason
