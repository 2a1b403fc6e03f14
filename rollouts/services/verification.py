"""Starting and stopping a step's verification run. Evaluating it is `rollouts.services.evaluation`.

Called from inside the step transitions (which hold the plan lock), so these never lock or push.
"""

from datetime import timedelta
from typing import Any

from django.utils import timezone

from ledger.services import ledger_append
from rollouts.models import Step, Verification, VerificationWatch
from rollouts.verification_spec import compiled_condition, stored_measurements


def verification_begin(step: Step, *, actor: Any = None, reason: str = "") -> Verification:
    """Start a run with a snapshot of the step's verification; the first evaluation is due after
    the initial delay. Metrics the fail condition reads are watched for breaching samples."""
    verification_cancel(step, reason="the step started again")
    now = timezone.now()
    verification = Verification.objects.create(
        step=step,
        pass_condition=step.pass_condition,
        fail_condition=step.fail_condition,
        measurements=step.measurements,
        canary=step.canary,
        on_fail=step.on_fail,
        on_fail_percentage=step.on_fail_percentage,
        interval_seconds=step.verify_interval_seconds,
        count=step.verify_count,
        failure_limit=step.failure_limit,
        consecutive_error_limit=step.consecutive_error_limit,
        inconclusive_limit=step.inconclusive_limit,
        next_due_at=now + timedelta(seconds=step.verify_initial_delay_seconds),
        started_at=now,
    )
    measurements = stored_measurements(step.measurements)
    fail = compiled_condition(step.fail_condition, frozenset(measurements))
    watched = {
        metric
        for name in fail.measurements | fail.baseline
        for metric in (measurements[name].metric, measurements[name].denominator_metric)
        if metric
    }
    VerificationWatch.objects.bulk_create(
        VerificationWatch(verification=verification, metric=metric) for metric in sorted(watched)
    )
    ledger_append(
        action="verification.started",
        subject=step,
        actor=actor,
        actor_label=None if actor else "stepwise",
        payload={
            "step": step.key,
            "verification": verification.pk,
            **({"reason": reason} if reason else {}),
            "pass": step.pass_condition,
            "fail": step.fail_condition,
            "interval_seconds": verification.interval_seconds,
            "count": verification.count,
        },
        plan_id=step.plan_id,
        step_id=step.pk,
    )
    return verification


def verification_cancel(step: Step, *, reason: str) -> None:
    """Stop a running verification because the step moved on without it (a person advanced,
    failed, reverted or skipped it). Its evaluations are kept."""
    for verification in Verification.objects.select_for_update().filter(
        step=step, status=Verification.Status.RUNNING
    ):
        verification.status = Verification.Status.CANCELLED
        verification.conclusion = reason[:500]
        verification.finished_at = timezone.now()
        verification.next_due_at = None
        verification.save(update_fields=["status", "conclusion", "finished_at", "next_due_at"])
        ledger_append(
            action="verification.cancelled",
            subject=step,
            actor=None,
            actor_label="stepwise",
            payload={"step": step.key, "verification": verification.pk, "reason": reason},
            plan_id=step.plan_id,
            step_id=step.pk,
        )
