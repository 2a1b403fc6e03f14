"""The pages of assumptions and the decision log: plan page card and banner, Start warnings, the
decision page and its Markdown export, the re-plan link, and edits answered 405."""

import re

import pytest
import yaml

from ledger.models import LedgerEntry
from rollouts.models import Assumption, Decision, Step
from rollouts.services.assumptions import assumption_status_set, plan_assumption_policy_set
from rollouts.services.decisions import decision_record
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.steps import step_transition
from tests.rollouts.decision_factories import BREACHING, WHAT, assume, decide, falsify, traffic
from tests.rollouts.plan_factories import step_doc
from tests.rollouts.slo_factories import slo_with_budget

pytestmark = pytest.mark.django_db

PAGE = "/plans/idp/"
DECISIONS = "/plans/idp/decisions/"


@pytest.fixture
def plan(make_plan):
    return make_plan(
        [{"key": "probe-idp", "kind": "probe"}, {"key": "cutover"}, {"key": "docs"}], key="idp"
    )


@pytest.fixture
def tpm(role_user):
    return role_user("tpm")


def _text(response) -> str:
    return response.content.decode()


def _decision_form(**changes) -> dict:
    return {"would_choose_again": "no", "decided": "persist", **WHAT} | changes


# --- the plan page -------------------------------------------------------------------------------


def test_plan_page__assumptions__listed_ranked_with_probe_status_and_evidence(
    client, plan, tpm, role_user
):
    probe = plan.steps.get(key="probe-idp")
    low = assume(plan, tpm, statement="Sessions survive", impact=2, uncertainty=3)
    top = assume(plan, tpm, probe_step_id=probe.pk)
    assumption_status_set(assumption_id=low.pk, status="holding", evidence="soak ok", actor=tpm)
    client.force_login(role_user("viewer"))

    html = _text(client.get(PAGE))

    ranks = re.findall(r'data-testid="assumption-rank">(\d+)', html)
    assert ranks == ["20", "6"]
    assert html.index(f'id="assumption-{top.pk}"') < html.index(f'id="assumption-{low.pk}"')
    assert "Replay one peak hour of logins against the IdP" in html and "cost 2 days" in html
    assert 'href="/plans/idp/steps/probe-idp/"' in html
    assert 'data-testid="assumption-status">holding' in html and "soak ok" in html
    assert f"{tpm.username}, " in html  # who recorded the status
    assert 'data-testid="top-untested"' in html
    # A viewer reads; only the tpm role gets the forms.
    assert 'data-testid="assumption-form"' not in html


def test_plan_page__falsified_assumption__banner_links_to_the_decision_form(client, plan, tpm):
    assumption = assume(plan, tpm)
    falsify(assumption, tpm)
    client.force_login(tpm)

    html = _text(client.get(PAGE))

    banner = re.search(r'data-testid="decision-needed">(.*?)</p>', html, re.S).group(1)
    assert "decision needed: assumption &#x27;The new IdP takes peak login traffic&#x27;" in banner
    assert f'href="/plans/idp/decisions/?assumption={assumption.pk}#record-decision"' in banner
    assert 'data-testid="why-cutover">Can\'t start: decision needed' in html


def test_plan_page__top_untested_warn__warning_next_to_start_and_start_enabled(client, plan, tpm):
    assume(plan, tpm)
    client.force_login(tpm)

    html = _text(client.get(PAGE))

    assert 'data-testid="warn-cutover">Warning: probe the top assumption first' in html
    assert 'data-testid="warn-probe-idp"' not in html  # probes are exempt
    start = re.search(r'<tr id="step-cutover".*?data-action="start"', html, re.S).group(0)
    assert "disabled" not in start.rsplit("<button", 1)[1]


def test_plan_page__top_untested_refuse__start_disabled_with_the_reason(client, plan, tpm):
    assume(plan, tpm)
    plan_assumption_policy_set(plan_id=plan.pk, policy="refuse", actor=tpm)
    client.force_login(tpm)

    html = _text(client.get(PAGE))

    assert 'data-testid="why-cutover">Can\'t start: probe the top assumption' in html
    assert 'data-testid="warn-cutover"' not in html


def test_step_page__top_untested_warn__warning_shown_by_the_actions(client, plan, tpm):
    assume(plan, tpm)
    client.force_login(tpm)

    html = _text(client.get("/plans/idp/steps/cutover/"))

    assert 'data-testid="start-warning"' in html and "probe the top assumption first" in html


