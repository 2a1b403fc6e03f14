"""Assumptions and the decision log as a person sees them: the seeded plan's ranked bets; on a copy
of the plan, a failing probe step that falsifies the top bet, the "decision needed" hold on every
start, a kill recorded as a decision, and the call in the plan's and leadership's views."""

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot
from tests.browser.test_verification import _manage_shell
from tests.rollouts.test_verification_worker import _ingest

pytestmark = pytest.mark.browser
SEEDED = "/plans/identity-migration/"
LIVE = 30_000  # ms: ingest -> Celery worker -> on-commit push over the websocket, on a slow machine
TOP_STATEMENT = (
    "The new identity provider carries peak sign-in traffic (2,000/s) with under 1% errors"
)

# A copy of the example plan under its own key, active, with the seeded top assumption linked to
# the copy's own probe step. The shared seeded plan is never touched. Prints what the test needs.
PREPARE_COPY = """
import json
import uuid
from pathlib import Path
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from accounts.services import api_token_create
from rollouts.models import Step
from rollouts.services.assumptions import assumption_add
from rollouts.services.plan_apply import plan_apply
from rollouts.services.steps import plan_transition

User = get_user_model()
tpm = User.objects.get(username="tpm")
suffix = uuid.uuid4().hex[:8]
key, name = f"identity-migration-{suffix}", f"Identity provider migration (copy {suffix})"
text = (Path(settings.BASE_DIR) / "examples" / "identity-migration.yaml").read_text()
assert text.count("key: identity-migration\\n") == 1
assert text.count("name: Identity provider migration\\n") == 1
text = text.replace("key: identity-migration\\n", f"key: {key}\\n").replace(
    "name: Identity provider migration\\n", f"name: {name}\\n"
)
plan = plan_apply(text=text, actor=tpm).plan
plan_transition(plan_id=plan.pk, action="activate", actor=tpm, reason="browser test: decisions")
# The demo's open incident (and any other test's) on this copy's services holds it; each one's
# commander lets the copy go on, as for the original: this test is about assumptions, not holds.
from incidents.models import Incident, RoleAssignment
from incidents.selectors import incident_held_plans
from incidents.services import incident_plan_release
for incident in Incident.objects.filter(status__in=Incident.OPEN):
    if any(h["plan"].key == key and not h["release"] for h in incident_held_plans(incident)):
        command = RoleAssignment.objects.get(
            incident=incident, role="commander", renounced_at__isnull=True
        )
        incident_plan_release(
            incident_id=incident.pk, plan_key=key, reason="browser test: decisions",
            actor=command.user,
        )
probe = plan.steps.get(key="idp-peak-probe")
# Only the breaching sample the test posts makes the probe's verification evaluate within it.
Step.objects.filter(pk=probe.pk).update(
    verify_interval_seconds=3600, verify_initial_delay_seconds=3600
)
assumption = assumption_add(
    plan_id=plan.pk,
    statement=(
        "The new identity provider carries peak sign-in traffic (2,000/s) with under 1% errors"
    ),
    impact=5,
    uncertainty=4,
    probe="Replay one peak hour of sign-ins against it from the load generator",
    probe_cost="2 hours, one engineer",
    probe_step_id=probe.pk,
    actor=tpm,
)
exporter, _ = User.objects.get_or_create(username="browser-exporter")
exporter.user_permissions.add(Permission.objects.get(codename="add_sample"))
_, raw = api_token_create(
    user=exporter, name=f"browser-decisions-{suffix}", scopes=["metrics:write"]
)
print(json.dumps({
    "key": key,
    "name": name,
    "plan": plan.pk,
    "assumption": assumption.pk,
    "probe": probe.pk,
    "token": raw,
    "ready": sorted(plan.steps.filter(status="ready").values_list("key", flat=True)),
}))
"""

# What the ledger holds for the copy, in order, and its decisions.
LEDGER_OF = """
import json
from ledger.models import LedgerEntry
from rollouts.models import Decision
entries = LedgerEntry.objects.filter(plan_id={plan}).order_by("seq")
print(json.dumps({{
    "actions": list(entries.values_list("action", flat=True)),
    "killed_reason": entries.filter(action="plan.killed").values_list("payload", flat=True).first(),
    "decisions": list(Decision.objects.filter(plan_id={plan}).values("pk", "decided", "assumption_id")),
}}))
"""


