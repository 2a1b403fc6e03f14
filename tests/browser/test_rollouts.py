import contextlib

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser
PLAN = "/plans/identity-migration/"


def _step_row(page, key: str):
    return page.locator(f"#step-{key}")


def test_plan_flow__out_of_order_refused_then_converged_step_by_step_and_watched_live(new_page):
    tpm, watcher = new_page(), new_page()
    login(watcher, "viewer")
    watcher.goto(PLAN)
    expect(watcher.locator("#live-status")).to_have_attribute("data-state", "live")
    expect(watcher.locator("#step-login-5 .step-actions")).to_be_hidden()  # viewers get no buttons

    login(tpm, "tpm")
    tpm.goto(PLAN)
    expect(tpm.locator("#live-status")).to_have_attribute("data-state", "live")
    start_login_5 = _step_row(tpm, "login-5").locator("button[data-action=start]")
    expect(start_login_5).to_be_disabled()
    expect(tpm.get_by_test_id("why-login-5")).to_contain_text("waits for")
    # Force the click anyway, as a stale page or a second tab would: the server says why.
    start_login_5.evaluate("b => b.disabled = false")
    start_login_5.click()
    expect(tpm.get_by_test_id("action-error")).to_contain_text("login-5 cannot start: waits for")
    expect(tpm.get_by_test_id("status-login-5")).to_have_text("pending")
    screenshot(tpm, "plan-refused-out-of-order")

    # The lagging region converges: confirmed by a person on the step page.
    tpm.goto(PLAN + "steps/gateway-policy/")
    tpm.get_by_test_id("confirm-reason-ap-south").fill("ap-south gateway logs show the policy")
    tpm.get_by_role("button", name="Confirm ap-south").click()
    tpm.goto(PLAN)
    expect(watcher.get_by_test_id("status-gateway-policy")).to_have_text("done")

    # The backfill is advanced to converging by the TPM (unless the workers' verification got
    # there first) and converges in every region.
    backfill = watcher.get_by_test_id("status-sessions-backfill")
    tpm.goto(PLAN + "steps/sessions-backfill/")
    for _ in range(2):  # running -> verifying -> converging
        now = tpm.get_by_test_id("live-step-status").inner_text()
        if now in ("running", "verifying"):
            tpm.locator("select[name=action]").select_option("advance")
            tpm.locator("#step-reason").fill("backfill checked by hand")
            tpm.get_by_role("button", name="Do it").click()
            # Refused only if the workers advanced it first; either way it has moved on.
            expect(tpm.get_by_test_id("live-step-status")).not_to_have_text(now)
            expect(backfill).not_to_have_text(now)
    expect(backfill).to_have_text("converging")
    for region in ("ap-south", "eu-west", "us-east"):
        target = tpm.get_by_test_id(f"target-{region}")
        confirm = tpm.get_by_role("button", name=f"Confirm {region}")
        if "converged" not in target.inner_text():
            # The workers' convergence check may confirm the region between our look and our
            # click (CI saw it): its button is then gone, which is as good as the click.
            with contextlib.suppress(PlaywrightTimeoutError):
                tpm.get_by_test_id(f"confirm-reason-{region}").fill(
                    "backfill row counts match", timeout=5_000
                )
                confirm.click(timeout=5_000)
        expect(target).to_contain_text("converged")
    expect(watcher.get_by_test_id("status-sessions-backfill")).to_have_text("done")
    expect(watcher.get_by_test_id("status-login-5")).to_have_text("ready")

    tpm.goto(PLAN)
    _step_row(tpm, "login-5").locator("button[data-action=start]").click()
    expect(watcher.get_by_test_id("status-login-5")).to_have_text("running")
    expect(tpm.get_by_test_id("status-login-5")).to_have_text("running")
    screenshot(watcher, "plan-watched-live")

    # The ramp made its flag version (the seeded metrics then fail its verification, which sets
    # the flag back to 0 % within seconds: that is the verification tests' subject, not this one).
    tpm.goto("/flags/new-login/")
    expect(tpm.get_by_text("identity-migration/login-5: ramp to 5%")).to_be_visible()


def test_flag_revert__commander_reverts_on_the_board__second_browser_sees_it_live(new_page):
    watcher, commander = new_page(), new_page()
    login(watcher, "viewer")
    watcher.goto("/flags/")
    expect(watcher.locator("#live-status")).to_have_attribute("data-state", "live")
    row = watcher.locator("#flag-checkout-v2")
    expect(row.get_by_test_id("flag-state")).to_contain_text("50%")
    before = int(row.get_by_test_id("flag-version").inner_text().lstrip("v"))

    login(commander, "commander")
    commander.goto("/flags/")
    commander.on("dialog", lambda dialog: dialog.accept())
    commander.get_by_test_id("revert-checkout-v2").click()
    # The answer stays beside the button, even after the live push redraws the row.
    done = commander.locator("#flag-checkout-v2").get_by_test_id("action-ok")
    expect(done).to_contain_text("checkout-v2 reverted")

    expect(row.get_by_test_id("flag-version")).to_have_text(f"v{before + 1}", timeout=5_000)
    expect(row.get_by_test_id("flag-state")).to_contain_text("off")
    screenshot(watcher, "flags-board-after-revert")

    # A second click from a page that still shows the old version is refused, naming who reverted.
    stale = new_page()
    login(stale, "tpm")
    stale.goto("/flags/")
    stale.evaluate(
        f"document.querySelector('#flag-checkout-v2 input[name=seen_version]').value = '{before}'"
    )
    # Loaded before the revert, its button was still enabled (now it is greyed out: a revert of
    # the revert would raise exposure).
    stale.get_by_test_id("revert-checkout-v2").evaluate("b => b.disabled = false")
    stale.on("dialog", lambda dialog: dialog.accept())
    stale.get_by_test_id("revert-checkout-v2").click()
    refusal = stale.locator("#flag-checkout-v2").get_by_test_id("action-error")
    expect(refusal).to_contain_text("changed by commander")


def test_flag_page__tpm_creates_a_version__another_browser_sees_it_without_reloading(new_page):
    watcher, tpm = new_page(), new_page()
    login(watcher, "viewer")
    watcher.goto("/flags/recs-experiment/")
    expect(watcher.locator("#live-status")).to_have_attribute("data-state", "live")
    before = watcher.get_by_test_id("flag-now").inner_text()

    login(tpm, "tpm")
    tpm.goto("/flags/recs-experiment/")
    tpm.locator("#id_rollout_percentage").fill("15")
    tpm.locator("#id_reason").fill("widen the experiment")
    tpm.get_by_role("button", name="Create version").click()
    expect(tpm.locator("#action-result")).to_contain_text("recs-experiment")

    now = watcher.get_by_test_id("flag-now")
    expect(now).not_to_have_text(before, timeout=5_000)
    expect(now).to_contain_text("15%")
    expect(watcher.get_by_text("widen the experiment")).to_be_visible()
    expect(tpm.get_by_test_id("flag-now")).to_contain_text("15%")  # no reload needed here either
    screenshot(watcher, "flag-page-live")
