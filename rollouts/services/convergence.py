"""Flag-step convergence: a target has converged when every registered consumer in it holds the
flag configuration revision that the step's flag version took effect at."""

import logging

from django.db import transaction

from core.errors import TransitionRefused
from live.broadcast import stream_touch
from rollouts.models import FlagConsumer, Step, StepTarget
from rollouts.services.steps import step_target_confirm

logger = logging.getLogger(__name__)


def flag_step_revision(step: Step) -> int | None:
    """The flag-config revision a flag step's last change took effect at."""
    return step.flag_versions.order_by("-number").values_list("config_revision", flat=True).first()


def flag_consumers_converged(*, consumer_id: int) -> list[StepTarget]:
    """After a consumer fetched a newer revision: confirm every active flag step in its target that
    all of that target's consumers now hold. Returns the targets confirmed."""
    consumer = FlagConsumer.objects.select_related("target").filter(pk=consumer_id).first()
    if consumer is None:
        return []
    confirmed, progressed = [], {}
    pending = StepTarget.objects.filter(
        target=consumer.target,
        state=StepTarget.State.PENDING,
        step__kind=Step.Kind.FLAG_RAMP,
        step__status__in=Step.ACTIVE,
    ).select_related("step__plan")
    peers = FlagConsumer.objects.filter(target=consumer.target)
    for row in pending:
        revision = flag_step_revision(row.step)
        if revision is None:
            continue
        if not peers.filter(held_revision__lt=revision).exists():
            try:
                with transaction.atomic():
                    confirmed.append(
                        step_target_confirm(
                            step_id=row.step_id,
                            target=consumer.target.name,
                            actor=None,
                            source="flag consumers",
                            evidence={
                                "revision": revision,
                                "consumers": list(peers.values_list("name", flat=True)),
                            },
                        )
                    )
            except TransitionRefused as exc:
                # A race, not a fault: `pending` was read before the plan was locked, and
                # meanwhile the step moved on (another consumer's or a person's confirmation
                # finished it, or it failed or was reverted). Nothing is left to confirm for
                # it; the other steps in this target still are.
                logger.info(
                    "flag consumer %s: %s in %s not confirmed: %s",
                    consumer.name,
                    row.step.key,
                    consumer.target.name,
                    exc,
                )
        else:
            progressed[row.step.plan_id] = row.step.plan
    # Partial progress: the step page shows each consumer catching up, so push each plan once.
    for plan in progressed.values():
        stream_touch(stream=plan.stream, event="flag_consumer.fetched")
    return confirmed