def test_assumption_add__tpm__added_and_redirected_to_the_card(client, plan, tpm):
    client.force_login(tpm)

    response = client.post(
        "/plans/idp/assumptions/add",
        {
            "statement": "Peak is 400 rps",
            "impact": "4",
            "uncertainty": "3",
            "probe": "Read last month's peak",
            "probe_cost": "1 hour",
            "probe_step": str(plan.steps.get(key="probe-idp").pk),
        },
    )

    assert response.status_code == 302 and response["Location"] == f"{PAGE}#assumptions"
    added = Assumption.objects.get()
    assert (added.rank, added.probe_step.key, added.created_by) == (12, "probe-idp", tpm)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("impact", "6", "impact must be from 1 to 5 (got 6)"),
        ("uncertainty", "0", "uncertainty must be from 1 to 5 (got 0)"),
    ],
)
def test_assumption_add__score_out_of_range__400_reason_shown_typed_text_kept(
    client, plan, tpm, field, value, problem
):
    client.force_login(tpm)
    values = {"statement": "Peak is 400 rps", "impact": "4", "uncertainty": "3", "probe": "look"}

    response = client.post("/plans/idp/assumptions/add", values | {field: value})

    assert response.status_code == 400
    html = _text(response)
    assert f'data-testid="assumption-error">{problem}' in html
    assert "\nPeak is 400 rps</textarea>" in html
    assert not Assumption.objects.exists()


def test_assumption_status__empty_evidence__400_and_nothing_changed(client, plan, tpm):
    assumption = assume(plan, tpm)
    client.force_login(tpm)

    response = client.post(
        "/plans/idp/assumptions/status",
        {"assumption": assumption.pk, "status": "falsified", "evidence": " "},
    )

    assert response.status_code == 400
    assert "say what evidence shows the assumption is falsified" in _text(response)
    assumption.refresh_from_db()
    assert assumption.status == "untested"


def test_assumption_status__with_evidence__recorded(client, plan, tpm):
    assumption = assume(plan, tpm)
    client.force_login(tpm)

    response = client.post(
        "/plans/idp/assumptions/status",
        {"assumption": assumption.pk, "status": "holding", "evidence": "replay ok"},
    )

    assert response.status_code == 302
    assumption.refresh_from_db()
    assert (assumption.status, assumption.status_changed_by) == ("holding", tpm)


def test_assumption_status__assumption_of_another_plan__400_and_nothing_changed(
    client, plan, tpm, make_plan
):
    other = assume(make_plan([{"key": "x"}], key="other"), tpm)
    client.force_login(tpm)

    response = client.post(
        "/plans/idp/assumptions/status",
        {"assumption": other.pk, "status": "holding", "evidence": "replay ok"},
    )

    assert response.status_code == 400 and f"has no assumption {other.pk}" in _text(response)
    other.refresh_from_db()
    assert other.status == "untested"


def test_assumption_policy__tpm__set(client, plan, tpm):
    client.force_login(tpm)

    response = client.post("/plans/idp/assumption-policy", {"policy": "refuse"})

    assert response.status_code == 302
    plan.refresh_from_db()
    assert plan.assumption_policy == "refuse"


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/plans/idp/assumptions/add", {"statement": "x", "impact": 3, "uncertainty": 3}),
        ("/plans/idp/assumptions/status", {"status": "holding", "evidence": "x"}),
        ("/plans/idp/assumption-policy", {"policy": "refuse"}),
        (DECISIONS, _decision_form(decided="kill")),
    ],
)
def test_writes__viewer__403_and_nothing_stored(client, plan, role_user, url, data):
    client.force_login(role_user("viewer"))
    entries = LedgerEntry.objects.count()

    assert client.post(url, data).status_code == 403

    plan.refresh_from_db()
    assert (plan.status, plan.assumption_policy) == ("active", "warn")
    assert not Assumption.objects.exists() and not Decision.objects.exists()
    assert LedgerEntry.objects.count() == entries


# --- the decision page ---------------------------------------------------------------------------


def _falsified_by_probe(plan, tpm) -> Assumption:
    probe = plan.steps.get(key="probe-idp")
    assumption = assume(plan, tpm, probe_step_id=probe.pk)
    step_transition(step_id=probe.pk, action="start", actor=tpm)
    traffic(*BREACHING)
    verification_evaluate(verification_id=probe.verifications.get().pk, trigger="interval")
    assumption.refresh_from_db()
    return assumption


