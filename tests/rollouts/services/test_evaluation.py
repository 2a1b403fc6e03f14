import random
import threading
import time
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection, connections
from django.utils import timezone

from core.errors import TransitionRefused
from ledger.models import LedgerEntry
from rollouts.models import Evaluation, Flag, Step, Verification
from rollouts.services import evaluation as evaluation_module
from rollouts.services.evaluation import (
    Measured,
    evaluation_record,
    step_paged,
    verification_evaluate,
    verification_measure,
    verifications_claim_due,
)
from rollouts.services.steps import step_transition
from rollouts.tasks import verification_evaluate_task
from signals.measurements import Reading
from signals.services import metric_source_create, samples_ingest

pytestmark = pytest.mark.django_db

ERROR_RATE_QUERY = "sum(http_errors[5m]) / sum(http_requests[5m])"
# The measurement tests/rollouts/conftest.py gives every VERIFIED step.
VERIFIED_MEASUREMENTS = {
    "error_rate": {
        "metric": "http_errors",
        "aggregation": "ratio",
        "ratio_of": "sum",
        "denominator": {"metric": "http_requests"},
        "window": "5m",
    }
}
# (errors, requests) in the window: a VERIFIED step passes below 1 %, fails above 2 %.
HEALTHY = (1.0, 1000.0)
BREACHING = (100.0, 1000.0)
BETWEEN = (15.0, 1000.0)
CANARY = {
    "confidence": 0.98,
    "pass_score": 95,
    "marginal_score": 75,
    "metrics": {
        "latency": {
            "metric": "req_ms",
            "aggregation": "avg",
            "matchers": {"track": "canary"},
            "baseline_matchers": {"track": "stable"},
            "window": "5m",
            "direction": "increase",
        }
    },
}


def _ago(seconds: float) -> str:
    return (timezone.now() - timedelta(seconds=seconds)).isoformat()


def _traffic(errors: float, requests: float, *, seconds_ago: float = 5) -> None:
    at = _ago(seconds_ago)
    samples_ingest(
        payload={
            "samples": [
                {"name": "http_errors", "labels": {}, "timestamp": at, "value": errors},
                {"name": "http_requests", "labels": {}, "timestamp": at, "value": requests},
            ]
        }
    )


def _latencies(*, baseline: list[float], canary: list[float]) -> None:
    samples = [
        {"name": "req_ms", "labels": {"track": track}, "timestamp": _ago(5 + i * 2), "value": v}
        for track, values in (("stable", baseline), ("canary", canary))
        for i, v in enumerate(values)
    ]
    samples_ingest(payload={"samples": samples})


def _started(make_plan, *, spec: dict | None = None, **fields) -> Step:
    """A one-step active plan, its step given `fields` (test setup) and then started."""
    plan = make_plan([{"key": "ramp", "targets": ["eu-west"], **(spec or {})}])
    step = plan.steps.get()
    if fields:
        Step.objects.filter(pk=step.pk).update(**fields)
    step_transition(step_id=step.pk, action="start", actor=None, reason="ramp begins")
    step.refresh_from_db()
    return step


def _run(step: Step) -> Verification:
    return step.verifications.get()


def _evaluate(run: Verification, trigger: str = "interval") -> Evaluation | None:
    return verification_evaluate(verification_id=run.pk, trigger=trigger)


def _ledger(step: Step, action: str) -> list[dict]:
    return list(
        LedgerEntry.objects.filter(step_id=step.pk, action=action)
        .order_by("seq")
        .values_list("payload", flat=True)
    )


def _failed_because(step: Step) -> dict:
    """The error-rate reading the one `verification.failed` ledger entry keeps."""
    [failed] = _ledger(step, "verification.failed")
    return failed["readings"]["error_rate"]["canary"]


def _status(model) -> str:
    model.refresh_from_db()
    return model.status


def _error_measured() -> Measured:
    """What a worker measures while the source is down."""
    reading = Reading(None, ERROR_RATE_QUERY, "source down", error=True, retryable=True)
    return Measured(readings={"error_rate": {"canary": reading}})


# --- start ---------------------------------------------------------------------------------------


