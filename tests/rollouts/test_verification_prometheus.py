"""A step verified against a real Prometheus server: the numbers it saw, the PromQL it ran."""

import pytest

from rollouts.models import Evaluation, Plan, Step, Verification
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.steps import step_transition
from signals.services import metric_source_create
from tests.prometheus_server import PrometheusServer, prometheus_fixture, values  # noqa: F401

CANARY = 'stepwise_test_hit_ratio{track="canary"}'
BASELINE = 'stepwise_test_hit_ratio{track="baseline"}'


@pytest.fixture
def prometheus_step(make_plan, prometheus: PrometheusServer) -> Step:
    metric_source_create(name="prom-test", kind="prometheus", url=prometheus.url, timeout_seconds=2)
    plan = make_plan([{"key": "cache"}])
    step = plan.steps.get()
    step.measurements = {
        "hit_rate": {
            "source": "prom-test",
            "query": CANARY,
            "baseline_query": BASELINE,
            "window": "1m",
        }
    }
    step.pass_condition = "hit_rate > 0.9 && hit_rate >= baseline.hit_rate * 0.98"
    step.fail_condition = "hit_rate < baseline.hit_rate * 0.9"
    step.verify_count = 2
    step.save()
    step_transition(step_id=step.pk, action="start", actor=None)
    return step


def _scraped(prometheus: PrometheusServer, canary: float, baseline: float) -> None:
    prometheus.hit_ratio.labels(track="canary").set(canary)
    prometheus.hit_ratio.labels(track="baseline").set(baseline)
    prometheus.wait_for(
        "stepwise_test_hit_ratio",
        lambda r: values(r).get("canary") == canary and values(r).get("baseline") == baseline,
    )


@pytest.mark.prometheus
@pytest.mark.django_db
def test_verification__prometheus_healthy__passes_with_promql_and_values_kept(
    prometheus_step, prometheus
):
    _scraped(prometheus, canary=0.95, baseline=0.94)
    verification = prometheus_step.verifications.get()
    first = verification_evaluate(verification_id=verification.pk, trigger="interval")
    assert first.outcome == Evaluation.Outcome.PASS
    assert first.readings["hit_rate"]["canary"] == {"value": 0.95, "query": CANARY}
    assert first.readings["hit_rate"]["baseline"] == {"value": 0.94, "query": BASELINE}

    verification_evaluate(verification_id=verification.pk, trigger="interval")
    verification.refresh_from_db()
    prometheus_step.refresh_from_db()
    assert verification.status == Verification.Status.SUCCESSFUL
    assert prometheus_step.status == Step.Status.DONE  # no targets: converged once verified


@pytest.mark.prometheus
@pytest.mark.django_db
def test_verification__prometheus_canary_regresses__fails_and_pauses_the_plan(
    prometheus_step, prometheus
):
    _scraped(prometheus, canary=0.70, baseline=0.94)
    verification = prometheus_step.verifications.get()
    evaluation = verification_evaluate(verification_id=verification.pk, trigger="interval")
    assert evaluation.outcome == Evaluation.Outcome.FAIL
    assert "hit_rate=0.7" in evaluation.reason
    prometheus_step.refresh_from_db()
    assert prometheus_step.status == Step.Status.FAILED
    assert Plan.objects.get(pk=prometheus_step.plan_id).status == Plan.Status.PAUSED


@pytest.mark.prometheus
@pytest.mark.django_db
def test_verification__promql_returns_many_series__error_never_a_pass(make_plan, prometheus):
    metric_source_create(name="prom-test", kind="prometheus", url=prometheus.url, timeout_seconds=2)
    _scraped(prometheus, canary=0.95, baseline=0.95)
    step = make_plan([{"key": "cache"}]).steps.get()
    step.measurements = {"hit_rate": {"source": "prom-test", "query": "stepwise_test_hit_ratio"}}
    step.pass_condition, step.fail_condition = "hit_rate > 0.9", "hit_rate < 0.5"
    step.save()
    step_transition(step_id=step.pk, action="start", actor=None)
    evaluation = verification_evaluate(
        verification_id=step.verifications.get().pk, trigger="interval"
    )
    assert evaluation.outcome == Evaluation.Outcome.ERROR
    assert "vector of 2 series" in evaluation.reason
