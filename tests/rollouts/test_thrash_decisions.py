"""The thrash detector: too many adapts in a window, or a kill soon after a persist."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from rollouts.thrash import _Call, plans_thrashing, thrash_reason
from tests.rollouts.decision_factories import decide

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _calls(*spec: tuple[str, float]) -> list[_Call]:
    """(decided, days after T0) -> calls, numbered from 1."""
    return [
        _Call(pk=i, decided=decided, at=T0 + timedelta(days=days))
        for i, (decided, days) in enumerate(spec, start=1)
    ]


def test_plans_thrashing__four_adapts_within_the_window__flagged_with_the_count(
    make_plan, role_user, django_assert_num_queries
):
    plan, calm = make_plan([{"key": "a"}]), make_plan([{"key": "b"}], key="calm")
    tpm = role_user("tpm")
    adapts = [decide(plan, tpm, "adapt") for _ in range(4)]
    for _ in range(3):
        decide(calm, tpm, "adapt")

    with django_assert_num_queries(1):
        flagged = plans_thrashing([plan, calm])

    assert set(flagged) == {plan.pk}
    assert flagged[plan.pk] == (
        "4 adapt decisions in the last 14 days (more than 3): "
        + ", ".join(f"#{d.pk}" for d in adapts)
    )


def test_plans_thrashing__adapts_older_than_the_window__not_flagged(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    for _ in range(4):
        decide(plan, tpm, "adapt")

    later = datetime.now(tz=UTC) + timedelta(days=15)

    assert plans_thrashing([plan], now=later) == {}


def test_plans_thrashing__corrected_adapt__counts_once(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    first = decide(plan, tpm, "adapt")
    decide(plan, tpm, "adapt", corrects_id=first.pk)
    decide(plan, tpm, "adapt")
    decide(plan, tpm, "adapt")

    assert plans_thrashing([plan]) == {}


def test_plans_thrashing__kill_right_after_a_persist__flagged(make_plan, role_user):
    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    persist = decide(plan, tpm, "persist")
    kill = decide(plan, tpm, "kill")

    reason = plans_thrashing([plan])[plan.pk]

    assert re.match(r"killed [0-9.]+ s after deciding to persist", reason), reason
    assert f"(#{persist.pk} persist, #{kill.pk} kill; within 7 days)" in reason


def test_thrash_reason__kill_eight_days_after_persist__not_flagged():
    assert thrash_reason(_calls(("persist", 0), ("kill", 8)), now=T0) is None


def test_thrash_reason__kill_two_days_after_persist__flagged_in_days():
    reason = thrash_reason(_calls(("persist", 0), ("adapt", 1), ("kill", 2)), now=T0)

    assert reason == "killed 2 days after deciding to persist (#1 persist, #3 kill; within 7 days)"


def test_thrash_reason__both_rules__both_reasons(settings):
    settings.THRASH_ADAPTS = 1
    calls = _calls(("adapt", 0), ("adapt", 1), ("persist", 2), ("kill", 2.5))

    reason = thrash_reason(calls, now=T0 + timedelta(days=3))

    assert reason == (
        "2 adapt decisions in the last 14 days (more than 1): #1, #2; "
        "killed 12 hours after deciding to persist (#3 persist, #4 kill; within 7 days)"
    )


def test_thrash_reason__kill_without_a_persist__not_thrash():
    assert thrash_reason(_calls(("adapt", 0), ("kill", 1)), now=T0) is None


def test_thrash_reason__persist_adapt_persist_within_minutes__flip_flop_naming_the_calls():
    minutes = 1 / (24 * 60)
    calls = _calls(("persist", 0), ("adapt", 5 * minutes), ("persist", 12 * minutes))
    assert thrash_reason(calls, now=T0 + timedelta(days=1)) == (
        "flip-flopped within 12 min: #1 persist, #2 adapt, #3 persist (within 24 hours)"
    )


def test_thrash_reason__call_restored_two_days_later__not_a_flip_flop():
    calls = _calls(("persist", 0), ("adapt", 1), ("persist", 2))
    assert thrash_reason(calls, now=T0 + timedelta(days=3)) is None


def test_thrash_reason__persist_then_adapt_once__learning_not_thrash():
    assert (
        thrash_reason(_calls(("persist", 0), ("adapt", 0.01)), now=T0 + timedelta(days=1)) is None
    )