def test_step_start__verified_step__one_running_run_snapshots_step_and_watches_fail_metrics(
    make_plan,
):
    measurements = {
        **VERIFIED_MEASUREMENTS,
        "latency": {"metric": "req_ms", "aggregation": "p99", "window": "5m"},
    }
    step = _started(
        make_plan,
        measurements=measurements,
        pass_condition="error_rate < 0.01 && latency < 500",
        fail_condition="error_rate > 0.02",
        verify_count=5,
        verify_interval_seconds=30,
        failure_limit=1,
        consecutive_error_limit=2,
        inconclusive_limit=3,
    )
    run = _run(step)
    # A later edit of the step must not rewrite the run that is checking it.
    Step.objects.filter(pk=step.pk).update(fail_condition="error_rate > 0.5", verify_count=1)
    run.refresh_from_db()

    assert run.status == "running"
    assert (run.pass_condition, run.fail_condition) == (
        "error_rate < 0.01 && latency < 500",
        "error_rate > 0.02",
    )
    assert run.measurements == measurements
    assert (
        run.count,
        run.interval_seconds,
        run.failure_limit,
        run.consecutive_error_limit,
        run.inconclusive_limit,
        run.on_fail,
    ) == (5, 30, 1, 2, 3, "pause_plan")
    assert run.next_due_at is not None and run.next_due_at <= timezone.now()
    # The ratio reads both series; latency is read by the pass condition only.
    assert set(run.watches.values_list("metric", flat=True)) == {"http_errors", "http_requests"}
    [started] = _ledger(step, "verification.started")
    assert started["verification"] == run.pk and started["fail"] == "error_rate > 0.02"


# --- a run that passes ---------------------------------------------------------------------------


def test_verification__three_healthy_evaluations__successful_and_step_verifying_then_converging(
    make_plan,
):
    step = _started(make_plan)
    run = _run(step)
    _traffic(*HEALTHY)

    first, second = _evaluate(run), _evaluate(run)
    assert (first.outcome, second.outcome) == ("pass", "pass")
    assert (_status(run), _status(step)) == ("running", "running")

    third = _evaluate(run)
    run.refresh_from_db()
    assert third.outcome == "pass" and third.sequence == 3
    assert run.status == "successful" and run.conclusion == "3 of 3 evaluations passed"
    assert run.concluded_by_id == third.pk and run.next_due_at is None
    assert run.action == "advanced the step to converging"
    assert _status(step) == "converging"
    moves = [p["to"] for p in _ledger(step, "step.verifying") + _ledger(step, "step.converging")]
    assert moves == ["verifying", "converging"]
    assert _ledger(step, "step.converging")[0]["reason"] == "verification passed"
    reading = third.readings["error_rate"]["canary"]
    assert reading["value"] == pytest.approx(0.001)
    assert reading["query"] == ERROR_RATE_QUERY
    assert third.reason == "pass condition held: error_rate < 0.01 (error_rate=0.001)"


# --- on fail actions -----------------------------------------------------------------------------


def test_verification_fail__set_flag_percentage__flag_new_version_at_that_percentage_step_failed(
    make_plan,
):
    step = _started(
        make_plan,
        spec={"flag": "checkout", "percentage": 25},
        on_fail="set_flag_percentage",
        on_fail_percentage=Decimal("0"),
    )
    _traffic(*BREACHING)

    evaluation = _evaluate(_run(step))

    flag = Flag.objects.select_related("current").get(key="checkout")
    assert evaluation.outcome == "fail"
    assert flag.current.number == 3 and flag.current.rollout_percentage == Decimal("0.00")
    assert flag.current.enabled and flag.current.step_id == step.pk
    assert _status(step) == "failed"
    assert _run(step).action == "set checkout to 0% and failed the step"
    assert _failed_because(step) == {"value": pytest.approx(0.1), "query": ERROR_RATE_QUERY}
    assert _ledger(step, "verification.failed")[0]["conclusion"] == (
        "1 failed evaluation (failure limit 0)"
    )