def test_decision_page__log_oldest_first_linked_to_what_prompted_it_beside_the_path(
    client, plan, tpm, role_user
):
    assumption = _falsified_by_probe(plan, tpm)
    evaluation = assumption.evidence_evaluation
    slo = slo_with_budget(remaining=0.5)
    first = decide(
        plan,
        tpm,
        "persist",
        assumption_id=assumption.pk,
        step_id=plan.steps.get(key="probe-idp").pk,
        evaluation_id=evaluation.pk,
        slo_id=slo.pk,
        incident_id=7,
    )
    fix = decide(plan, tpm, "adapt", corrects_id=first.pk, why="We misread the probe.")
    client.force_login(role_user("viewer"))

    html = _text(client.get(DECISIONS))

    assert html.index(f'id="decision-{first.pk}"') < html.index(f'id="decision-{fix.pk}"')
    assert f'href="/plans/idp/#assumption-{assumption.pk}"' in html
    assert 'href="/plans/idp/steps/probe-idp/"' in html
    assert f'href="/plans/idp/steps/probe-idp/#evaluation-{evaluation.pk}"' in html
    assert f'href="/slos/{slo.name}/"' in html and 'href="/incidents/7/"' in html
    assert f'data-testid="corrects">Corrects <a href="#decision-{first.pk}">' in html
    assert f'data-testid="corrected-by">Corrected by <a href="#decision-{fix.pk}">' in html
    assert "Declared vs actual order" in html and "probe-idp" in html
    # A viewer reads the log; the form and the re-plan link are the tpm's.
    assert 'data-testid="decision-form"' not in html and 'data-testid="replan-link"' not in html
    # The step page carries the anchor the evaluation link points at.
    step_html = _text(client.get("/plans/idp/steps/probe-idp/"))
    assert f'id="evaluation-{evaluation.pk}"' in step_html


def test_decision_page__from_the_banner__form_filled_with_what_prompted_it(client, plan, tpm):
    assumption = _falsified_by_probe(plan, tpm)
    client.force_login(tpm)

    form = client.get(f"{DECISIONS}?assumption={assumption.pk}").context["form"]

    assert form.initial["assumption"] == assumption.pk
    assert form.initial["evaluation"] == assumption.evidence_evaluation_id
    assert form.initial["step"] == plan.steps.get(key="probe-idp").pk
    assert form.initial["believed"] == assumption.statement


def test_decision_record__persist_on_the_falsified_assumption__decision_needed_cleared(
    client, plan, tpm
):
    assumption = _falsified_by_probe(plan, tpm)
    client.force_login(tpm)
    assert 'data-testid="decision-needed"' in _text(client.get(PAGE))

    response = client.post(
        DECISIONS,
        _decision_form(assumption=assumption.pk, evaluation=assumption.evidence_evaluation_id),
    )

    decision = Decision.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{DECISIONS}#decision-{decision.pk}"
    assert decision.assumption == assumption and decision.would_choose_again is False
    assert 'data-testid="decision-needed"' not in _text(client.get(PAGE))


def test_decision_record__kill__plan_killed(client, plan, tpm):
    client.force_login(tpm)

    response = client.post(DECISIONS, _decision_form(decided="kill"))

    assert response.status_code == 302
    plan.refresh_from_db()
    assert plan.status == "killed"


def test_decision_record__no_reasoning__400_reason_shown_typed_text_kept(client, plan, tpm):
    client.force_login(tpm)

    response = client.post(DECISIONS, _decision_form(decided="kill", why=""))

    assert response.status_code == 400
    html = _text(response)
    assert 'data-testid="decision-error">say why you decided this' in html
    assert f"\n{WHAT['believed']}</textarea>" in html
    plan.refresh_from_db()
    assert plan.status == "active" and not Decision.objects.exists()


def test_decision_record__kill_on_completed_plan__409_and_nothing_stored(client, make_plan, tpm):
    make_plan([{"key": "a", "status": "done"}], status="completed", key="idp")
    client.force_login(tpm)

    response = client.post(DECISIONS, _decision_form(decided="kill"))

    assert response.status_code == 409
    assert "plan idp is completed: there is nothing left to kill" in _text(response)
    assert not Decision.objects.exists()


def test_decision_record__correction_of_another_plans_decision__400(client, plan, tpm, make_plan):
    elsewhere = decide(make_plan([{"key": "x"}], key="other"), tpm, "persist")
    client.force_login(tpm)

    response = client.post(DECISIONS, _decision_form(corrects=elsewhere.pk))

    assert response.status_code == 400
    assert "a correction must point at a decision of the same one" in _text(response)
    assert Decision.objects.count() == 1


