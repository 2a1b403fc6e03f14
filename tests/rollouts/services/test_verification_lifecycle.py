"""A run that proves nothing does not pass, a stuck step is verified again, a paused plan's
verified step moves on when it resumes."""

from unittest import mock

import pytest

from core.errors import TransitionRefused
from rollouts.models import Plan, Step, Verification
from rollouts.services.steps import plan_transition, step_transition
from rollouts.tasks import verification_evaluate_task
from signals.measurements import MeasurementInvalid, measurement_spec_parse
from tests.rollouts.services.test_evaluation import (
    BETWEEN,
    HEALTHY,
    _evaluate,
    _ledger,
    _run,
    _started,
    _traffic,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_enqueue():
    with mock.patch.object(verification_evaluate_task, "delay"):
        yield


def test_verification__count_reached_without_a_pass__inconclusive_not_successful(make_plan):
    step = _started(make_plan, verify_count=2, inconclusive_limit=5)
    _traffic(*BETWEEN)  # neither condition holds
    run = _run(step)
    _evaluate(run)
    _evaluate(run)
    run.refresh_from_db()
    step.refresh_from_db()
    assert run.status == Verification.Status.INCONCLUSIVE
    assert "none passed" in run.conclusion
    assert step.status == Step.Status.RUNNING
    assert Plan.objects.get(pk=step.plan_id).status == Plan.Status.PAUSED


def test_step_reverify__after_an_inconclusive_run__new_run_then_passes_and_advances(make_plan):
    step = _started(make_plan, verify_count=1)
    run = _run(step)
    _evaluate(run)  # no data yet: inconclusive, the plan pauses for a person
    run.refresh_from_db()
    assert run.status == Verification.Status.INCONCLUSIVE

    with pytest.raises(TransitionRefused, match="plan is paused"):
        step_transition(step_id=step.pk, action="reverify", actor=None, reason="data is back")
    plan_transition(plan_id=step.plan_id, action="resume", actor=None, reason="exporter fixed")
    step_transition(step_id=step.pk, action="reverify", actor=None, reason="data is back")
    with pytest.raises(TransitionRefused, match="already running"):
        step_transition(step_id=step.pk, action="reverify", actor=None, reason="twice")

    second = step.verifications.get(status=Verification.Status.RUNNING)
    assert second.pk != run.pk
    assert _ledger(step, "verification.started")[-1]["reason"] == "data is back"
    _traffic(*HEALTHY)
    _evaluate(second)
    step.refresh_from_db()
    assert step.status == Step.Status.CONVERGING


def test_plan_resume__run_succeeded_while_paused__step_advances(make_plan):
    step = _started(make_plan, verify_count=1)
    plan_transition(plan_id=step.plan_id, action="pause", actor=None, reason="change freeze")
    _traffic(*HEALTHY)
    run = _run(step)
    _evaluate(run)
    run.refresh_from_db()
    step.refresh_from_db()
    assert run.status == Verification.Status.SUCCESSFUL
    assert "waits to advance" in run.action
    assert step.status == Step.Status.RUNNING

    plan_transition(plan_id=step.plan_id, action="resume", actor=None, reason="freeze over")
    step.refresh_from_db()
    assert step.status == Step.Status.CONVERGING
    assert _ledger(step, "step.converging")[0]["reason"] == "verified while the plan was paused"


def test_measurement__builtin_query_naming_a_source__refused():
    with pytest.raises(MeasurementInvalid, match="takes a PromQL query") as caught:
        measurement_spec_parse("p99", {"source": "prom", "metric": "x", "aggregation": "p99"})
    assert caught.value.field == "source"
