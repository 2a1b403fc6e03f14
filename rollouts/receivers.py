"""Reactions to other apps' events."""

from typing import Any

from django.dispatch import receiver

from signals.services import samples_ingested


@receiver(samples_ingested)
def evaluate_on_breaching_samples(sender: Any, metrics: set[str], **kwargs: Any) -> None:
    """A sample of a metric that a running fail condition reads is checked now, not at the
    next interval: the worker evaluates the fail condition and acts if it holds."""
    from rollouts.services.evaluation import watched_verifications
    from rollouts.tasks import verification_evaluate_task

    for verification_id in watched_verifications(metrics):
        verification_evaluate_task.delay(verification_id, "ingest")
