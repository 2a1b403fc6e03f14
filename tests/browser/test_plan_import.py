import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot
from tests.serving import ROOT

pytestmark = pytest.mark.browser
EXAMPLE = (ROOT / "examples" / "identity-migration.yaml").read_text()


def test_plan_import__invalid_file__every_error_with_its_line_and_nothing_applied(new_page):
    page = new_page()
    login(page, "tpm")
    page.goto("/plans/import/")
    broken = EXAMPLE.replace(
        "depends_on: [login-5]", "depends_on: [login-5, no-such-step]"
    ).replace("percentage: 100}", "percentage: 140}")
    page.get_by_label("Plan file (YAML)").fill(broken)
    page.get_by_test_id("preview").click()
    errors = page.get_by_test_id("import-errors")
    expect(errors).to_contain_text("no-such-step")
    expect(errors).to_contain_text("140")
    expect(errors).to_contain_text("line")
    expect(page.get_by_test_id("apply")).to_have_count(0)
    screenshot(page, "plan-import-errors")


def test_plan_import__same_file__no_changes_then_edited_file__diff_then_applied(new_page):
    page = new_page()
    login(page, "tpm")
    page.goto("/plans/import/")
    page.get_by_label("Plan file (YAML)").fill(EXAMPLE)
    page.get_by_test_id("preview").click()
    expect(page.get_by_test_id("no-changes")).to_be_visible()

    edited = EXAMPLE.replace("title: New login for everyone", "title: New login for every sign-in")
    page.get_by_label("Plan file (YAML)").fill(edited)
    page.get_by_test_id("preview").click()
    expect(page.get_by_test_id("diff")).to_contain_text("New login for every sign-in")
    screenshot(page, "plan-import-diff")
    page.get_by_test_id("apply").click()
    expect(page).to_have_url("/plans/identity-migration/")
    expect(page.locator("#step-login-100")).to_contain_text("New login for every sign-in")
