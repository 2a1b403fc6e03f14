"""Feedback where the eye is (issue 16, items 3, 4 and 12): the console opens at its header with
the narration field focused; a post that cannot reach the server says so beside the form and
keeps the text; a form's buttons are disabled while it is in flight; action selects start on a
choice nobody made by accident."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}


def _demo_console(page) -> str:
    page.goto("/incidents/")
    link = [
        href
        for href in page.eval_on_selector_all("a[href]", "a => a.map(l => l.getAttribute('href'))")
        if re.fullmatch(r"/incidents/\d+/", href)
    ]
    assert link, "the demo data has an open incident"
    return link[0]


def test_console_on_a_phone__opens_at_its_header_with_the_narration_field_focused(
    browser, stepwise_server
):
    context = browser.new_context(base_url=stepwise_server, viewport=PHONE)
    try:
        page = context.new_page()
        login(page, "commander")
        page.goto(_demo_console(page))
        expect(page.get_by_test_id("narration-input")).to_be_focused()
        assert page.evaluate("window.scrollY") == 0
        expect(page.locator("#incident-head h1")).to_be_in_viewport()
        screenshot(page, "console-phone-top")
    finally:
        context.close()


def test_narration_post_never_reaches_the_server__said_beside_the_form_text_kept(new_page):
    page = new_page()
    login(page, "commander")
    page.goto(_demo_console(page))
    box = page.get_by_test_id("narration-input")
    expect(box).to_be_focused()
    page.route(re.compile(r".*/narrate$"), lambda route: route.abort("connectionrefused"))
    box.fill("gateway 5xx back to baseline")
    page.keyboard.press("Enter")
    failed = page.locator("#narration-form + [data-testid=send-failed]")
    expect(failed).to_contain_text("Not sent: the server did not answer")
    expect(failed).to_be_in_viewport()
    expect(failed).to_have_attribute("role", "alert")
    expect(box).to_have_value("gateway 5xx back to baseline")
    expect(page.locator("#narration-form button").first).to_be_enabled()
    screenshot(page, "console-send-failed")


def test_form_in_flight__its_button_is_disabled_until_the_answer(new_page):
    page = new_page()
    login(page, "commander")
    page.goto(_demo_console(page))
    held = []
    page.route(re.compile(r".*/narrate$"), lambda route: held.append(route))
    page.get_by_test_id("narration-input").fill("checking the gateway")
    page.keyboard.press("Enter")
    button = page.locator("#narration-form button").first
    expect(button).to_be_disabled()
    expect(page.locator("#narration-form")).to_have_attribute("aria-busy", "true")
    for _ in range(50):  # the route handler runs as Playwright processes events
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the post was made"
    held[0].abort("connectionrefused")  # nothing is recorded in the demo incident
    expect(button).to_be_enabled()


def test_action_selects__start_on_no_action_and_refuse_an_empty_submit(new_page):
    page = new_page()
    login(page, "tpm")
    page.goto("/plans/identity-migration/")
    status = page.get_by_label("Plan action")
    expect(status).to_have_value("")
    page.goto("/plans/identity-migration/steps/gateway-policy/")
    action = page.get_by_role("region", name="Actions").locator("select[name=action]")
    expect(action).to_have_value("")
    assert action.evaluate("select => select.required")