def test_verification_fail__set_flag_percentage_above_the_start__refused_reverted_and_paged(
    make_plan, django_capture_on_commit_callbacks
):
    """Invariant 2: the flag was off when the step started; "on fail set 1%" would leave it
    more exposed than that, so the step is reverted to off instead and a person is paged."""
    step = _started(
        make_plan,
        spec={"flag": "checkout", "percentage": 25},
        on_fail="set_flag_percentage",
        on_fail_percentage=Decimal("1"),
    )
    pages = []
    step_paged.connect(lambda **kw: pages.append(kw["step_id"]), weak=False, dispatch_uid="t")
    try:
        _traffic(*BREACHING)
        with django_capture_on_commit_callbacks(execute=True):
            _evaluate(_run(step))
    finally:
        step_paged.disconnect(dispatch_uid="t")

    current = Flag.objects.select_related("current").get(key="checkout").current
    assert not current.enabled and current.restored_from.number == 1
    assert _status(step) == "reverted"
    assert _run(step).action.startswith("refused: on fail would set checkout to 1%, more than off")
    assert pages == [step.pk]
    [paged] = _ledger(step, "step.paged")
    assert "reverted instead" in paged["reason"]


def test_verification_fail__restore_previous_flag__flag_back_to_version_before_step_reverted(
    make_plan,
):
    step = _started(
        make_plan,
        spec={"flag": "checkout", "percentage": 25},
        on_fail="restore_previous_flag",
    )
    before = Flag.objects.get(key="checkout").versions.get(number=1).settings_dict()
    _traffic(*BREACHING)

    _evaluate(_run(step))

    current = Flag.objects.select_related("current__restored_from").get(key="checkout").current
    assert current.number == 3 and current.restored_from.number == 1
    assert current.settings_dict() == before
    assert _status(step) == "reverted"
    assert len(_ledger(step, "verification.failed")) == 1


def test_verification_fail__breach_marked_2s_ago_restores_flag__revert_timed_from_the_breach(
    make_plan,
):
    step = _started(
        make_plan, spec={"flag": "checkout", "percentage": 25}, on_fail="restore_previous_flag"
    )
    _traffic(*BREACHING)
    Verification.objects.filter(pk=_run(step).pk).update(
        breach_pending_since=timezone.now() - timedelta(seconds=2)
    )

    evaluation = _evaluate(_run(step), trigger="ingest")

    evaluation.refresh_from_db()
    assert 2 <= evaluation.revert_seconds < 30
    assert 0 < evaluation.duration_seconds < evaluation.revert_seconds


def test_verification_fail__pause_plan__flag_untouched_no_revert_time(make_plan):
    step = _started(make_plan, spec={"flag": "checkout", "percentage": 25}, on_fail="pause_plan")
    _traffic(*BREACHING)

    evaluation = _evaluate(_run(step))

    evaluation.refresh_from_db()
    assert evaluation.outcome == "fail" and evaluation.duration_seconds > 0
    assert evaluation.revert_seconds is None


def test_verification_fail__pause_plan__step_failed_and_plan_paused_naming_the_evaluation(
    make_plan,
):
    step = _started(make_plan, on_fail="pause_plan")
    _traffic(*BREACHING)

    evaluation = _evaluate(_run(step))

    assert _status(step) == "failed"
    assert _status(step.plan) == "paused"
    paused = LedgerEntry.objects.get(plan_id=step.plan_id, action="plan.paused").payload
    assert f"#{evaluation.sequence}: fail condition held: error_rate > 0.02" in paused["reason"]
    assert paused["evaluation"] == evaluation.pk
    assert _failed_because(step)["value"] == pytest.approx(0.1)


def test_plan_page__paused_by_a_verification__says_why_since_when_and_links_the_evaluation(
    make_plan, client, role_user
):
    step = _started(make_plan, on_fail="pause_plan")
    _traffic(*BREACHING)
    evaluation = _evaluate(_run(step))
    client.force_login(role_user("viewer"))

    html = client.get(f"/plans/{step.plan.key}/").content.decode()

    why = html[html.index('data-testid="plan-paused-why"') :].split("</p>", 1)[0]
    assert "Paused since" in why and "UTC" in why and "by stepwise" in why
    assert "fail condition held: error_rate &gt; 0.02" in why
    assert f"#evaluation-{evaluation.pk}" in why
    assert f"evaluation #{evaluation.sequence} of {step.key} (fail)" in why


