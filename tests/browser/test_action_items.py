"""A responder adds a follow-up with a due date on the postmortem page and marks it done; the
leadership At risk page lists it while it is open, and no longer once it is done."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser


def test_action_item__added_with_due_date_then_done__leadership_sees_it_open_then_gone(new_page):
    title = f"Alert per region {uuid.uuid4().hex[:6]}"
    due = (timezone.localdate() + timedelta(days=5)).isoformat()
    responder = new_page()
    login(responder, "responder")
    responder.goto("/incidents/1/postmortem")
    responder.get_by_test_id("pm-action-title").fill(title)
    responder.get_by_test_id("pm-action-owner").fill("sre")
    responder.get_by_test_id("pm-action-due-on").fill(due)
    responder.get_by_role("button", name="Add", exact=True).click()
    item = responder.get_by_test_id("pm-action-item").filter(has_text=title)
    expect(item).to_contain_text(f"due {due}")

    viewer = new_page()
    login(viewer, "viewer")
    viewer.goto("/risk/")
    expect(viewer.get_by_test_id("open-action-items")).to_contain_text(title)
    screenshot(viewer, "risk-open-action-items")

    item.get_by_role("button", name="mark done").click()
    expect(item.get_by_role("button", name="reopen")).to_be_visible()
    expect(item).to_contain_text(f"done {timezone.localdate().isoformat()}")
    viewer.reload()
    expect(viewer.get_by_test_id("open-action-items")).not_to_contain_text(title)
