"""The verification engine as a person sees it: what a step is judged on, the numbers each
evaluation saw, the canary chart, and a failure pushed to open pages by a breaching sample."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot
from tests.rollouts.test_verification_worker import _ingest
from tests.serving import ROOT

pytestmark = pytest.mark.browser
PLAN = "/plans/identity-migration/"
LIVE = 20_000  # ms: a worker round trip (ingest -> Celery -> on-commit push) on a slow machine

# Brings the seeded plan to "login-5 is ready", from the seeded state or from wherever the other
# browser tests (which share the server) left it: test_rollouts starts login-5 itself.
PREPARE_LOGIN_5 = """
import json
import uuid
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from accounts.services import api_token_create
from rollouts.models import Plan, Step, Verification
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.steps import plan_transition, step_target_confirm, step_transition
from stepwise.demo import demo_traffic_emit

User = get_user_model()
tpm = User.objects.get(username="tpm")
plan = Plan.objects.get(key="identity-migration")
if plan.status == Plan.Status.PAUSED:
    plan_transition(plan_id=plan.pk, action="resume", actor=tpm, reason="browser test")
step = lambda key: Step.objects.get(plan=plan, key=key)

login = step("login-5")
if login.status in {*Step.ACTIVE, Step.Status.DONE, Step.Status.FAILED}:
    step_transition(step_id=login.pk, action="revert", actor=tpm, reason="browser test: again")
if step("login-5").status == Step.Status.REVERTED:
    step_transition(step_id=login.pk, action="retry", actor=tpm, reason="browser test: again")

gateway = step("gateway-policy")
if gateway.status in Step.ACTIVE:
    step_target_confirm(step_id=gateway.pk, target="ap-south", actor=tpm, source="person", reason="checked by hand")

# The seeded six minutes of metrics leave the 5m windows as the session runs: one fresh scrape.
demo_traffic_emit()
backfill = step("sessions-backfill")
if backfill.status in {Step.Status.RUNNING, Step.Status.VERIFYING}:
    latest = backfill.verifications.order_by("-started_at", "-pk").first()
    if latest.status not in {Verification.Status.RUNNING, Verification.Status.SUCCESSFUL}:
        step_transition(step_id=backfill.pk, action="reverify", actor=tpm, reason="browser test")
        latest = backfill.verifications.order_by("-started_at", "-pk").first()
    for _ in range(backfill.verify_count):  # the worker may be evaluating it too
        verification_evaluate(verification_id=latest.pk)
for region in ("us-east", "eu-west", "ap-south"):
    if step("sessions-backfill").status in Step.ACTIVE:
        step_target_confirm(step_id=backfill.pk, target=region, actor=tpm, source="person", reason="checked by hand")

