"""Worst case of a running step: if its fail condition starts holding now, what is exposed,
for how long at most, and where the flag goes then; the plan page, step page and portfolio
show it."""

from decimal import Decimal

import pytest

from rollouts.models import Evaluation, Step, VerificationWatch
from rollouts.selectors import worst_cases
from rollouts.services.steps import step_transition

pytestmark = pytest.mark.django_db


def _running(make_plan, **fields) -> Step:
    plan = make_plan([{"key": "ramp", "flag": "checkout", "percentage": 25, "targets": ["eu"]}])
    step = plan.steps.get()
    Step.objects.filter(pk=step.pk).update(verify_interval_seconds=60, failure_limit=2, **fields)
    step_transition(step_id=step.pk, action="start", actor=None, reason="ramp begins")
    return Step.objects.select_related("flag__current", "attempt_flag_version", "plan").get(
        pk=step.pk
    )


def _worst(step: Step):
    step.runs = list(step.verifications.order_by("-started_at"))
    return worst_cases([step]).get(step.pk)


def test_worst_case__set_flag_percentage__failures_times_interval_then_that_percentage(make_plan):
    step = _running(make_plan, on_fail="set_flag_percentage", on_fail_percentage=Decimal("0"))

    worst = _worst(step)

    assert (worst.exposure, worst.seconds, worst.back_to) == (Decimal("25"), 180, Decimal("0"))
    assert worst.text == (
        "25% exposed for up to 3 min (3 failing evaluations, 60 s apart), then 0%"
    )


def test_worst_case__failures_already_tolerated__fewer_left(make_plan):
    step = _running(make_plan, on_fail="restore_previous_flag")
    step.verifications.update(failed=2)
    assert _worst(step).seconds == 60


def test_worst_case__pause_plan__exposed_until_a_person_acts(make_plan):
    worst = _worst(_running(make_plan, on_fail="pause_plan"))
    assert worst.seconds is None
    assert worst.text == "25% exposed until a person acts (on fail: pause the plan)"


def test_worst_case__watched_by_ingest__measured_p99_breach_to_revert(make_plan):
    step = _running(make_plan, on_fail="restore_previous_flag")
    run = step.verifications.get()
    VerificationWatch.objects.get_or_create(verification=run, metric="http_errors")
    assert _worst(step).seconds == 180  # nothing measured yet: the interval bound
    for sequence, took in enumerate([0.4, 0.5, 3.0], start=1):
        Evaluation.objects.create(
            verification=run,
            sequence=sequence,
            reason="breach",
            trigger=Evaluation.Trigger.INGEST,
            outcome="fail",
            revert_seconds=took,
        )
    worst = _worst(step)
    assert worst.seconds == 3.0 and worst.back_to == Decimal("0")
    assert "measured p99 breach to revert" in worst.text


def test_pages__running_ramp__plan_step_and_portfolio_show_its_worst_case(
    make_plan, client, role_user
):
    step = _running(make_plan, on_fail="set_flag_percentage", on_fail_percentage=Decimal("0"))
    client.force_login(role_user("viewer"))
    said = "25% exposed for up to 3 min (3 failing evaluations, 60 s apart), then 0%"

    assert said in client.get(f"/plans/{step.plan.key}/").content.decode()
    assert said in client.get(f"/plans/{step.plan.key}/steps/{step.key}/").content.decode()
    assert f"worst case: ramp, {said}" in client.get("/").content.decode()
