"""SLOs as a person sees them: the overview worst first, one SLO's numbers and Plotly charts, a
burn-rate alert declared as an incident, a step held by its error budget gate and started over it,
and the demo's login SLO burning after `login-5` fails.

The served app runs Celery beat without the demo traffic (`./bin/run` sets
STEPWISE_DEMO_TRAFFIC=1; tests/serving.py does not), so no metric arrives after the seed. Without
it the 5m windows run empty, the search page alert resolves about six minutes after the seed, and
nothing burns. The `demo_traffic` fixture stands in for that beat entry while this module runs:
one `demo_traffic_emit()` every 10 s against the served database, stopped before the next module.
"""

import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot
from tests.browser.test_verification import (
    LIVE,
    PREPARE_LOGIN_5,
    _ingest,
    _manage_shell,
    _served_env,
)
from tests.serving import ROOT

pytestmark = pytest.mark.browser
SEEDED = (
    "login-availability",
    "login-latency",
    "accounts-api-availability",
    "search-availability",
)
TIMES = "\u00d7"  # the multiplication sign the pages write after a burn rate
# signals.slos.SLOStatus.worst_first, by the row's data-state (the state, slugified).
RANK = {"exhausted": 0, "page": 1, "ticket": 2, "ok": 3, "no-data": 4}
# Traffic resumes -> its minute closes (20 s after its end) -> beat's 30 s SLO tick rolls it up.
ROLLUP = 150_000  # ms
BURN_SECONDS = 150

DEMO_TRAFFIC = """
import os
import time
import traceback
from stepwise.demo import demo_traffic_emit

parent, deadline = os.getppid(), time.monotonic() + 1800
while os.getppid() == parent and time.monotonic() < deadline:
    began = time.monotonic()
    try:
        print("emitted", demo_traffic_emit(), flush=True)
    except Exception:
        traceback.print_exc()
    time.sleep(max(0.0, 10 - (time.monotonic() - began)))
"""

# A new SLO over new metrics, spent fifty times over (5 % failing against a 99.9 % objective, for
# the last half hour), and a new active plan whose one step needs more than 25 % of its budget.
PREPARE_GATE = """
import json
import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from rollouts.gates import budget_gate_blockers
from rollouts.models import Step
from rollouts.services.plan_apply import plan_apply
from rollouts.services.steps import plan_transition
from signals.services import slo_save
from signals.slo_spec import MetricRef, SLISpec, SLOSpec
from signals.slos import slo_refresh, slo_status
from tests.slo_data import counters

suffix = uuid.uuid4().hex[:8]
name = f"browser-gate-{suffix}"
requests = f"browser_gate_{suffix}_requests_total"
failures = f"browser_gate_{suffix}_failures_total"
now = timezone.now()
counters(
    start=now - timedelta(minutes=31),
    end=now - timedelta(minutes=1),
    rps=10,
    error_ratio_at=lambda _: 0.05,
    requests_metric=requests,
    failures_metric=failures,
)
slo, _ = slo_save(
    spec=SLOSpec(
        name=name,
        service="browser-gate",
        indicator=SLISpec(
            kind="ratio", bad=MetricRef(metric=failures), total=MetricRef(metric=requests)
        ),
        objective=0.999,
        window_seconds=28 * 86400,
        display_name=f"Browser gate {suffix}",
    )
)
slo_refresh(slo_id=slo.pk)
slo.refresh_from_db()

PLAN = '''
apiVersion: stepwise/v1
kind: Plan
metadata:
  key: {name}
  name: Budget gate in the browser {suffix}
spec:
  owner: platform-identity
  steps:
  - key: gated-change
    title: A change that needs the error budget
    owner: platform-identity
    kind: manual
    targets: [us-east]
    revert:
      runbook: https://runbooks.example.com/browser-gate
    verification:
      pass: "gate_failures >= 0"
      fail: "gate_failures < 0"
      on_fail: pause_plan
      initial_delay: 1h
      interval: 1h
      measurements:
        gate_failures: {{metric: {failures}, aggregation: max, window: 5m}}
    budget_gate: {{slo: {name}, min_remaining: 25%}}
'''
tpm = get_user_model().objects.get(username="tpm")
plan = plan_apply(text=PLAN.format(name=name, suffix=suffix, failures=failures), actor=tpm).plan
plan_transition(plan_id=plan.pk, action="activate", actor=tpm, reason="browser test")
step = Step.objects.get(plan=plan, key="gated-change")
print(json.dumps({
    "plan": plan.key,
    "step": step.key,
    "slo": name,
    "status": step.status,
    "remaining": slo_status(slo).budget_remaining,
    "reason": budget_gate_blockers([step]).get(step.pk),
}))
"""


