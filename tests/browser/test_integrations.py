import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser


def test_integrations__admin_creates_copies_and_revokes_a_token__secret_gone_after_reload(
    new_page,
):
    page = new_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    login(page, "admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Integrations").click()

    page.locator("#id_name").fill("pages-exporter")
    page.locator("#id_role").select_option("exporter")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_test_id("token-secret").input_value()
    page.get_by_test_id("token-copy").click()

    expect(page.get_by_test_id("token-copy")).to_have_text("Copied")
    assert secret.startswith("sw_") and page.evaluate("navigator.clipboard.readText()") == secret
    row = page.locator("[data-testid=token-row]", has_text="pages-exporter")
    expect(row).to_contain_text("svc-exporter-pages-exporter")
    screenshot(page, "integrations-created")

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_label("Why revoke pages-exporter").fill("browser test")
    row.get_by_role("button", name="Revoke").click()

    expect(row.get_by_test_id("action-ok")).to_contain_text("Revoked")
    page.reload()
    expect(page.get_by_test_id("token-secret")).to_have_count(0)
    assert secret not in page.content()
