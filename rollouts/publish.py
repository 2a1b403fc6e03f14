"""Pushes for rollouts pages: one rendering per thing, the same partials the views render."""

from django.db import transaction

from live.broadcast import stream_publish
from rollouts.models import Plan


@transaction.atomic
def plan_publish(*, plan: Plan, event: str) -> None:
    """Re-render the live parts of the plan page (status, steps, deviations) for its stream."""
    from rollouts.selectors import plan_live_context

    stream_publish(
        stream=plan.stream,
        event=event,
        template="rollouts/_plan_live.html",
        context=plan_live_context(plan_id=plan.pk),
    )
