"""The thrash detector: a plan that keeps changing course is failing as surely as one that never
does. Flagged: more than THRASH_ADAPTS adapt decisions within the last THRASH_DAYS days, a kill
within THRASH_KILL_AFTER_PERSIST_DAYS of a persist (the persist was sunk cost talking), or a call
reversed and then restored within THRASH_REVERSAL_HOURS (persist → adapt → persist: a flip-flop,
decided on noise rather than evidence)."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from core.text import seconds_text
from rollouts.models import Decision, Plan


@dataclass(frozen=True)
class _Call:
    pk: int
    decided: str
    at: datetime


def _days(value: float) -> str:
    days = round(value, 1)
    return f"{days:g} day{'' if days == 1 else 's'}"


def _gap(gap: timedelta) -> str:
    hours = gap.total_seconds() / 3600
    if hours < 1:
        return seconds_text(gap.total_seconds())
    if hours < 24:
        return f"{int(hours)} hour{'' if int(hours) == 1 else 's'}"
    return _days(hours / 24)


def thrash_reason(calls: list[_Call], *, now: datetime) -> str | None:
    """Why one plan's decisions (oldest first, corrected ones left out) are thrash, or None."""
    adapts, days = settings.THRASH_ADAPTS, settings.THRASH_DAYS
    kill_after = settings.THRASH_KILL_AFTER_PERSIST_DAYS
    reasons = []
    recent = [
        c
        for c in calls
        if c.decided == Decision.Decided.ADAPT and c.at >= now - timedelta(days=days)
    ]
    if len(recent) > adapts:
        reasons.append(
            f"{len(recent)} adapt decisions in the last {_days(days)} (more than {adapts}): "
            + ", ".join(f"#{c.pk}" for c in recent)
        )
    last_persist = None
    for call in calls:
        if call.decided == Decision.Decided.PERSIST:
            last_persist = call
        elif call.decided == Decision.Decided.KILL and last_persist is not None:
            gap = call.at - last_persist.at
            if gap <= timedelta(days=kill_after):
                reasons.append(
                    f"killed {_gap(gap)} after deciding to persist "
                    f"(#{last_persist.pk} persist, #{call.pk} kill; within {_days(kill_after)})"
                )
    window = timedelta(hours=settings.THRASH_REVERSAL_HOURS)
    for first, second, third in zip(calls, calls[1:], calls[2:], strict=False):
        if first.decided == third.decided != second.decided and third.at - first.at <= window:
            reasons.append(
                f"flip-flopped within {_gap(third.at - first.at)}: #{first.pk} {first.decided}, "
                f"#{second.pk} {second.decided}, #{third.pk} {third.decided} "
                f"(within {settings.THRASH_REVERSAL_HOURS:g} hours)"
            )
    return "; ".join(reasons) or None


def plans_thrashing(plans: Iterable[Plan | int], *, now: datetime | None = None) -> dict[int, str]:
    """Plan id -> why it is thrashing, for the plans that are. One query over their decisions;
    a decision a later one corrects no longer counts (the correction does)."""
    ids = [p if isinstance(p, int) else p.pk for p in plans]
    if not ids:
        return {}
    now = now or timezone.now()
    rows = list(
        Decision.objects.filter(plan_id__in=ids)
        .order_by("created_at", "pk")
        .values_list("pk", "plan_id", "decided", "created_at", "corrects_id")
    )
    corrected = {corrects for *_, corrects in rows if corrects is not None}
    calls: dict[int, list[_Call]] = defaultdict(list)
    for pk, plan_id, decided, at, _ in rows:
        if pk not in corrected:
            calls[plan_id].append(_Call(pk=pk, decided=decided, at=at))
    return {
        plan_id: reason
        for plan_id, plan_calls in calls.items()
        if (reason := thrash_reason(plan_calls, now=now))
    }
