"""Reactions to other apps' events."""

import logging
from typing import Any

from django.dispatch import receiver

from live.broadcast import stream_touch
from signals.services import samples_ingested
from signals.slos import slo_refreshed

logger = logging.getLogger(__name__)


@receiver(samples_ingested)
def evaluate_on_breaching_samples(sender: Any, metrics: set[str], **kwargs: Any) -> None:
    """A sample of a metric that a running fail condition reads is checked now, not at the
    next interval: the worker evaluates the fail condition and acts if it holds."""
    from rollouts.services.evaluation import breaches_mark
    from rollouts.tasks import verification_evaluate_task

    for verification_id, token in breaches_mark(metrics):
        try:
            verification_evaluate_task.delay(verification_id, "ingest", token)
        except Exception:  # the broker is down: the samples are stored and the breach marked
            # The beat tick re-enqueues marked breaches once the broker is back; answering the
            # ingest with a 500 would only make the client retry a batch already stored.
            logger.warning("could not enqueue the breach check of verification %s", verification_id)
            return


@receiver(slo_refreshed)
def push_budget_gates_that_moved(
    sender: Any, slo_id: int, budget_before: float | None, budget_after: float | None, **kwargs: Any
) -> None:
    """A gate that a rollup opened or closed shows on the plan and step pages now, rather than at
    their next event: a TPM watching for the budget to recover sees Start come back."""
    from rollouts.gates import plans_whose_gates_moved

    for plan in plans_whose_gates_moved(
        slo_id=slo_id, budget_before=budget_before, budget_after=budget_after
    ):
        stream_touch(stream=plan.stream, event="budget_gate")