# Only a breaching sample can make login-5's verification evaluate within the test.
Step.objects.filter(pk=login.pk).update(
    verify_interval_seconds=3600, verify_initial_delay_seconds=3600
)
exporter, _ = User.objects.get_or_create(username="browser-exporter")
exporter.user_permissions.add(Permission.objects.get(codename="add_sample"))
_, raw = api_token_create(
    user=exporter, name=f"browser-{uuid.uuid4().hex[:8]}", scopes=["metrics:write"]
)
print(json.dumps({
    "token": raw,
    "status": {key: step(key).status for key in ("gateway-policy", "sessions-backfill", "login-5")},
}))
"""


def _served_env(base: str) -> dict[str, str]:
    """The environment of the `manage.py serve` this session started for `base`.

    The `stepwise_server` fixture yields only the URL; manage.py must run against the same
    database (and, on PostgreSQL, a database named at random), so read it off the child process.
    """
    port = str(urlparse(base).port).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and "serve" in map(bytes.decode, argv) and port in argv:
                lines = (proc / "environ").read_bytes().decode().split("\0")
                return dict(line.split("=", 1) for line in lines if "=" in line)
        except OSError:
            continue
    raise LookupError(f"no manage.py serve child of this session on port {port.decode()}")


def _manage_shell(base: str, code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=_served_env(base),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_step_page__verified_deploy_as_viewer__conditions_queries_numbers_and_canary_chart(
    new_page,
):
    page = new_page()
    login(page, "viewer")
    page.goto(PLAN + "steps/accounts-deploy/")

    expect(page.get_by_test_id("pass-condition")).to_have_text(
        "error_rate < 0.01 && p99 <= baseline.p99 * 1.05"
    )
    expect(page.get_by_test_id("fail-condition")).to_have_text(
        "error_rate > 0.02 || p99 > baseline.p99 * 1.25"
    )
    measurements = page.get_by_role("table", name="Measurements")
    p99 = measurements.locator("tr", has_text="p99")
    expect(p99).to_contain_text(
        'p99(http_request_duration_ms{service="accounts-api",track="canary"}[5m])'
    )
    expect(p99).to_contain_text(
        'p99(http_request_duration_ms{service="accounts-api",track="stable"}[5m])'
    )
    expect(measurements.locator("tr", has_text="error_rate")).to_contain_text(
        "rate(http_request_errors_total"
    )

    expect(page.get_by_test_id("verification-status")).to_have_text("successful")
    expect(page.get_by_test_id("verification-conclusion")).to_contain_text("3 of 3")
    rows = page.get_by_test_id("evaluation-row")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i)).to_contain_text("pass")
        expect(rows.nth(i)).to_contain_text(re.compile(r"error_rate = \d+(\.\d+)?"))
        expect(rows.nth(i)).to_contain_text(re.compile(r"baseline\.p99 = \d+(\.\d+)?"))
    expect(rows.first).to_contain_text(re.compile(r"canary score \d+"))

    chart = page.get_by_test_id("canary-chart")
    # Plotly marks the div only once it has drawn into it: the figure rendered, not just the JSON.
    expect(chart.locator(".js-plotly-plot")).to_be_visible()
    expect(chart.locator(".js-plotly-plot .main-svg").first).to_be_visible()
    expect(chart.locator(".js-plotly-plot")).to_contain_text("latency_ms")
    # What was committed before the run, as well as what it saw.
    expect(page.get_by_test_id("canary-settings")).to_contain_text("score ≥ 95 passes")
    latency = page.get_by_test_id("canary-metrics").locator("tr", has_text="latency_ms")
    expect(latency).to_contain_text("the canary increases")
    expect(latency).to_contain_text("5% of the baseline")
    expect(latency).to_contain_text('track="stable"')
    actions = page.get_by_role("region", name="Actions")
    expect(actions.locator("form")).to_be_hidden()  # a viewer gets no buttons
    screenshot(page, "verification-deploy-viewer")


def test_breaching_sample__login_ramp_open_in_two_browsers__failure_and_zero_percent_pushed_live(
    new_page, stepwise_server
):
    prepared = _manage_shell(stepwise_server, PREPARE_LOGIN_5)
    assert prepared["status"] == {
        "gateway-policy": "done",
        "sessions-backfill": "done",
        "login-5": "ready",
    }

    step_page, board = new_page(), new_page()
    login(step_page, "tpm")
    step_page.goto(PLAN + "steps/login-5/")
    expect(step_page.get_by_test_id("live-step-status")).to_have_text("ready")
    actions = step_page.get_by_role("region", name="Actions")
    actions.locator("select[name=action]").select_option("start")
    actions.get_by_label("Reason").fill("gateway and backfill are done; 5% of sign-ins")
    actions.get_by_role("button", name="Do it").click()
    expect(step_page.get_by_test_id("live-step-status")).to_have_text("running")
    expect(step_page.get_by_test_id("verification-status")).to_have_text("running")
    expect(step_page.get_by_test_id("evaluation-row")).to_have_count(0)
    expect(step_page.locator("#live-status")).to_have_attribute("data-state", "live")

    login(board, "viewer")
    board.goto("/flags/")
    expect(board.locator("#live-status")).to_have_attribute("data-state", "live")
    new_login = board.locator("#flag-new-login").get_by_test_id("flag-state")
    expect(new_login).to_contain_text("5%")
    for page in (step_page, board):
        page.evaluate("window.__notReloaded = true")

    assert _ingest(stepwise_server, prepared["token"], 0.05) == {"written": 1}

    expect(step_page.get_by_test_id("verification-status")).to_have_text("failed", timeout=LIVE)
    expect(step_page.get_by_test_id("live-step-status")).to_have_text("failed", timeout=LIVE)
    expect(step_page.get_by_test_id("step-status")).to_have_text("failed", timeout=LIVE)
    expect(step_page.locator("#step-live")).to_contain_text("verification.failed")
    expect(step_page.get_by_test_id("verification-action")).to_contain_text("0%")
    failing = step_page.get_by_test_id("evaluation-row")
    expect(failing).to_have_count(1)
    expect(failing).to_contain_text("breaching sample")
    expect(failing).to_contain_text("fail")
    expect(failing).to_contain_text(re.compile(r"login_error_rate = 0\.\d+"))
    expect(new_login).to_have_text(re.compile(r"^\s*on\s+0%\s*$"), timeout=LIVE)
    for page in (step_page, board):
        assert page.evaluate("window.__notReloaded") is True
    screenshot(step_page, "verification-login-5-failed-live")
    screenshot(board, "verification-flags-board-zero-live")