# --- past decisions cannot be edited -------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_decision_edit__any_write__405_with_the_reason_and_nothing_changed(
    client, plan, tpm, method
):
    decision = decide(plan, tpm, "persist")
    before = list(Decision.objects.values())
    entries = LedgerEntry.objects.count()
    client.force_login(tpm)

    response = getattr(client, method)(
        f"{DECISIONS}{decision.pk}/",
        {"why": "rewritten"} if method == "post" else '{"why": "rewritten"}',
        **({} if method == "post" else {"content_type": "application/json"}),
    )

    assert response.status_code == 405
    assert response.json()["error"] == (
        f"decisions are append-only: record a correction that references #{decision.pk}"
    )
    assert list(Decision.objects.values()) == before
    assert LedgerEntry.objects.count() == entries


def test_decision_detail__get__redirects_to_its_entry(client, plan, tpm):
    decision = decide(plan, tpm, "persist")
    client.force_login(tpm)

    response = client.get(f"{DECISIONS}{decision.pk}/")

    assert response.status_code == 302
    assert response["Location"] == f"{DECISIONS}#decision-{decision.pk}"


# --- Markdown export -----------------------------------------------------------------------------


def test_decisions_markdown__download__every_entry_with_links_and_corrections(
    client, plan, tpm, role_user
):
    assumption = assume(plan, tpm)
    falsify(assumption, tpm)
    first = decide(plan, tpm, "persist", assumption_id=assumption.pk, incident_id=7)
    fix = decide(plan, tpm, "adapt", corrects_id=first.pk, why="We misread the load test.")
    client.force_login(role_user("viewer"))

    response = client.get("/plans/idp/decisions.md")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == 'attachment; filename="idp-decisions.md"'
    text = response.content.decode()
    assert text.startswith("# Decision log: IDP (`idp`)\n")
    assert "2 decisions, oldest first" in text
    assert text.index(f"## #{first.pk} · persist") < text.index(f"## #{fix.pk} · adapt")
    assert f"_Corrects #{first.pk}._" in text and f"_Corrected by #{fix.pk}._" in text
    assert f"- **Why:** {WHAT['why']}" in text and "- **Why:** We misread the load test." in text
    assert f"- **{Decision.DECISIVE_QUESTION}** not answered" in text
    assert (
        "[assumption 'The new IdP takes peak login traffic' (falsified)]"
        f"(http://testserver/plans/idp/#assumption-{assumption.pk})"
    ) in text
    assert "[incident #7](http://testserver/incidents/7/)" in text


# --- adapt: re-plan ------------------------------------------------------------------------------


def test_replan__adapt_decision__link_to_import_filled_in_then_apply_ledgers_the_decision(
    client, make_plan, tpm
):
    plan = make_plan([{"key": "a", "status": "done"}, {"key": "b", "deps": ["a"]}], key="idp")
    adapt = decide(plan, tpm, "adapt")
    client.force_login(tpm)

    page = _text(client.get(DECISIONS))
    assert f'href="/plans/import/?decision={adapt.pk}"' in page
    assert f"Re-plan (adapt decision #{adapt.pk})" in page

    form = client.get(f"/plans/import/?decision={adapt.pk}")
    assert 'data-testid="replan-decision"' in _text(form)
    text = form.context["form"].initial["text"]
    assert form.context["form"].initial["decision"] == adapt.pk
    doc = yaml.safe_load(text)
    doc["spec"]["steps"] = [s for s in doc["spec"]["steps"] if s["key"] != "b"]
    doc["spec"]["steps"].append(step_doc("c", depends_on=["a"]))
    edited = yaml.safe_dump(doc, sort_keys=False)

    preview = client.post(
        "/plans/import/", {"action": "preview", "text": edited, "decision": adapt.pk}
    )
    assert preview.status_code == 200
    reviewed = preview.context["form"].initial
    applied = client.post(
        "/plans/import/",
        {
            "action": "apply",
            "previewed": reviewed["previewed"],
            "base": reviewed["base"],
            "decision": reviewed["decision"],
        },
    )

    assert applied.status_code == 302
    entry = LedgerEntry.objects.get(action="plan.applied")
    assert entry.payload["decision"] == adapt.pk and entry.payload["steps_added"] == ["c"]
    assert dict(plan.steps.values_list("key", "status")) == {"a": "done", "c": "pending"}