class _Traffic:
    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def assert_running(self) -> None:
        assert self.process.poll() is None, f"demo traffic stopped:\n{self.log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def demo_traffic(stepwise_server, tmp_path_factory):
    """What beat's demo-traffic entry does in `./bin/run`: one scrape of every demo metric every
    10 s, through `stepwise.demo.demo_traffic_emit` against the served database."""
    log = tmp_path_factory.mktemp("demo-traffic") / "emit.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", DEMO_TRAFFIC],
            cwd=ROOT,
            env=_served_env(stepwise_server),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    traffic = _Traffic(process, log)
    yield traffic
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _poll(read: Callable[[], object], done: Callable[[object], bool], seconds: float) -> object:
    """`read()` until `done(value)` or the deadline; returns the last value read."""
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(3)


def _rows(page) -> list[dict]:
    rows = page.get_by_test_id("slo-row")
    return [
        {
            "slo": row.get_attribute("data-slo"),
            "state": row.get_attribute("data-state"),
            "remaining": row.get_by_test_id("budget").get_attribute("data-remaining"),
        }
        for row in rows.all()
    ]


def _worst_first(row: dict) -> tuple:
    remaining = float(row["remaining"]) if row["remaining"] else math.inf
    return (RANK[row["state"]], remaining, row["slo"])


def _open_page_alert(page):
    """The SLO page's open page alerts (the list refreshes itself every 30 s)."""
    return (
        page.get_by_test_id("alert")
        .filter(has=page.locator(".alert-page"))
        .and_(page.locator("[data-open=true]"))
    )


def test_slo_overview__as_viewer__four_seeded_slos_worst_first_search_paging_no_import(
    new_page, demo_traffic
):
    page = new_page()
    login(page, "viewer")
    page.goto("/slos/")
    search = page.locator("[data-testid=slo-row][data-slo=search-availability]")
    # The search episode runs from 40 minutes before the seed to 50 after it: 3 % failing, 30x.
    expect(search.get_by_test_id("open-alert").filter(has_text="page").first).to_be_visible(
        timeout=ROLLUP
    )
    demo_traffic.assert_running()
    expect(search).to_have_attribute("data-state", "page")
    expect(search.get_by_test_id("open-alert").first).to_have_text(re.compile(r"page\s+1h"))

    rows = _rows(page)
    names = [row["slo"] for row in rows]
    assert set(SEEDED) <= set(names), names
    assert rows == sorted(rows, key=_worst_first), rows
    seeded = [name for name in names if name in SEEDED]
    assert seeded[0] == "search-availability", seeded
    for name in SEEDED:
        row = page.locator(f"[data-testid=slo-row][data-slo={name}]")
        expect(row.get_by_test_id("sli")).to_have_text(re.compile(r"^\s*\d+(\.\d+)?%\s*$"))
        expect(row.get_by_test_id("budget")).to_contain_text("%")
    expect(page.get_by_test_id("import-link")).to_have_count(0)
    expect(page.get_by_test_id("export-all")).to_be_visible()
    screenshot(page, "slo-overview")


def _assert_chart_drawn(page, div_id: str, *texts: str) -> None:
    """Plotly drew into the div: its svg, at least one scatter trace with a line path, and the
    given texts (legend entries, titles, threshold annotations)."""
    chart = page.locator(f"#{div_id}")
    expect(chart.locator(".main-svg").first).to_be_visible()
    expect(chart.locator(".scatterlayer .trace").first).to_be_attached()
    assert chart.locator(".scatterlayer .trace").count() > 0
    lines = chart.locator(".scatterlayer .trace path.js-line")
    assert any(len(d or "") > 10 for d in (p.get_attribute("d") for p in lines.all())), div_id
    for text in texts:
        expect(chart).to_contain_text(text)