def test_verification_fail__fail_and_page__step_failed_paged_once_after_commit(
    make_plan, django_capture_on_commit_callbacks
):
    step = _started(make_plan, on_fail="fail_and_page")
    _traffic(*BREACHING)
    pages = mock.Mock()
    step_paged.connect(pages, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            _evaluate(_run(step))
        pages.assert_not_called()  # nobody is paged for a change that may still roll back
        for callback in callbacks:
            callback()
    finally:
        step_paged.disconnect(pages)

    pages.assert_called_once()
    assert pages.call_args.kwargs["step_id"] == step.pk
    assert "fail condition held" in pages.call_args.kwargs["reason"]
    assert _status(step) == "failed"
    assert _status(step.plan) == "active"
    [paged] = _ledger(step, "step.paged")
    assert paged["verification"] == _run(step).pk
    assert _failed_because(step)["value"] == pytest.approx(0.1)


# --- exactly once --------------------------------------------------------------------------------


def _set_percentage_run(make_plan) -> tuple[Step, Measured]:
    step = _started(
        make_plan,
        spec={"flag": "checkout", "percentage": 25},
        on_fail="set_flag_percentage",
        on_fail_percentage=Decimal("0"),
    )
    _traffic(*BREACHING)
    return step, verification_measure(_run(step))


def test_evaluation_record__same_breaching_measured_twice__one_conclusion_second_returns_none(
    make_plan,
):
    step, measured = _set_percentage_run(make_plan)
    run = _run(step)

    first = evaluation_record(verification_id=run.pk, measured=measured, trigger="interval")
    second = evaluation_record(verification_id=run.pk, measured=measured, trigger="interval")

    assert first.outcome == "fail" and second is None
    assert run.evaluations.count() == 1
    assert len(_ledger(step, "verification.failed")) == 1
    assert Flag.objects.get(key="checkout").versions.count() == 3  # created, ramp, on-fail


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_evaluation_record__two_workers_at_once__one_failing_conclusion_one_flag_version(
    make_plan,
):
    step, measured = _set_percentage_run(make_plan)
    run = _run(step)
    barrier, results, crashed = threading.Barrier(2), [], []

    def record() -> None:
        try:
            barrier.wait()
            results.append(
                evaluation_record(verification_id=run.pk, measured=measured, trigger="interval")
            )
        except Exception as exc:
            crashed.append(repr(exc))
        finally:
            connections.close_all()

    with mock.patch.object(verification_evaluate_task, "delay"):
        threads = [threading.Thread(target=record) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert crashed == []
    assert sorted(r is None for r in results) == [False, True]
    assert run.evaluations.count() == 1
    assert LedgerEntry.objects.filter(step_id=step.pk, action="verification.failed").count() == 1
    assert Flag.objects.get(key="checkout").versions.count() == 3
    assert _status(step) == "failed"


def _wait_for_lock_wait(pid: int, *, timeout: float = 10.0) -> None:
    """Return once backend `pid` waits for a lock (pg_locks is live, unlike pg_stat_activity)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_evaluation_record__person_fails_step_while_run_fails__no_deadlock(make_plan, role_user):
    with mock.patch.object(verification_evaluate_task, "delay"):
        step = _started(make_plan)
        _traffic(*BREACHING)
    run = _run(step)
    measured = verification_measure(run)
    tpm = role_user("tpm")
    worker_holds_run, person_pid = threading.Event(), {}
    crashed, refused = [], []
    real_append = evaluation_module.ledger_append

    def append_then_let_the_person_in(**kwargs):
        entry = real_append(**kwargs)
        if kwargs["action"] == "verification.failed":
            worker_holds_run.set()
            _wait_for_lock_wait(person_pid["pid"])
        return entry

    def worker() -> None:
        try:
            evaluation_record(verification_id=run.pk, measured=measured, trigger="interval")
        except Exception as exc:
            crashed.append(repr(exc))
        finally:
            connections.close_all()

    def person() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                person_pid["pid"] = cursor.fetchone()[0]
            assert worker_holds_run.wait(10)
            step_transition(step_id=step.pk, action="fail", actor=tpm, reason="errors in EU")
        except TransitionRefused as exc:
            refused.append(str(exc))
        except Exception as exc:
            crashed.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=person), threading.Thread(target=worker)]
    with mock.patch.object(evaluation_module, "ledger_append", append_then_let_the_person_in):
        threads[0].start()
        while "pid" not in person_pid:
            time.sleep(0.01)
        threads[1].start()
        for t in threads:
            t.join()

    assert crashed == []
    assert _status(step) == "failed"
    assert _status(run) in {"failed", "cancelled"}


# --- limits --------------------------------------------------------------------------------------


def test_verification__failure_limit_1__first_failure_tolerated_second_acts(make_plan):
    step = _started(make_plan, failure_limit=1)
    run = _run(step)
    _traffic(*BREACHING)

    assert _evaluate(run).outcome == "fail"
    assert (_status(run), _status(step), _status(step.plan)) == ("running", "running", "active")
    assert _ledger(step, "verification.failed") == []

    _evaluate(run)
    assert (_status(run), _status(step), _status(step.plan)) == ("failed", "failed", "paused")
    assert run.conclusion == "2 failed evaluations (failure limit 1)"


PROMETHEUS_MEASUREMENTS = {
    "error_rate": {"source": "prom", "query": "sum(rate(errors[5m])) / sum(rate(requests[5m]))"}
}


def test_verification_evaluate__prometheus_source_refuses__error_never_pass(make_plan):
    metric_source_create(
        name="prom", kind="prometheus", url="http://127.0.0.1:9", timeout_seconds=0.5
    )
    step = _started(make_plan, measurements=PROMETHEUS_MEASUREMENTS)
    run = _run(step)

    evaluation = _evaluate(run)

    run.refresh_from_db()
    assert evaluation.outcome == "error"
    assert evaluation.reason.startswith("error_rate: ")
    assert evaluation.readings["error_rate"]["canary"]["error"] is True
    assert (run.status, run.errors, run.passed, run.measured) == ("running", 1, 0, 1)
    assert not run.watches.exists()  # a PromQL measurement has no samples to watch


def test_verification__consecutive_error_limit_1__second_error_ends_run_and_pauses_plan(
    make_plan,
):
    metric_source_create(
        name="prom", kind="prometheus", url="http://127.0.0.1:9", timeout_seconds=0.5
    )
    step = _started(make_plan, measurements=PROMETHEUS_MEASUREMENTS, consecutive_error_limit=1)
    run = _run(step)

    _evaluate(run)
    assert _status(run) == "running"
    _evaluate(run)

    run.refresh_from_db()
    assert run.status == "error" and run.conclusion == "2 errors in a row (limit 1)"
    assert _status(step.plan) == "paused"
    assert _status(step) == "running"  # an error says nothing about the change itself
    paused = LedgerEntry.objects.get(plan_id=step.plan_id, action="plan.paused").payload
    assert paused["reason"] == "ramp: verification error (2 errors in a row (limit 1))"
    assert paused["evaluation"] == run.evaluations.order_by("-sequence").first().pk
    assert run.action == f"paused the plan: {paused['reason']}"


def test_verification__pass_between_errors__consecutive_count_starts_again(make_plan):
    step = _started(make_plan, consecutive_error_limit=1, verify_count=5)
    run = _run(step)
    _traffic(*HEALTHY)

    for outcome in ("error", "pass", "error"):
        measured = _error_measured() if outcome == "error" else verification_measure(run)
        recorded = evaluation_record(verification_id=run.pk, measured=measured, trigger="interval")
        assert recorded.outcome == outcome
    run.refresh_from_db()
    assert (run.status, run.errors, run.consecutive_errors) == ("running", 2, 1)

    evaluation_record(verification_id=run.pk, measured=_error_measured(), trigger="interval")
    assert _status(run) == "error"


def test_verification__empty_window__inconclusive_not_enough_data_plan_paused_for_a_person(
    make_plan,
):
    step = _started(make_plan)  # inconclusive_limit 0: the first one ends the run
    run = _run(step)

    evaluation = _evaluate(run)

    run.refresh_from_db()
    assert evaluation.outcome == "inconclusive"
    assert evaluation.reason.startswith("not enough data: error_rate: denominator no data")
    assert run.status == "inconclusive" and run.conclusion.endswith("a person decides")
    assert (_status(step), _status(step.plan)) == ("running", "paused")
    paused = LedgerEntry.objects.get(plan_id=step.plan_id, action="plan.paused").payload
    assert "verification inconclusive" in paused["reason"]


def test_verification__neither_condition_holds__inconclusive_and_run_goes_on(make_plan):
    step = _started(make_plan, inconclusive_limit=2)
    run = _run(step)
    _traffic(*BETWEEN)

    evaluation = _evaluate(run)

    assert evaluation.outcome == "inconclusive"
    assert evaluation.reason.startswith("neither condition held (error_rate=0.015)")
    assert (_status(run), _status(step.plan)) == ("running", "active")


# --- breaching samples ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [HEALTHY, BETWEEN, None], ids=["healthy", "between", "no-data"])
def test_verification_evaluate__ingest_trigger_not_breaching__records_nothing(make_plan, data):
    step = _started(make_plan)
    run = _run(step)
    if data:
        _traffic(*data)

    assert _evaluate(run, trigger="ingest") is None

    run.refresh_from_db()
    assert (run.measured, run.status) == (0, "running")
    assert not run.evaluations.exists()


def test_verification_evaluate__ingest_trigger_breaching__failing_evaluation_and_action(
    make_plan,
):
    step = _started(make_plan)
    _traffic(*BREACHING)

    evaluation = _evaluate(_run(step), trigger="ingest")

    assert (evaluation.outcome, evaluation.trigger) == ("fail", "ingest")
    assert (_status(_run(step)), _status(step), _status(step.plan)) == (
        "failed",
        "failed",
        "paused",
    )
    assert _ledger(step, "verification.failed")[0]["trigger"] == "ingest"


def test_verification_evaluate__ingest_trigger_other_source_down__records_nothing(make_plan):
    metric_source_create(
        name="prom", kind="prometheus", url="http://127.0.0.1:9", timeout_seconds=0.5
    )
    step = _started(
        make_plan,
        measurements={
            **VERIFIED_MEASUREMENTS,
            "latency": {"source": "prom", "query": "histogram_quantile(0.99, rate(req[5m]))"},
        },
        pass_condition="error_rate < 0.01 && latency < 300",
        fail_condition="error_rate > 0.02 || latency > 500",
    )
    run = _run(step)
    _traffic(*HEALTHY)

    # Every ingested batch of http_errors triggers this; an outage of the other source must not
    # spend the run's consecutive-error budget at the ingest rate.
    assert _evaluate(run, trigger="ingest") is None
    run.refresh_from_db()
    assert (run.measured, run.errors) == (0, 0)


def test_samples_ingest__watched_metric__evaluation_task_enqueued_after_commit(
    make_plan, django_capture_on_commit_callbacks
):
    step = _started(make_plan)
    with mock.patch.object(verification_evaluate_task, "delay") as delay:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            _traffic(*BREACHING)
        delay.assert_not_called()  # a worker must not read samples that are not committed yet
        for callback in callbacks:
            callback()

    delay.assert_called_once_with(_run(step).pk, "ingest", 0)


def test_samples_ingest__unwatched_metric__nothing_enqueued(
    make_plan, django_capture_on_commit_callbacks
):
    _started(make_plan)
    with (
        mock.patch.object(verification_evaluate_task, "delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        samples_ingest(
            payload={"samples": [{"name": "req_ms", "timestamp": _ago(5), "value": 900.0}]}
        )

    delay.assert_not_called()


# --- claims and tokens ---------------------------------------------------------------------------


def test_verifications_claim_due__due_run__claimed_once_with_its_token_and_moved_on(make_plan):
    step = _started(make_plan, verify_interval_seconds=30)
    run = _run(step)
    now = timezone.now()

    assert verifications_claim_due(now=now) == [(run.pk, 0)]
    assert verifications_claim_due(now=now) == []
    run.refresh_from_db()
    assert run.next_due_at == now + timedelta(seconds=30)
    assert verifications_claim_due(now=now + timedelta(seconds=30)) == [(run.pk, 0)]


def test_evaluation_record__stale_token__records_nothing(make_plan):
    step = _started(make_plan)
    run = _run(step)
    _traffic(*HEALTHY)
    [(_, token)] = verifications_claim_due()
    measured = verification_measure(run)
    assert evaluation_record(
        verification_id=run.pk, measured=measured, trigger="interval", token=token
    )

    again = evaluation_record(
        verification_id=run.pk, measured=measured, trigger="interval", token=token
    )

    run.refresh_from_db()
    assert again is None
    assert (run.measured, run.passed) == (1, 1)


# --- a person moves the step ---------------------------------------------------------------------


@pytest.mark.parametrize("action", ["fail", "revert"])
def test_step_transition__person_moves_step_on__run_cancelled_later_evaluations_ignored(
    make_plan, role_user, action
):
    step = _started(make_plan)
    run = _run(step)
    _traffic(*BREACHING)

    step_transition(
        step_id=step.pk, action=action, actor=role_user("tpm"), reason="checkout errors in EU"
    )

    run.refresh_from_db()
    assert run.status == "cancelled" and "checkout errors in EU" in run.conclusion
    assert run.next_due_at is None
    [cancelled] = _ledger(step, "verification.cancelled")
    assert cancelled["verification"] == run.pk
    assert _evaluate(run) is None
    assert not run.evaluations.exists()
    assert _status(step.plan) == "active"  # the late breach took no action


# --- lockstep ------------------------------------------------------------------------------------


def test_verification__lockstep_partners__group_advances_when_the_last_run_succeeds(make_plan):
    plan = make_plan(
        [
            {"key": "eu", "lockstep": "gw", "targets": ["eu-west"]},
            {"key": "us", "lockstep": "gw", "targets": ["us-east"]},
        ]
    )
    Step.objects.filter(plan=plan).update(verify_count=1)
    eu, us = plan.steps.get(key="eu"), plan.steps.get(key="us")
    step_transition(step_id=eu.pk, action="start", actor=None, reason="both regions")
    _traffic(*HEALTHY)

    _evaluate(_run(eu))
    assert _status(_run(eu)) == "successful"
    assert _run(eu).action == "verified; waits for lockstep partners us"
    assert (_status(eu), _status(us)) == ("running", "running")

    _evaluate(_run(us))
    assert (_status(eu), _status(us)) == ("converging", "converging")


# --- canary --------------------------------------------------------------------------------------


def test_verification__canary_30_percent_slower__fails_with_score_and_distributions(make_plan):
    step = _started(make_plan, canary=CANARY)
    rng = random.Random(7)
    baseline = [rng.gauss(100, 8) for _ in range(80)]
    _latencies(baseline=baseline, canary=[rng.gauss(130, 10) for _ in range(80)])
    _traffic(*HEALTHY)

    evaluation = _evaluate(_run(step))

    assert evaluation.outcome == "fail"
    assert evaluation.reason.startswith("canary check failed: score 0")
    assert evaluation.canary["verdict"] == "fail" and evaluation.canary["score"] < 75
    kept_baseline, kept_canary = evaluation.canary["distributions"]["latency"]
    assert sorted(kept_baseline) == sorted(baseline) and len(kept_canary) == 80
    assert evaluation.canary["metrics"][0]["classification"] == "high"
    assert _status(step) == "failed"
    # The numbers the verdict rested on are in its ledger entry, not only in the reason's words.
    [failed] = _ledger(step, "verification.failed")
    assert failed["canary"]["score"] == evaluation.canary["score"]
    [latency] = failed["canary"]["metrics"]
    assert latency["p_value"] < 0.02 and latency["shift"] > 15
    assert (latency["canary_median"], latency["baseline_median"]) == (
        evaluation.canary["metrics"][0]["canary_median"],
        evaluation.canary["metrics"][0]["baseline_median"],
    )
    assert failed["canary"]["committed"] == _run(step).canary
    assert "distributions" not in failed["canary"]


def test_verification__canary_same_distribution__no_canary_failure(make_plan):
    step = _started(make_plan, canary=CANARY)
    rng = random.Random(11)
    values = [rng.gauss(100, 8) for _ in range(80)]
    _latencies(baseline=values, canary=list(values))
    _traffic(*HEALTHY)

    evaluation = _evaluate(_run(step))

    assert evaluation.outcome == "pass"
    assert evaluation.canary["verdict"] == "pass" and evaluation.canary["score"] == 100


# --- the step page -------------------------------------------------------------------------------


def test_step_page__after_an_evaluation__shows_run_status_row_and_query(
    make_plan, client, role_user
):
    step = _started(make_plan)
    _traffic(*HEALTHY)
    _evaluate(_run(step))
    client.force_login(role_user("viewer"))

    page = client.get(f"/plans/{step.plan.key}/steps/{step.key}/").content.decode()

    assert 'data-testid="verification-status">running<' in page
    assert page.count('data-testid="evaluation-row"') == 1
    assert ERROR_RATE_QUERY in page
    assert 'data-testid="canary-chart"' not in page


def test_step_page__canary_evaluation__shows_canary_chart(make_plan, client, role_user):
    step = _started(make_plan, canary=CANARY)
    rng = random.Random(3)
    _latencies(
        baseline=[rng.gauss(100, 8) for _ in range(60)],
        canary=[rng.gauss(130, 10) for _ in range(60)],
    )
    _traffic(*HEALTHY)
    _evaluate(_run(step))
    client.force_login(role_user("viewer"))

    page = client.get(f"/plans/{step.plan.key}/steps/{step.key}/").content.decode()

    assert 'data-testid="canary-chart"' in page
    assert f'id="canary-chart-{step.pk}"' in page
    assert "canary check failed" in page
    settings = page[page.index('data-testid="canary-settings"') :].split("</table>", 1)[0]
    assert "confidence 0.98" in settings and "score ≥ 95 passes" in settings
    assert "the canary increases" in settings


def test_evaluation_record__routine_repeat__pushes_nothing_news_is_pushed(make_plan, pushes):
    step = _started(make_plan, verify_count=6, failure_limit=3, inconclusive_limit=3)
    run, stream = _run(step), f"step:{step.pk}"
    _traffic(*HEALTHY)
    with pushes.commit():
        _evaluate(run)  # the first outcome is news
    with pushes.commit():
        _evaluate(run)
        _evaluate(run)  # pass, pass again: nothing a person needs pushed
    assert len(pushes.on(stream)) == 1
    _traffic(29.0, 1000.0, seconds_ago=1)  # 30 errors in 2,000 requests: between the two
    with pushes.commit():
        _evaluate(run)  # pass -> inconclusive
    assert len(pushes.on(stream)) == 2
    _traffic(0.0, 2000.0, seconds_ago=0.5)  # 30 in 4,000: healthy again
    with pushes.commit():
        _evaluate(run)  # back to pass
    assert len(pushes.on(stream)) == 3
    with pushes.commit():
        _evaluate(run)  # the sixth concludes the run
    assert _status(run) != Verification.Status.RUNNING
    assert len(pushes.on(stream)) == 4
    assert 'data-testid="verification-polled"' not in pushes.last_html(stream)


def test_step_page__running_verification__its_section_polls_itself(make_plan, client, role_user):
    step = _started(make_plan)
    _traffic(*HEALTHY)
    _evaluate(_run(step))
    client.force_login(role_user("viewer"))
    url = f"/plans/{step.plan.key}/steps/{step.key}/"
    page = client.get(url).content.decode()
    assert 'data-testid="verification-polled"' in page and 'hx-trigger="every 5s"' in page
    section = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="step-verification")
    html = section.content.decode()
    assert section.status_code == 200 and html.lstrip().startswith(
        '<section id="step-verification"'
    )
    assert html.count('data-testid="evaluation-row"') == 1