def _ingest_replay_errors(base: str, token: str, value: float) -> dict:
    """One sample of the probe's metric, as a load generator's exporter would post it."""
    return _ingest(base, token, value, name="idp_replay_error_ratio", labels={})


def _force_click(page, button) -> None:
    """Click a button the page disabled, to see the server's own refusal."""
    button.evaluate("b => { b.disabled = false; }")
    button.click()


def test_seeded_plan__viewer__three_assumptions_ranked_top_untested_with_probe_and_no_forms(
    new_page,
):
    page = new_page()
    login(page, "viewer")
    page.goto(SEEDED)

    card = page.get_by_role("region", name="Assumptions")
    rows = card.get_by_test_id("assumption-row")
    expect(rows).to_have_count(3)
    expect(card.get_by_test_id("assumption-rank")).to_have_text(
        [re.compile(r"^\s*20\s+top\s*$"), re.compile(r"^\s*8\s*$"), re.compile(r"^\s*6\s*$")]
    )
    top = rows.nth(0)
    expect(top).to_contain_text(TOP_STATEMENT)
    expect(top).to_have_attribute("data-status", "untested")
    expect(top.get_by_test_id("assumption-status")).to_have_text("untested")
    probe_link = top.get_by_role("link", name="idp-peak-probe")
    expect(probe_link).to_have_attribute("href", SEEDED + "steps/idp-peak-probe/")
    expect(top).to_contain_text("cost 2 hours, one engineer")
    expect(card.get_by_test_id("top-untested")).to_contain_text(
        "probe the top assumption first: 'The new identity provider carries peak sign-in "
        "traffic (2,000/s) with under 1% errors' (rank 20) is untested"
    )
    expect(card.get_by_test_id("assumption-policy")).to_have_text("warns")

    for row, statement, evidence in (
        (
            rows.nth(1),
            "Existing sessions can be backfilled online, without a sign-in freeze",
            "accounts-deploy and the backfill ran with lock waits under 40 ms in us-east",
        ),
        (
            rows.nth(2),
            "Clients never notice the gateway auth policy change",
            "gateway-policy canary: auth rejections flat at 1% in us-east and eu-west",
        ),
    ):
        expect(row).to_contain_text(statement)
        expect(row).to_have_attribute("data-status", "holding")
        expect(row.get_by_test_id("assumption-status")).to_have_text("holding")
        expect(row).to_contain_text(evidence)
        expect(row).to_contain_text(re.compile(r"tpm, \d{4}-\d\d-\d\d \d\d:\d\d"))

    # A viewer reads; the add, status and policy forms are a TPM's.
    for form in ("assumption-form", "assumption-status-form", "assumption-policy-form"):
        expect(page.get_by_test_id(form)).to_have_count(0)
    expect(page.get_by_role("button", name="Add the assumption")).to_have_count(0)
    expect(page.get_by_test_id("decision-needed")).to_have_count(0)
    screenshot(page, "assumptions-seeded")


