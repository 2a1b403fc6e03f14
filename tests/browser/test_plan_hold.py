"""A commander declares an incident on a service a plan ships: the TPM's plan page says it is
held and refuses the start beside the button; the commander releases the plan from the console
with a reason, and the TPM's page lets the step start without a reload."""

import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot
from tests.browser.test_verification import _manage_shell

pytestmark = pytest.mark.browser

PREPARE = """
import json, yaml
from django.contrib.auth import get_user_model
from rollouts.services.plan_apply import plan_apply
from rollouts.services.steps import plan_transition
from tests.rollouts.plan_factories import plan_doc, step_doc

tpm = get_user_model().objects.get(username="tpm")
doc = plan_doc(step_doc("ship", kind="deploy", service="{service}"), key="{key}")
plan = plan_apply(text=yaml.safe_dump(doc, sort_keys=False), actor=tpm).plan
plan_transition(plan_id=plan.pk, action="activate", actor=tpm, reason="browser test: holds")
print(json.dumps({{"key": plan.key}}))
"""


def test_plan_hold__incident_on_its_service__start_refused_then_released_live(
    new_page, stepwise_server
):
    tag = uuid.uuid4().hex[:8]
    service, key = f"hold-svc-{tag}", f"hold-{tag}"
    _manage_shell(stepwise_server, PREPARE.format(service=service, key=key))
    tpm = new_page()
    login(tpm, "tpm")
    tpm.goto(f"/plans/{key}/")
    expect(tpm.locator("#live-status")).to_have_attribute("data-state", "live")
    start = tpm.locator("#step-ship button[data-action=start]")
    expect(start).to_be_enabled()

    commander = new_page()
    login(commander, "commander")
    commander.goto("/incidents/")
    commander.get_by_label("Title").fill(f"Errors on {service}")
    commander.get_by_label("Services").fill(service)
    commander.get_by_role("button", name="Declare").click()
    expect(commander.get_by_test_id(f"held-plan-{key}")).to_contain_text(service)

    held = tpm.get_by_test_id("plan-held-by")
    expect(held).to_contain_text(f"({service}, SEV2)")
    expect(start).to_be_disabled()
    expect(tpm.locator("#step-ship")).to_contain_text("held by INC-")
    screenshot(tpm, "plan-held-by-incident")

    commander.get_by_test_id(f"release-reason-{key}").fill("the deploy is the fix")
    commander.get_by_test_id(f"release-{key}").click()
    expect(commander.get_by_test_id(f"held-released-{key}")).to_contain_text(
        "the deploy is the fix"
    )
    screenshot(commander, "console-plan-released")

    expect(held).to_have_count(0)
    expect(start).to_be_enabled()
