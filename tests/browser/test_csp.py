"""Under the strict Content-Security-Policy the pages still do what their scripts did: charts
draw, the live socket connects, forms reset after a success. (Any policy refusal on any page of
any browser test fails it: tests/browser/conftest.py.)"""

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser
CHARTED = {
    "/plans/identity-migration/": 1,
    "/slos/login-availability/": 3,
    "/incidents/": 0,
    "/decisions/": 0,
}


def test_pages_under_the_policy__charts_draw_and_the_socket_connects(new_page):
    page = new_page()
    login(page, "tpm")
    for path, at_least in CHARTED.items():
        page.goto(path)
        if page.locator("#live-status").count():
            expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        figures = page.locator("[data-figure]")
        assert figures.count() >= at_least, path
        for i in range(figures.count()):
            expect(figures.nth(i).locator(".main-svg").first).to_be_attached()
    page.goto("/plans/identity-migration/")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    screenshot(page, "csp-plan")


def test_console_under_the_policy__narration_resets_and_refocuses_after_posting(new_page):
    page = new_page()
    login(page, "commander")
    page.goto("/incidents/")
    declare = page.get_by_role("region", name="Declare an incident")
    declare.get_by_label("Title").fill("CSP check: checkout slow")
    declare.get_by_role("button", name="Declare").click()
    expect(page.get_by_test_id("narration-input")).to_be_visible()
    narration = page.get_by_test_id("narration-input")
    narration.fill("p99 at 900 ms in eu-west")
    narration.press("Enter")
    expect(page.get_by_test_id("timeline-entry").last).to_contain_text("p99 at 900 ms")
    expect(narration).to_have_value("")
    expect(narration).to_be_focused()
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "csp-console-phone")