def test_copy_of_plan__probe_fails_then_kill_decision__falsified_held_killed_and_reported(
    new_page, stepwise_server
):
    copy = _manage_shell(stepwise_server, PREPARE_COPY)
    key, name, plan_url = copy["key"], copy["name"], f"/plans/{copy['key']}/"
    assert {"idp-peak-probe", "idp-roles", "sessions-expand"} <= set(copy["ready"])
    marker = uuid.uuid4().hex[:8]
    why = (
        f"Peak replay failed at 4% errors ({marker}); the provider cannot carry our peak, "
        "and a re-plan would be a different project"
    )

    page = new_page()
    login(page, "tpm")

    # Before the probe: the bet is ranked first and untested; a non-probe start only warns.
    page.goto(plan_url)
    expect(page.get_by_test_id("plan-status")).to_have_text("active")
    card = page.get_by_role("region", name="Assumptions")
    top = card.get_by_test_id("assumption-row").first
    expect(top).to_contain_text(TOP_STATEMENT)
    expect(top.get_by_test_id("assumption-rank")).to_contain_text("20")
    expect(top.get_by_test_id("assumption-rank")).to_contain_text("top")
    expect(top.get_by_test_id("assumption-status")).to_have_text("untested")
    expect(page.get_by_test_id("warn-idp-roles")).to_contain_text("probe the top assumption first")
    expect(page.get_by_test_id("warn-idp-peak-probe")).to_have_count(0)  # the probe itself

    page.goto(plan_url + "steps/idp-roles/")
    actions = page.get_by_role("region", name="Actions")
    expect(actions.get_by_test_id("start-warning")).to_contain_text(
        "start (allowed, with a warning the ledger keeps): probe the top assumption first: "
        "'The new identity provider carries peak sign-in traffic (2,000/s) with under 1% "
        "errors' (rank 20) is untested; its probe: Replay one peak hour of sign-ins against it "
        "from the load generator (cost 2 hours, one engineer; step idp-peak-probe)"
    )
    expect(actions.locator("select[name=action] option[value=start]")).to_be_enabled()

    # Run the probe from the plan page; the breaching sample decides it.
    page.goto(plan_url)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.locator("#step-idp-peak-probe button[data-action=start]").click()
    expect(page.get_by_test_id("action-ok")).to_have_text("idp-peak-probe: start done")
    expect(page.get_by_test_id("status-idp-peak-probe")).to_have_text("running", timeout=LIVE)
    page.evaluate("window.__notReloaded = true")

    written = _ingest_replay_errors(stepwise_server, copy["token"], 0.04)
    assert written == {"written": 1}

    expect(top).to_have_attribute("data-status", "falsified", timeout=LIVE)
    expect(top.get_by_test_id("assumption-status")).to_have_text("falsified")
    expect(top).to_contain_text("decision needed")
    expect(top).to_contain_text(
        re.compile(r"probe step idp-peak-probe, verification \d+ failed: .*evaluation #1: ")
    )
    evidence = top.get_by_test_id("evidence-evaluation")
    expect(evidence).to_have_attribute(
        "href", re.compile(rf"^{re.escape(plan_url)}steps/idp-peak-probe/#evaluation-\d+$")
    )
    expect(top).to_contain_text("stepwise (probe)")
    banner = page.get_by_test_id("decision-needed")
    expect(banner).to_have_count(1, timeout=LIVE)
    expect(banner).to_contain_text(
        "decision needed: assumption 'The new identity provider carries peak sign-in traffic "
        "(2,000/s) with under 1% errors' was falsified by probe step idp-peak-probe"
    )
    expect(banner).to_contain_text("record adapt, persist or kill")
    # The probe's own verdict acted too: on_fail pause_plan.
    expect(page.get_by_test_id("status-idp-peak-probe")).to_have_text("failed", timeout=LIVE)
    expect(page.get_by_test_id("plan-status")).to_have_text("paused", timeout=LIVE)
    assert page.evaluate("window.__notReloaded") is True  # pushed live, not reloaded
    screenshot(page, "probe-falsified")

    # Resuming the plan does not answer the falsified bet: every start stays held.
    page.get_by_label("Plan action").select_option("resume")
    page.locator(".plan-controls").get_by_label("Reason").fill("resume to decide")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_test_id("action-ok")).to_have_text(f"plan {key}: resume")
    expect(page.get_by_test_id("plan-status")).to_have_text("active", timeout=LIVE)
    held = re.compile(r"^Can't start: decision needed: assumption 'The new identity provider")
    expect(page.get_by_test_id("why-idp-roles")).to_have_text(held, timeout=LIVE)
    expect(page.get_by_test_id("why-sessions-expand")).to_have_text(held)
    expect(page.get_by_test_id("warn-idp-roles")).to_have_count(0)
    # No reload: after live pushes the dependency graph must still keep to its card, not cover
    # the first rows' buttons.
    expect(page.get_by_test_id("decision-needed")).to_have_count(1)
    start_roles = page.locator("#step-idp-roles button[data-action=start]")
    expect(start_roles).to_be_disabled()
    expect(start_roles).to_have_attribute("title", re.compile(r"^decision needed: "))
    _force_click(page, start_roles)
    expect(page.get_by_test_id("action-error")).to_contain_text(
        "idp-roles cannot start: decision needed: assumption 'The new identity provider"
    )
    expect(page.get_by_test_id("status-idp-roles")).to_have_text("ready")
    screenshot(page, "decision-needed")

    page.goto(plan_url + "steps/idp-roles/")
    actions = page.get_by_role("region", name="Actions")
    expect(actions).to_contain_text(
        "start: decision needed: assumption 'The new identity provider carries peak sign-in "
        "traffic (2,000/s) with under 1% errors' was falsified by probe step idp-peak-probe"
    )
    start_option = actions.locator("select[name=action] option[value=start]")
    expect(start_option).to_be_disabled()
    expect(start_option).to_have_text("start (not now)")
    expect(actions.get_by_test_id("start-warning")).to_have_count(0)

    # The decision form: an empty or incomplete decision is refused and records nothing.
    page.goto(plan_url + "decisions/")
    expect(page.get_by_test_id("decision-count")).to_have_text("0")
    form = page.get_by_test_id("decision-form")
    submit = form.get_by_role("button", name="Record the decision")
    submit.click()  # the browser holds it: the call and the decisive question are required
    assert form.locator("#decision-decided_0").evaluate("e => e.validity.valueMissing")
    assert form.locator("#decision-decided_0").evaluate("e => e.validationMessage")
    expect(page).to_have_url(re.compile(rf"{re.escape(plan_url)}decisions/$"))
    form.evaluate("f => { f.noValidate = true; }")  # what the server says to an empty post
    submit.click()
    error = page.get_by_test_id("decision-error")
    expect(error).to_contain_text("decided: This field is required.")
    expect(error).to_contain_text("would_choose_again: answer the decisive question: yes or no")
    expect(page.get_by_test_id("decision-count")).to_have_text("0")
    form.get_by_label("kill").check()
    form.get_by_label("no", exact=True).check()
    submit.click()  # a call with nothing said about it
    expect(error).to_have_text(
        "say what you believed; say what reality showed; say why you decided this"
    )
    expect(page.get_by_test_id("decision-count")).to_have_text("0")
    expect(page.get_by_test_id("plan-status")).to_have_text("active")  # the kill did not happen

    # From the banner: the form comes filled with what prompted it.
    page.goto(plan_url)
    page.get_by_test_id("decision-needed").get_by_role("link", name="Record the decision").click()
    expect(page).to_have_url(re.compile(rf"decisions/\?assumption={copy['assumption']}"))
    form = page.get_by_test_id("decision-form")
    expect(form.get_by_label("Prompted by assumption")).to_have_value(str(copy["assumption"]))
    expect(form.get_by_label("Prompted by step")).to_have_value(str(copy["probe"]))
    expect(form.locator("input[name=evaluation]")).to_have_value(re.compile(r"^\d+$"))
    expect(form.get_by_label("What we believed")).to_have_value(TOP_STATEMENT)
    expect(form.get_by_label("What reality showed")).to_have_value(
        re.compile(r"^probe step idp-peak-probe, verification \d+ failed")
    )
    form.get_by_label("What we believed").fill(
        "The new identity provider carries our peak sign-in traffic with under 1% errors"
    )
    form.get_by_label("What reality showed").fill(
        "The peak-hour replay failed: 4% of replayed sign-ins errored"
    )
    form.get_by_label("Why").fill(why)
    form.get_by_label("kill").check()
    form.get_by_label("no", exact=True).check()
    form.get_by_role("button", name="Record the decision").click()

    expect(page.locator(".messages")).to_contain_text(
        re.compile(r"Decision #\d+ recorded\. The plan is killed\.")
    )
    expect(page.get_by_test_id("plan-status")).to_have_text("killed")
    expect(page.get_by_test_id("decision-count")).to_have_text("1")
    entry = page.get_by_test_id("decision")
    expect(entry).to_have_attribute("data-decided", "kill")
    expect(entry).to_contain_text(why)
    expect(entry).to_contain_text("4% of replayed sign-ins errored")
    expect(entry.get_by_test_id("would-choose-again")).to_have_text("no")
    prompt = entry.get_by_test_id("prompt-assumption")
    expect(prompt).to_contain_text("assumption 'The new identity provider")
    expect(prompt).to_contain_text("(falsified)")
    expect(prompt).to_have_attribute("href", f"{plan_url}#assumption-{copy['assumption']}")
    expect(entry.get_by_test_id("prompt-step")).to_have_text("step idp-peak-probe")
    expect(entry.get_by_test_id("prompt-evaluation")).to_contain_text("of idp-peak-probe (fail)")
    screenshot(page, "decision-recorded-kill")

    # The plan: killed, nothing left waiting on a decision, and nothing starts.
    prompt.click()
    expect(page).to_have_url(re.compile(rf"{re.escape(plan_url)}#assumption-"))
    expect(page.get_by_test_id("plan-status")).to_have_text("killed")
    expect(page.get_by_test_id("decision-needed")).to_have_count(0)
    answered = page.locator(f"#assumption-{copy['assumption']}")
    expect(answered).to_have_attribute("data-status", "falsified")
    expect(answered).not_to_contain_text("decision needed")
    expect(page.get_by_test_id("why-idp-roles")).to_have_text(
        "Can't start: plan is killed: only an active plan starts steps"
    )
    start_roles = page.locator("#step-idp-roles button[data-action=start]")
    expect(start_roles).to_be_disabled()
    _force_click(page, start_roles)
    expect(page.get_by_test_id("action-error")).to_have_text(
        "idp-roles cannot start: plan is killed: only an active plan starts steps"
    )
    expect(page.get_by_test_id("status-idp-roles")).to_have_text("ready")

    # The ledger, filtered to this plan (newest first).
    page.goto(f"/ledger/?plan={copy['plan']}")
    actions_column = page.locator("#ledger-rows tr td:nth-child(4)")
    expect(actions_column.first).to_have_text("plan.killed")
    expect(actions_column.nth(1)).to_have_text("decision.recorded")
    ledger = _manage_shell(stepwise_server, LEDGER_OF.format(plan=copy["plan"]))
    actions_in_order = ledger["actions"]
    story = [
        "verification.failed",
        "assumption.falsified",
        "step.failed",
        "plan.paused",
        "plan.active",  # the resume
        "decision.recorded",
        "plan.killed",
    ]
    remaining = iter(actions_in_order[actions_in_order.index("verification.started") :])
    assert all(action in remaining for action in story), actions_in_order
    assert actions_in_order[-2:] == ["decision.recorded", "plan.killed"], actions_in_order
    assert ledger["decisions"] == [
        {"pk": ledger["decisions"][0]["pk"], "decided": "kill", "assumption_id": copy["assumption"]}
    ]
    assert ledger["killed_reason"]["reason"] == f"decision {ledger['decisions'][0]['pk']}: {why}"

    # Leadership: the call across programs, filtered to kills, and the plan's Markdown log.
    viewer = new_page()
    login(viewer, "viewer")
    viewer.goto("/decisions/")
    filters = viewer.get_by_role("form", name="Filter decisions")
    filters.locator("select[name=decided]").select_option("kill")
    filters.get_by_role("button", name="Filter").click()
    expect(viewer).to_have_url(re.compile(r"[?&]decided=kill"))
    row = viewer.get_by_test_id("decision-row").filter(has_text=marker)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("kill")
    expect(row).to_contain_text("tpm")
    expect(row.get_by_role("link", name=name)).to_have_attribute("href", plan_url)
    for other in viewer.get_by_test_id("decision-row").all():
        expect(other).to_have_attribute("data-decided", "kill")
    kills = viewer.get_by_test_id("decision-totals").locator("[data-decided=kill]")
    expect(kills).to_have_text(re.compile(r"^Kill: [1-9]\d*$"))
    expect(viewer.locator("#chart-decisions svg.main-svg").first).to_be_visible()
    screenshot(viewer, "leadership-decisions")

    viewer.goto(plan_url + "decisions/")
    expect(viewer.get_by_test_id("decision-form")).to_have_count(0)  # a viewer reads the log
    with viewer.expect_download() as download:
        viewer.get_by_test_id("decisions-markdown").click()
    assert download.value.suggested_filename == f"{key}-decisions.md"
    markdown = Path(download.value.path()).read_text()
    assert f"# Decision log: {name} (`{key}`)" in markdown
    assert "Plan status: killed. 1 decision" in markdown
    assert "- **Decided:** kill" in markdown
    assert f"- **Why:** {why}" in markdown
    assert "would we choose this plan from scratch today?** no" in markdown
    assert f"{plan_url}#assumption-{copy['assumption']})" in markdown