def test_slo_page__charts_as_viewer__plotly_drew_numbers_and_alert_rules(new_page):
    page = new_page()
    login(page, "viewer")

    page.goto("/slos/search-availability/")
    _assert_chart_drawn(page, "chart-sli", "SLI per hour against the objective", "objective 99.9%")
    _assert_chart_drawn(page, "chart-budget", "Error budget remaining across the window")
    _assert_chart_drawn(
        page,
        "chart-burn",
        "burn rate over 1h",
        "burn rate over 6h",
        "burn rate over 3d",
        "page 13.44x (1h and 5m)",
        "ticket 0.93x (3d and 6h)",
    )
    expect(page.locator("#chart-latency")).to_have_count(0)
    expect(page.get_by_test_id("no-latency")).to_be_visible()
    expect(page.get_by_test_id("slo-sli")).to_have_text(re.compile(r"^\d+(\.\d+)?%$"))
    expect(page.get_by_test_id("slo-budget")).to_have_text(re.compile(r"^-?\d+(\.\d+)?%$"))
    expect(page.get_by_test_id("slo-numbers")).to_contain_text(
        re.compile(r"\d+ bad of \d+ allowed")
    )
    rules = page.get_by_test_id("slo-alerts")
    expect(rules.locator("tr", has_text="1h and 5m")).to_contain_text(f"13.44{TIMES}")
    expect(rules.locator("tr", has_text="6h and 30m")).to_contain_text(f"5.60{TIMES}")
    expect(rules.locator("tr", has_text="3d and 6h")).to_contain_text(f"0.93{TIMES}")
    screenshot(page, "slo-search")

    page.goto("/slos/login-latency/")
    _assert_chart_drawn(page, "chart-sli", "objective 99%")
    _assert_chart_drawn(page, "chart-budget")
    _assert_chart_drawn(page, "chart-latency", "Latency: p99 and p999", "p999", "threshold 300")
    _assert_chart_drawn(page, "chart-burn", "burn rate over 1h", "page 3.36x (1h and 5m)")
    expect(page.get_by_test_id("slo-sli")).to_have_text(re.compile(r"^\d+(\.\d+)?%$"))
    expect(page.get_by_test_id("slo-budget")).to_have_text(re.compile(r"^-?\d+(\.\d+)?%$"))
    expect(page.get_by_test_id("slo-numbers")).to_contain_text("minutes")  # time slices
    # A 7-day window: 2 % of the budget in an hour is 0.02 * 168 = 3.36 times the budget rate.
    expect(page.get_by_test_id("slo-alerts").locator("tr", has_text="1h and 5m")).to_contain_text(
        f"3.36{TIMES}"
    )
    screenshot(page, "slo-login-latency")


def test_slo_alert__commander_declares_incident__console_names_slo_alert_links_it_once(
    new_page, demo_traffic
):
    page, stale = new_page(), new_page()
    for p in (page, stale):
        login(p, "commander")
        p.goto("/slos/search-availability/")
    declarable = _open_page_alert(page).filter(has=page.get_by_test_id("declare-incident"))
    expect(declarable.first).to_be_visible(timeout=ROLLUP)
    demo_traffic.assert_running()
    # A second tab that still offers the button (it loaded before the declare).
    stale.reload()
    stale_button = _open_page_alert(stale).get_by_test_id("declare-incident").first
    expect(stale_button).to_be_visible()

    declarable.first.get_by_test_id("declare-incident").click()
    expect(page).to_have_url(re.compile(r"/incidents/\d+/$"))
    incident = int(re.search(r"/incidents/(\d+)/$", page.url).group(1))
    title = page.locator("#incident-head h1")
    expect(title).to_contain_text(f"INC-{incident} · Search availability burning its error budget")
    expect(page.get_by_test_id("incident-severity")).to_have_text("SEV2")  # a page alert
    expect(page.locator("#incident-head")).to_contain_text("search-api")

    page.goto("/slos/search-availability/")
    declared = page.get_by_test_id("alert").filter(
        has=page.get_by_test_id("alert-incident").filter(has_text=f"INC-{incident}")
    )
    expect(declared).to_have_count(1)
    expect(declared).to_have_attribute("data-open", "true")
    expect(declared.get_by_test_id("alert-incident")).to_have_text(f"INC-{incident}")
    expect(declared.get_by_test_id("declare-incident")).to_have_count(0)

    # The stale tab's click opens the same incident rather than a second one.
    stale_button.click()
    expect(stale).to_have_url(re.compile(rf"/incidents/{incident}/$"))
    expect(stale.locator("ul.messages")).to_contain_text(f"INC-{incident} is already open")

    viewer = new_page()
    login(viewer, "viewer")
    viewer.goto("/slos/search-availability/")
    expect(_open_page_alert(viewer).first).to_be_visible()
    expect(
        viewer.get_by_test_id("alert-incident").filter(has_text=f"INC-{incident}")
    ).to_be_visible()
    expect(viewer.get_by_test_id("declare-incident")).to_have_count(0)


