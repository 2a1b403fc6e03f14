"""Signal receivers: thin. Each one calls a service and never lets its failure reach the sender."""

import logging
from typing import Any

from django.dispatch import receiver

from incidents.alerts import step_failure_page
from rollouts.services.evaluation import step_paged

logger = logging.getLogger(__name__)


@receiver(step_paged, dispatch_uid="incidents.step_paged")
def step_paged_received(sender: Any, *, step_id: int, reason: str, **kwargs: Any) -> None:
    # step_paged is sent from on_commit, after the step's failure is stored: raising here would
    # hit the verification worker after the fact and skip the other on_commit callbacks.
    try:
        step_failure_page(step_id=step_id, reason=reason)
    except Exception:
        logger.exception("could not page an incident for a failed step", extra={"step_id": step_id})
