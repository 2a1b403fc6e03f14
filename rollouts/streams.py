"""How rollouts pages are drawn for a push: the same partials the views render."""

from django.template.loader import render_to_string

from live.streams import stream_kind_register
from rollouts.forms import flag_restore_forms
from rollouts.models import Flag, Plan, Step
from rollouts.selectors import (
    flag_board_row,
    flag_history,
    plan_live_context,
    step_verification_context,
)


def plan_state(key: str) -> str:
    try:
        context = plan_live_context(plan_id=int(key))
    except Plan.DoesNotExist:  # deleted since it was touched
        return ""
    return render_to_string("rollouts/_plan_live.html", context)


def step_state(key: str) -> str:
    try:
        context = step_verification_context(step_id=int(key))
    except Step.DoesNotExist:
        return ""
    return render_to_string("rollouts/_step_verification.html", context)


def flag_rows(key: str, refs: list[str]) -> str:
    return "".join(
        render_to_string("rollouts/_flag_row.html", flag_board_row(flag=flag))
        for flag in Flag.objects.filter(pk__in=refs).order_by("key")
    )


def flag_state(key: str) -> str:
    flag = Flag.objects.filter(pk=int(key)).first()
    if flag is None:
        return ""
    context = flag_history(key=flag.key)
    flag_restore_forms(context["rows"], current_id=context["flag"].current_id)
    return render_to_string("rollouts/_flag_live.html", {**context, "live": True})


def register() -> None:
    stream_kind_register(kind="plan", permission="rollouts.view_plan", state=plan_state)
    stream_kind_register(kind="flags", permission="rollouts.view_flag", rows=flag_rows)
    stream_kind_register(kind="step", permission="rollouts.view_plan", state=step_state)
    stream_kind_register(kind="flag", permission="rollouts.view_flag", state=flag_state)
