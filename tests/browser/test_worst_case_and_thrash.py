"""What leadership and TPMs read at a glance: a running ramp's worst case on the portfolio, plan
and step pages; a plan whose calls flip-flopped on the Decisions page, with the calls named."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot
from tests.browser.test_verification import _manage_shell

pytestmark = pytest.mark.browser

PREPARE = """
import json, yaml
from django.contrib.auth import get_user_model
from rollouts.models import Step
from rollouts.services.decisions import decision_record
from rollouts.services.plan_apply import plan_apply
from rollouts.services.steps import plan_transition, step_transition
from tests.rollouts.plan_factories import plan_doc, step_doc

tpm = get_user_model().objects.get(username="tpm")
ramp = step_doc("ramp", kind="flag_ramp", flag={{"key": "{flag}", "percentage": 20}})
# No evaluation within the test: the demo has no samples for it (one inconclusive would end it).
ramp["verification"].update({{"on_fail": "restore_previous_flag", "interval": "1h", "initial_delay": "1h",
                            "failure_limit": 1}})
plan = plan_apply(text=yaml.safe_dump(plan_doc(ramp, key="{key}"), sort_keys=False), actor=tpm).plan
plan_transition(plan_id=plan.pk, action="activate", actor=tpm, reason="browser test")
step_transition(step_id=plan.steps.get().pk, action="start", actor=tpm, reason="browser test")
calls = [
    decision_record(actor=tpm, plan_id=plan.pk, believed="b", observed="o", decided=d, why="w",
                    would_choose_again=True).pk
    for d in ("persist", "adapt", "persist")
]
print(json.dumps({{"calls": calls}}))
"""


def test_running_ramp_and_flip_flop__worst_case_on_three_pages_thrash_on_decisions(
    new_page, stepwise_server
):
    tag = uuid.uuid4().hex[:8]
    key, flag = f"worst-{tag}", f"worst-flag-{tag}"
    made = _manage_shell(stepwise_server, PREPARE.format(key=key, flag=flag))
    # The interval bound, or, once a breaching sample has been judged at once anywhere on this
    # stack (another browser test posts one), the measured p99 from breach to revert.
    worst = (
        r"20% exposed for up to (2 h \(2 failing evaluations, 3600 s apart\)|[0-9.]+ s "
        r"\(a breaching sample is judged at once; measured p99 breach to revert\)), then 0%"
    )
    page = new_page()
    login(page, "tpm")

    page.goto(f"/plans/{key}/")
    expect(page.get_by_test_id("worst-ramp")).to_have_text(re.compile(f"^worst case: {worst}"))
    page.goto(f"/plans/{key}/steps/ramp/")
    expect(page.get_by_test_id("worst-case")).to_contain_text(re.compile(worst))
    page.goto("/")
    row = page.get_by_test_id("plan-row").filter(has_text=key)
    expect(row.get_by_test_id("worst-step")).to_have_text(
        re.compile(f"^worst case: ramp, {worst}")
    )
    expect(row.get_by_test_id("thrash-badge")).to_be_visible()

    page.goto("/decisions/")
    thrash = page.get_by_test_id("plans-thrashing")
    calls = ", ".join(
        f"#{pk} {d}" for pk, d in zip(made["calls"], ("persist", "adapt", "persist"), strict=True)
    )
    expect(thrash).to_contain_text(re.compile(rf"flip-flopped within [0-9.]+ s: {calls}"))
    screenshot(page, "decisions-thrashing")