def test_replan__persist_decision__preview_refused_409(client, make_plan, tpm):
    plan = make_plan([{"key": "a"}], key="idp")
    persist = decide(plan, tpm, "persist")
    client.force_login(tpm)
    text = client.get(f"/plans/import/?decision={persist.pk}").context["form"].initial["text"]

    response = client.post(
        "/plans/import/", {"action": "preview", "text": text, "decision": persist.pk}
    )

    assert response.status_code == 409
    assert f"decision {persist.pk} decided persist, not adapt" in _text(response)


# --- the portfolio -------------------------------------------------------------------------------


def test_portfolio__thrashing_and_decision_needed__badges_with_the_reason(
    client, plan, tpm, make_plan, role_user
):
    for _ in range(4):
        decide(plan, tpm, "adapt")
    calm = make_plan([{"key": "x"}], key="calm")
    falsify(assume(calm, tpm), tpm)
    client.force_login(role_user("viewer"))

    rows = {r["plan"].key: r for r in client.get("/").context["rows"]}
    html = _text(client.get("/"))

    assert rows["idp"]["thrash"].startswith("4 adapt decisions in the last 14 days")
    assert rows["calm"]["thrash"] is None and rows["calm"]["decision_needed"]
    assert rows["calm"]["blocker"].startswith("decision needed: assumption")
    assert html.count('data-testid="thrash-badge"') == 1
    assert 'data-testid="thrash-reason">4 adapt decisions' in html
    assert html.count('data-testid="decision-needed-badge"') == 1


def test_decision_record__service_and_page_agree__incident_decision_not_on_plan_page(
    client, plan, tpm
):
    decision_record(actor=tpm, incident_id=3, decided="other", label="fail over", **WHAT)
    client.force_login(tpm)

    assert 'data-testid="no-decisions"' in _text(client.get(DECISIONS))
    assert Step.objects.filter(plan=plan, status="running").count() == 0


# --- no N+1 --------------------------------------------------------------------------------------


def _queries(client, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_decision_and_plan_pages__more_decisions_and_assumptions__same_number_of_queries(
    client, plan, tpm
):
    client.force_login(tpm)
    step = plan.steps.get(key="cutover")

    def one_more() -> None:
        assumption = assume(plan, tpm, probe_step_id=step.pk)
        falsify(assumption, tpm)
        decide(plan, tpm, "persist", assumption_id=assumption.pk, step_id=step.pk)

    one_more()
    few = (_queries(client, DECISIONS), _queries(client, PAGE), _queries(client, "/"))
    for _ in range(4):
        one_more()

    assert (_queries(client, DECISIONS), _queries(client, PAGE), _queries(client, "/")) == few


def test_decision_page__corrects_not_an_ascii_number__ignored_not_a_500(
    client, make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    client.force_login(role_user("tpm"))
    response = client.get(f"/plans/{plan.key}/decisions/", {"corrects": "²"})
    assert response.status_code == 200


def test_killed_plan_with_an_unanswered_falsified_assumption__no_decision_asked_for(
    client, make_plan, role_user
):
    from rollouts.selectors import portfolio

    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    falsify(assume(plan, tpm), tpm)
    decide(plan, tpm, "kill")  # a kill that names no assumption

    [row] = portfolio()
    assert row["plan"].status == "killed" and row["decision_needed"] is False
    client.force_login(tpm)
    assert 'data-testid="decision-needed"' not in client.get(f"/plans/{plan.key}/").content.decode()


def test_step_action__next_off_site__redirected_home_instead(client, make_plan, role_user):
    plan = make_plan([{"key": "a", "status": "ready"}])
    client.force_login(role_user("tpm"))

    response = client.post(
        f"/plans/{plan.key}/steps/a/action",
        {"action": "start", "reason": "", "next": "https://evil.example/x"},
    )

    assert response.status_code == 302 and response["Location"] == "/"


def test_plan_page__kill__a_link_to_the_decision_log_with_kill_chosen_not_a_plan_action(
    client, make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    client.force_login(role_user("tpm"))

    page = client.get(f"/plans/{plan.key}/").content.decode()
    refused = client.post(
        f"/plans/{plan.key}/action", {"action": "kill", "reason": "done"}, HTTP_HX_REQUEST="true"
    )
    form = client.get(f"/plans/{plan.key}/decisions/", {"decided": "kill"})

    assert 'data-testid="kill-link"' in page and '<option value="kill">' not in page
    assert refused.status_code == 409 and "a kill is a decision" in refused.content.decode()
    assert form.context["form"].initial["decided"] == "kill"
    assert plan.__class__.objects.get(pk=plan.pk).status == "active"
