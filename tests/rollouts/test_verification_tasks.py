import uuid
from datetime import timedelta
from unittest import mock

import pytest
from celery.exceptions import Retry
from django.utils import timezone

from rollouts.models import Step, Verification
from rollouts.services.steps import step_transition
from rollouts.tasks import (
    MAX_SOURCE_RETRIES,
    convergence_check_task,
    verification_evaluate_task,
    verifications_tick,
)
from signals.measurements import retry_delay_seconds, source_retry_allowed
from signals.services import metric_source_create, samples_ingest

pytestmark = pytest.mark.django_db

PROMETHEUS_MEASUREMENTS = {
    "error_rate": {"source": "prom", "query": "sum(rate(errors[5m])) / sum(rate(requests[5m]))"}
}
CONVERGENCE = {
    "measurement": {
        "metric": "config_version",
        "aggregation": "max",
        "matchers": {"region": "{target}"},
    },
    "condition": "value >= 42",
}


def _run(make_plan, **fields) -> Verification:
    plan = make_plan([{"key": "ramp", "targets": ["eu-west"]}])
    step = plan.steps.get()
    Step.objects.filter(pk=step.pk).update(**fields)
    step_transition(step_id=step.pk, action="start", actor=None, reason="ramp begins")
    return step.verifications.get()


@pytest.fixture
def down_prometheus_run(make_plan) -> Verification:
    """A running verification whose only measurement reads a Prometheus that refuses connections."""
    metric_source_create(
        name="prom", kind="prometheus", url="http://127.0.0.1:9", timeout_seconds=0.5
    )
    return _run(make_plan, measurements=PROMETHEUS_MEASUREMENTS)


def test_verification_evaluate_task__retryable_error_budget_left__retries_and_records_nothing(
    down_prometheus_run,
):
    run = down_prometheus_run
    with (
        mock.patch("rollouts.tasks.source_retry_allowed", return_value=True) as allowed,
        mock.patch.object(verification_evaluate_task, "retry", side_effect=Retry()) as retry,
    ):
        result = verification_evaluate_task.apply(args=(run.pk, "interval"))

    assert result.state == "RETRY"
    allowed.assert_called_once_with("prom")
    assert 0 <= retry.call_args.kwargs["countdown"] <= 1  # first attempt: at most base * 2**0
    run.refresh_from_db()
    assert (run.measured, run.errors) == (0, 0)


def test_verification_evaluate_task__budget_spent__records_an_error_without_retrying(
    down_prometheus_run,
):
    run = down_prometheus_run
    with (
        mock.patch("rollouts.tasks.source_retry_allowed", return_value=False),
        mock.patch.object(verification_evaluate_task, "retry") as retry,
    ):
        verification_evaluate_task.apply(args=(run.pk, "interval"))

    retry.assert_not_called()
    [evaluation] = run.evaluations.all()
    assert (evaluation.outcome, evaluation.trigger) == ("error", "interval")
    assert "error_rate: " in evaluation.reason


def test_verification_evaluate_task__source_stays_down__retries_max_times_then_one_error(
    down_prometheus_run,
):
    run = down_prometheus_run
    with mock.patch("rollouts.tasks.source_retry_allowed", return_value=True) as allowed:
        verification_evaluate_task.apply(args=(run.pk, "interval"))  # eager: retries run inline

    assert allowed.call_count == MAX_SOURCE_RETRIES
    run.refresh_from_db()
    assert (run.measured, run.errors, run.consecutive_errors) == (1, 1, 1)
    assert run.evaluations.get().outcome == "error"


def test_verification_evaluate_task__query_error_not_retryable__error_at_once(make_plan):
    # No source named "prom": a configuration problem that no retry would fix.
    run = _run(make_plan, measurements=PROMETHEUS_MEASUREMENTS)
    with mock.patch("rollouts.tasks.source_retry_allowed") as allowed:
        verification_evaluate_task.apply(args=(run.pk, "interval"))

    allowed.assert_not_called()
    evaluation = run.evaluations.get()
    assert evaluation.outcome == "error" and "no metric source named 'prom'" in evaluation.reason


def test_verification_evaluate_task__stale_token__records_nothing(make_plan):
    run = _run(make_plan)
    samples_ingest(
        payload={
            "samples": [
                {
                    "name": "http_requests",
                    "timestamp": (timezone.now() - timedelta(seconds=5)).isoformat(),
                    "value": 100.0,
                }
            ]
        }
    )
    verification_evaluate_task.apply(args=(run.pk, "interval", 0))
    verification_evaluate_task.apply(args=(run.pk, "interval", 0))  # redelivered

    assert run.evaluations.count() == 1