# Counts the page's XHRs (htmx's partial refreshes) until 100 ms after each ends, when its swap
# has settled.
XHR_COUNTER = """(() => {
  let pending = 0;
  window.__xhrPending = () => pending;
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (...args) {
    pending++;
    this.addEventListener("loadend", () => setTimeout(() => pending--, 100));
    return send.apply(this, args);
  };
})();"""


def _live_page(new_page):
    page = new_page()
    page.add_init_script(XHR_COUNTER)
    return page


def _settle(page) -> None:
    """The socket is live and the partial refreshes its messages asked for have been swapped in:
    a refresh landing later would replace what a person just typed or chose."""
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.wait_for_function("() => window.__xhrPending() === 0")


def _submit_step_action(page, action: str, reason: str, *, force: bool = False) -> None:
    """Choose `action` (`force`: even though the page disables it, as a stale page would), type
    the reason and press "Do it". A typed reason holds off the Actions region's live refresh;
    one already under way when it was typed may still land, so check and choose again."""
    actions = page.get_by_role("region", name="Actions")
    select, text = actions.locator("select[name=action]"), actions.get_by_label("Reason")
    for _ in range(3):
        _settle(page)
        text.fill(reason)
        if force:
            select.evaluate(
                """(select, action) => {
                    select.querySelector(`option[value=${action}]`).disabled = false;
                    select.value = action;
                }""",
                action,
            )
        else:
            select.select_option(action)
        _settle(page)
        if select.input_value() == action and text.input_value() == reason:
            break
    expect(select).to_have_value(action)
    actions.get_by_role("button", name="Do it").click()


def _override_post(response) -> bool:
    return response.request.method == "POST" and response.url.endswith("/override-budget")


def test_budget_gate__overspent_slo__start_refused_with_reason_then_override_starts_it(
    new_page, stepwise_server
):
    prepared = _manage_shell(stepwise_server, PREPARE_GATE)
    assert prepared["status"] == "ready", prepared
    assert prepared["remaining"] < 0.25, prepared
    slo, reason = prepared["slo"], prepared["reason"]
    assert reason.startswith(f"error budget gate: {slo} has "), reason
    assert reason.endswith("of its budget left; this step needs more than 25%"), reason
    url = f"/plans/{prepared['plan']}/steps/{prepared['step']}/"

    viewer = new_page()
    login(viewer, "viewer")
    viewer.goto(url)
    expect(viewer.get_by_test_id("gate-state")).to_have_text("blocked")
    expect(viewer.get_by_test_id("gate-holds")).to_have_text(f"Can't start: {reason}")
    expect(viewer.get_by_test_id("override-form")).to_have_count(0)
    expect(viewer.get_by_role("region", name="Actions").locator("form")).to_be_hidden()

    page = _live_page(new_page)
    login(page, "tpm")
    page.goto(url)
    gate = page.locator("#step-gate")
    expect(gate.get_by_test_id("gate-state")).to_have_text("blocked")
    expect(gate.get_by_test_id("budget-gate")).to_contain_text(f"{slo}: ")
    expect(gate.get_by_test_id("budget-gate")).to_contain_text("left, needs > 25%")
    expect(gate.get_by_role("link", name=slo)).to_have_attribute("href", f"/slos/{slo}/")
    expect(gate.get_by_test_id("gate-holds")).to_have_text(f"Can't start: {reason}")
    actions = page.get_by_role("region", name="Actions")
    expect(actions.locator(".why", has_text="start:")).to_have_text(f"start: {reason}")
    start = actions.locator("select[name=action] option[value=start]")
    expect(start).to_be_disabled()
    expect(start).to_have_text("start (not now)")

    # Submitted anyway, as a stale page or a second tab would: the server refuses, same words.
    _submit_step_action(page, "start", "the budget will recover", force=True)
    expect(page.locator("ul.messages li.error")).to_have_text(
        f"{prepared['step']} cannot start: {reason}"
    )
    expect(page.get_by_test_id("step-status")).to_have_text("ready")
    screenshot(page, "budget-gate-blocked")

    # An empty override, the browser's own required-field check bypassed: every field refused.
    # One script, so a live refresh of the empty card cannot swap the form in between.
    _settle(page)
    with page.expect_response(_override_post) as posted:
        page.get_by_test_id("override-form").evaluate(
            "form => { form.noValidate = true; form.querySelector('button[type=submit]').click() }"
        )
    assert posted.value.status == 400
    errors = page.get_by_test_id("override-field-error")
    expect(errors).to_have_count(4)
    for label in ("What we believed", "What reality shows", "Why start anyway", "Knowing what"):
        expect(errors.filter(has_text=label)).to_have_count(1)
    expect(page.get_by_test_id("step-status")).to_have_text("ready")
    ledger = page.get_by_role("region", name="Ledger for this step")
    expect(ledger.locator("code", has_text="decision.recorded")).to_have_count(0)

    # Typed text holds off the card's live refresh; one already under way has landed by then.
    _settle(page)
    form = page.get_by_test_id("override-form")
    typed = {
        "What we believed": "the change was safe with any budget left",
        "What reality shows": f"{slo} is overspent by a test fixture",
        "Why start anyway": "the overspend is synthetic; the change is needed",
    }
    for label, text in typed.items():
        form.get_by_label(label).fill(text)
    form.get_by_role("radio", name="yes").check()
    _settle(page)
    for label, text in typed.items():
        expect(form.get_by_label(label)).to_have_value(text)
    expect(form.get_by_role("radio", name="yes")).to_be_checked()
    with page.expect_response(_override_post) as posted:
        form.get_by_role("button", name="Start over the budget gate").click()
    assert posted.value.status == 302

    expect(page.locator("ul.messages li.success")).to_have_text(
        f"{prepared['step']} started over its error budget gate"
    )
    expect(page.get_by_test_id("step-status")).to_have_text("running")
    expect(page.get_by_test_id("override-form")).to_have_count(0)
    ledger = page.get_by_role("region", name="Ledger for this step")
    recorded = ledger.locator("tr", has=page.locator("code", has_text="decision.recorded"))
    expect(recorded).to_have_count(1)
    expect(recorded).to_contain_text("error budget gate override")
    expect(recorded).to_contain_text(slo)
    running = ledger.locator("tr", has=page.locator("code", has_text="step.running"))
    expect(running).to_have_count(1)
    expect(running).to_contain_text(re.compile(r"error budget gate override \(decision \d+\)"))
    expect(running).to_contain_text("budget_override")
    screenshot(page, "budget-gate-overridden")


