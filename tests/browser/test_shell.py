import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser
NAV = ["Portfolio", "Incidents", "Flags", "SLOs", "At risk", "Decisions", "Ledger"]


@pytest.mark.parametrize("role", ["tpm", "commander", "responder", "viewer"])
def test_login__each_role__sees_navigation_role_and_ledger(new_page, role):
    page = new_page()
    login(page, role)
    expect(page.get_by_test_id("who")).to_contain_text(role)
    nav = page.get_by_role("navigation", name="Main")
    for section in NAV:
        expect(nav.get_by_role("link", name=section, exact=True)).to_be_visible()
    nav.get_by_role("link", name="Ledger", exact=True).click()
    expect(page.get_by_role("heading", name="Ledger", level=1)).to_be_visible()
    expect(page.locator("#ledger-rows tr")).not_to_have_count(0)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    record_form = page.locator("#record-form form")
    if role == "viewer":
        expect(record_form).to_have_count(0)
    else:
        expect(record_form).to_be_visible()
    page.get_by_test_id("verify-chain").click()
    expect(page.get_by_test_id("verify-ok")).to_contain_text("Chain intact")
    screenshot(page, f"ledger-{role}")


def test_login__wrong_password__error_shown_and_still_on_login(new_page):
    page = new_page()
    login(page, "viewer", "not-the-password")
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    expect(page).to_have_url(re.compile(r"/login/"))
    screenshot(page, "login-error")


def test_live_push__entry_recorded_in_one_browser__appears_in_another_without_reload(new_page):
    watcher, actor = new_page(), new_page()
    login(watcher, "viewer")
    watcher.goto("/ledger/")
    expect(watcher.locator("#live-status")).to_have_attribute("data-state", "live")
    watcher.evaluate("window.__notReloaded = true")

    login(actor, "commander")
    actor.goto("/ledger/")
    summary = "Drained eu-west gateway by hand before the cut-over"
    actor.get_by_label("Kind").select_option("out_of_band_change")
    actor.get_by_label("What happened").fill(summary)
    actor.get_by_role("button", name="Record").click()

    expect(watcher.locator("#ledger-rows tr").first).to_contain_text(summary, timeout=5_000)
    expect(watcher.locator("#ledger-rows tr").first).to_contain_text("commander")
    assert watcher.evaluate("window.__notReloaded") is True
    expect(actor.locator("#ledger-rows tr").first).to_contain_text(summary)
    expect(actor.get_by_label("What happened")).to_have_value("")
    screenshot(watcher, "live-push-watcher")


def test_live_push__browser_offline_while_entry_recorded__replayed_on_reconnect(new_page):
    watcher, actor = new_page(), new_page()
    login(watcher, "tpm")
    watcher.goto("/ledger/")
    expect(watcher.locator("#live-status")).to_have_attribute("data-state", "live")
    socket = "htmx.find('[ws-connect]')['htmx-internal-data'].webSocket"
    watcher.evaluate(f"{socket}.socket.close()")  # a clean close: htmx does not reconnect by itself
    expect(watcher.locator("#live-status")).to_have_attribute("data-state", "reconnecting")

    login(actor, "responder")
    actor.goto("/ledger/")
    actor.get_by_label("What happened").fill("Recorded while the watcher was offline")
    actor.get_by_role("button", name="Record").click()
    expect(actor.locator("#ledger-rows tr").first).to_contain_text("while the watcher was offline")
    watcher.wait_for_timeout(1500)
    expect(watcher.locator("#ledger-rows")).not_to_contain_text("while the watcher was offline")

    watcher.evaluate(f"{socket}.init()")  # what htmx does after an abnormal close
    expect(watcher.locator("#ledger-rows tr").first).to_contain_text(
        "while the watcher was offline"
    )
    expect(watcher.locator("#live-status")).to_have_attribute("data-state", "live")
    screenshot(watcher, "live-replay-after-reconnect")


def test_pages__viewer__decisions_page_reads_across_programs(new_page):
    page = new_page()
    login(page, "viewer")
    page.get_by_role("link", name="Decisions", exact=True).click()
    expect(page.get_by_role("heading", name="Decisions", level=1)).to_be_visible()
    expect(page.get_by_role("form", name="Filter decisions")).to_be_visible()
    screenshot(page, "decisions")