def test_verifications_tick__due_run_and_converging_step__enqueued_run_claimed_once(make_plan):
    run = _run(make_plan)
    converging = make_plan([{"key": "config", "targets": ["us-east"]}], key="config").steps.get()
    Step.objects.filter(pk=converging.pk).update(convergence=CONVERGENCE)
    for action in ("start", "advance", "advance"):
        step_transition(step_id=converging.pk, action=action, actor=None, reason="push")
    with (
        mock.patch.object(verification_evaluate_task, "delay") as evaluate,
        mock.patch.object(convergence_check_task, "delay") as converge,
    ):
        verifications_tick()
        verifications_tick()

    evaluate.assert_called_once_with(run.pk, "interval", 0)
    # The predicate is cheap and idempotent: checked on every tick while a target is pending.
    assert converge.call_args_list == [mock.call(converging.pk)] * 2


@pytest.mark.parametrize("attempt", range(8))
def test_retry_delay_seconds__attempt__within_full_jitter_bound(attempt):
    bound = min(30.0, 1.0 * 2**attempt)
    delays = [retry_delay_seconds(attempt) for _ in range(200)]
    assert all(0 <= d <= bound for d in delays)
    assert max(delays) > bound / 2  # jittered over the whole range, not stuck near 0


def test_retry_delay_seconds__custom_base_and_cap__cap_holds():
    assert all(0 <= retry_delay_seconds(10, base=0.5, cap=4.0) <= 4.0 for _ in range(200))


def test_source_retry_allowed__budget_per_minute__refused_once_spent_fresh_next_minute(settings):
    settings.SOURCE_RETRY_BUDGET_PER_MINUTE = 3
    source = f"prom-{uuid.uuid4().hex}"  # a key no other test or run has spent from
    with mock.patch("signals.measurements.time") as clock:
        clock.time.return_value = 1_700_000_000.0
        assert [source_retry_allowed(source) for _ in range(4)] == [True, True, True, False]
        assert source_retry_allowed(f"{source}-other")  # each source has its own budget
        clock.time.return_value += 60
        assert source_retry_allowed(source)


def test_task_route__send_task_without_arguments__default_queue():
    from rollouts.tasks import task_route

    assert task_route("stepwise.tasks.worker_heartbeat", None, None, {}) is None


def _breach() -> None:
    at = (timezone.now() - timedelta(seconds=5)).isoformat()
    samples_ingest(
        payload={
            "samples": [
                {"name": "http_errors", "timestamp": at, "value": 100.0},
                {"name": "http_requests", "timestamp": at, "value": 1000.0},
            ]
        }
    )


def test_breach__its_task_lost_with_a_worker__the_tick_enqueues_it_again_once_judged(
    make_plan, django_capture_on_commit_callbacks
):
    """A worker killed while holding a breach's task: Redis would redeliver it only after the
    visibility timeout (an hour). The breach is marked when it arrives; the beat tick finds it
    unjudged after a few seconds and enqueues it again, and the evaluation clears the mark."""
    run = _run(make_plan, failure_limit=1)
    with (
        mock.patch.object(verification_evaluate_task, "delay") as lost,
        django_capture_on_commit_callbacks(execute=True),
    ):
        _breach()
    lost.assert_called_once_with(run.pk, "ingest", 0)
    run.refresh_from_db()
    assert run.breach_pending_since is not None

    with mock.patch.object(verification_evaluate_task, "delay") as again:
        verifications_tick()  # too early: its own task may still be on the way
    assert [c for c in again.call_args_list if c.args[1] == "ingest"] == []

    Verification.objects.filter(pk=run.pk).update(
        breach_pending_since=timezone.now() - timedelta(seconds=4)
    )
    with mock.patch.object(verification_evaluate_task, "delay") as again:
        verifications_tick()
    again.assert_any_call(run.pk, "ingest", 0)

    # The redelivery and a late copy of the lost task: one evaluation, one failure counted.
    verification_evaluate_task.apply(args=(run.pk, "ingest", 0))
    verification_evaluate_task.apply(args=(run.pk, "ingest", 0))
    run.refresh_from_db()
    assert (run.failed, run.evaluations.count(), run.breach_pending_since) == (1, 1, None)


def test_breach__broker_down__samples_kept_breach_marked_and_no_error_to_the_client(
    make_plan, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError as BrokerDown

    run = _run(make_plan)
    with (
        mock.patch.object(verification_evaluate_task, "delay", side_effect=BrokerDown("down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        _breach()  # raised before: the client saw a 500 and retried a stored batch
    run.refresh_from_db()
    assert run.breach_pending_since is not None