def _login_availability(overview, slo_page) -> dict:
    overview.goto("/slos/")
    row = overview.locator("[data-testid=slo-row][data-slo=login-availability]")
    slo_page.goto("/slos/login-availability/")
    markers = slo_page.get_by_test_id("markers").locator("li")
    return {
        "remaining": float(row.get_by_test_id("budget").get_attribute("data-remaining")),
        "failed": markers.filter(has_text="identity-migration/login-5 failed").count(),
    }


def test_demo_login_slo__login_5_fails__budget_burns_and_step_marker_shown(
    new_page, stepwise_server, demo_traffic
):
    viewer, slo_page = new_page(), new_page()
    for p in (viewer, slo_page):
        login(p, "viewer")
    prepared = _manage_shell(stepwise_server, PREPARE_LOGIN_5)
    assert prepared["status"]["login-5"] == "ready", prepared
    before = _login_availability(viewer, slo_page)
    assert before["remaining"] > 0.25, before  # login-5's gate needs more than 25 %

    tpm = _live_page(new_page)
    login(tpm, "tpm")
    tpm.goto("/plans/identity-migration/steps/login-5/")
    expect(tpm.get_by_test_id("gate-state")).to_have_text("passing")
    _submit_step_action(tpm, "start", "browser test: the login SLO burns when this fails")
    # The demo traffic's own login_error_ratio{variant="on"} = 0.5 may fail it first.
    assert _ingest(stepwise_server, prepared["token"], 0.05) == {"written": 1}
    expect(tpm.get_by_test_id("step-status")).to_have_text("failed", timeout=LIVE)
    expect(tpm.get_by_test_id("verification-action")).to_contain_text("0%")
    demo_traffic.assert_running()

    # Sessions keep the new login for an hour after the flag went back to 0 %: sign-ins keep
    # failing, the rollup closes their minutes and the budget goes down, with the step marked.
    after = _poll(
        lambda: _login_availability(viewer, slo_page),
        lambda now: now["failed"] > before["failed"] and now["remaining"] < before["remaining"],
        BURN_SECONDS,
    )
    assert after["failed"] == before["failed"] + 1, (before, after)
    assert after["remaining"] < before["remaining"], (before, after)
    expect(slo_page.get_by_test_id("markers")).to_contain_text("identity-migration/login-5 failed")
    expect(slo_page.get_by_test_id("slo-budget")).to_have_text(re.compile(r"^\d+(\.\d+)?%$"))
    _assert_chart_drawn(slo_page, "chart-budget", "steps")
    _assert_chart_drawn(slo_page, "chart-burn", "steps")
    screenshot(slo_page, "slo-login-burn")
