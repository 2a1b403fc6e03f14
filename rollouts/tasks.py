"""Thin Celery tasks over the evaluation services. Idempotent: a verification's evaluation is
claimed with a token, so a redelivered task records nothing twice."""

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from rollouts.models import Verification
from rollouts.services.consumers import flag_consumers_fetched
from rollouts.services.evaluation import (
    breach_judged,
    breaches_unjudged,
    convergence_check,
    convergence_due_steps,
    evaluation_record,
    verification_measure,
    verifications_claim_due,
)
from rollouts.verification_spec import stored_measurements
from signals.measurements import retry_delay_seconds, source_retry_allowed

MAX_SOURCE_RETRIES = 3
URGENT_QUEUE = "urgent"


def task_route(
    name: str, args: tuple | None, kwargs: dict | None, options: dict, **_: object
) -> dict | None:
    """Celery router: an evaluation triggered by a breaching sample goes to the urgent queue.
    `send_task` without arguments routes with args and kwargs None."""
    args, kwargs = args or (), kwargs or {}
    trigger = args[1] if len(args) > 1 else kwargs.get("trigger")
    if name == "rollouts.tasks.verification_evaluate" and trigger == "ingest":
        return {"queue": URGENT_QUEUE}
    return None


@shared_task(name="rollouts.tasks.verifications_tick", ignore_result=True)
def verifications_tick() -> None:
    """Beat: enqueue each verification whose interval is up, and each converging step's
    convergence predicate."""
    for verification_id, token in verifications_claim_due():
        verification_evaluate_task.delay(verification_id, "interval", token)
    for verification_id, token in breaches_unjudged():
        verification_evaluate_task.delay(verification_id, "ingest", token)
    for step_id in convergence_due_steps():
        convergence_check_task.delay(step_id)


# The database unreachable (restarting, failing over): try again soon rather than drop the
# evaluation; a breaching sample's evaluation must survive a blip. Retry after 1 s, then every
# 2 s, for about two minutes (each attempt also waits up to the pool timeout for a connection);
# a breach still unjudged after that is re-sent by the tick (breaches_unjudged).
DATABASE_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 2,
    "retry_jitter": False,
    "max_retries": 30,
}


@shared_task(
    name="rollouts.tasks.verification_evaluate",
    bind=True,
    ignore_result=True,
    acks_late=True,
    **DATABASE_RETRY,
)
def verification_evaluate_task(
    self, verification_id: int, trigger: str, token: int | None = None
) -> None:
    started = timezone.now()
    verification = Verification.objects.filter(
        pk=verification_id, status=Verification.Status.RUNNING
    ).first()
    if verification is None:
        return
    measured = verification_measure(verification, fail_only=trigger == "ingest")
    if measured.retryable and self.request.retries < MAX_SOURCE_RETRIES:
        sources = {
            spec.source
            for spec in stored_measurements(verification.measurements).values()
            if spec.is_prometheus
        }
        if all(source_retry_allowed(source) for source in sorted(sources)):
            raise self.retry(countdown=retry_delay_seconds(self.request.retries))
    evaluation_record(
        verification_id=verification_id, measured=measured, trigger=trigger, token=token
    )
    breach_judged(verification_id=verification_id, since=started)


@shared_task(
    name="rollouts.tasks.convergence_check", ignore_result=True, acks_late=True, **DATABASE_RETRY
)
def convergence_check_task(step_id: int) -> None:
    convergence_check(step_id=step_id)


@shared_task(name="rollouts.tasks.flag_consumers_fetched", ignore_result=True, **DATABASE_RETRY)
def flag_consumers_fetched_task(fetches: list[list[int]]) -> None:
    """A serving process's once-a-second batch of [token id, revision served] pairs."""
    flag_consumers_fetched(fetches=dict(fetches))
