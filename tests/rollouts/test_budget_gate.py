"""The error budget gate: declared in the plan file, read against the SLO's real budget, holding the
start (on the plan page, the step page and in the service, with the same words), and overridden
only through a recorded decision."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.errors import TransitionRefused
from ledger.models import LedgerEntry
from rollouts.gates import budget_gate_blockers, budget_gate_text, budget_gates
from rollouts.models import Decision, Plan, Step
from rollouts.plan_spec import plan_export, plan_spec_errors, plan_spec_parse
from rollouts.services.plan_apply import PlanApplyRefused, plan_apply
from rollouts.services.steps import step_transition
from signals.slos import slo_refresh, slo_status
from tests.rollouts.plan_factories import plan_yaml, step_doc
from tests.rollouts.slo_factories import NOW, gate, slo_with_budget
from tests.slo_data import counters

pytestmark = pytest.mark.django_db

EXHAUSTED = "error budget gate: login-availability has -12.5% of its budget left; this step needs more than 25%"


def _messages(text: str) -> list[str]:
    spec, errors = plan_spec_errors(text)
    assert spec is None
    return [str(e) for e in errors]


# --- plan file ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [("25%", Decimal("25")), ("12.5 %", Decimal("12.5")), (40, Decimal("40"))],
)
def test_plan_spec_parse__budget_gate__slo_and_threshold_in_percent(written, stored):
    spec = plan_spec_parse(
        plan_yaml(
            step_doc("a", budget_gate={"slo": "login-availability", "min_remaining": written})
        )
    )

    assert spec.steps[0].budget_slo == "login-availability"
    assert spec.steps[0].budget_min_remaining == stored


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("120%", "must be a percentage from 0 to 100, like 25% or 25 (got '120%')"),
        ("lots", "must be a percentage from 0 to 100, like 25% or 25 (got 'lots')"),
        (-1, "must be a percentage from 0 to 100, like 25% or 25 (got -1)"),
        ("12.345%", "at most two decimals (got 12.345%)"),
        (True, "must be text or a number, not true/false"),
    ],
)
def test_plan_spec_errors__bad_min_remaining__error_at_its_path(value, message):
    text = plan_yaml(
        step_doc("a", budget_gate={"slo": "login-availability", "min_remaining": value})
    )

    [error] = _messages(text)

    assert error.startswith(f"spec.steps[0].budget_gate.min_remaining: {message}")


def test_plan_spec_errors__gate_without_threshold_or_with_bad_slo__each_reported():
    text = plan_yaml(
        step_doc("a", budget_gate={"slo": "login-availability"}),
        step_doc("b", budget_gate={"slo": "not a slug", "min_remaining": "5%", "extra": 1}),
    )

    errors = _messages(text)

    assert any(
        e.startswith("spec.steps[0].budget_gate: missing required field 'min_remaining'")
        for e in errors
    )
    assert any(e.startswith("spec.steps[1].budget_gate.slo: must be a slug") for e in errors)
    assert any(
        e.startswith("spec.steps[1].budget_gate.extra: unknown field 'extra'") for e in errors
    )


def test_plan_apply__gate_on_unknown_slo__refused_with_the_known_names_and_nothing_written():
    slo_with_budget("login-availability", remaining=None)
    slo_with_budget("checkout-latency", remaining=None)
    text = plan_yaml(step_doc("a", budget_gate={"slo": "login-avail", "min_remaining": "25%"}))

    with pytest.raises(PlanApplyRefused) as info:
        plan_apply(text=text, actor=None)

    assert info.value.reasons == [
        "step a gates on SLO 'login-avail', which does not exist; "
        "known SLOs: checkout-latency, login-availability"
    ]
    assert not Plan.objects.exists()


def test_plan_apply__gate__stored_diffed_and_export_round_trips():
    slo = slo_with_budget(remaining=None)
    plan_apply(text=plan_yaml(step_doc("a")), actor=None)
    gated = plan_yaml(step_doc("a", budget_gate={"slo": slo.name, "min_remaining": "25%"}))

    preview = plan_apply(text=gated, actor=None, dry_run=True)
    plan_apply(text=gated, actor=None)

    assert "    budget_gate.slo: (none) -> 'login-availability'" in preview.diff.lines()
    assert "    budget_gate.min_remaining: (none) -> 25" in preview.diff.lines()
    step = Step.objects.get(key="a")
    assert step.budget_slo == slo and step.budget_min_remaining == Decimal("25.00")
    exported = plan_export(step.plan)
    assert "budget_gate: {slo: login-availability, min_remaining: 25%}" in exported
    entries = LedgerEntry.objects.count()
    assert plan_apply(text=exported, actor=None).diff.empty
    assert LedgerEntry.objects.count() == entries


# --- the gate read against the budget ------------------------------------------------------------


def test_budget_gate_blockers__exhausted_budget__reason_names_slo_budget_and_gate(make_plan):
    plan = make_plan([{"key": "a"}])
    step = gate(plan, "a", slo_with_budget(remaining=-0.125))

    assert budget_gate_blockers([step]) == {step.pk: EXHAUSTED}


def test_budget_gate_blockers__budget_left_above_threshold_or_no_data__nothing_held(make_plan):
    plan = make_plan([{"key": "a"}, {"key": "b"}])
    healthy = gate(plan, "a", slo_with_budget("login-availability", remaining=0.63))
    silent = gate(plan, "b", slo_with_budget("checkout-latency", remaining=None))

    assert budget_gate_blockers([healthy, silent]) == {}
    assert budget_gate_text(healthy, slo_status(healthy.budget_slo)) == (
        "login-availability: 63% left, needs > 25%"
    )
    assert budget_gate_text(silent, slo_status(silent.budget_slo)) == (
        "checkout-latency: no data: the budget is unchanged (needs > 25%)"
    )


def test_budget_gate_blockers__below_threshold_but_not_exhausted__held(make_plan):
    plan = make_plan([{"key": "a"}])
    step = gate(plan, "a", slo_with_budget(remaining=0.2), min_remaining="25.5")

    assert budget_gate_blockers([step]) == {
        step.pk: "error budget gate: login-availability has 20% of its budget left; "
        "this step needs more than 25.5%"
    }


def test_budget_gate_blockers__many_steps_and_slos__one_batch_of_queries(make_plan):
    plan = make_plan([{"key": k} for k in "abcdef"])
    slos = [slo_with_budget(name, remaining=-0.5) for name in ("s-one", "s-two", "s-three")]
    few = [gate(plan, "a", slos[0])]
    many = [gate(plan, key, slos[i % 3]) for i, key in enumerate("abcdef")]

    with CaptureQueriesContext(connection) as one:
        budget_gate_blockers(few)
    with CaptureQueriesContext(connection) as six:
        held = budget_gate_blockers(many)

    assert len(held) == 6
    assert len(six) == len(one) <= 3


def test_budget_gates__started_step__gate_read_but_it_holds_nothing(make_plan):
    plan = make_plan([{"key": "a", "status": "running"}])
    step = gate(plan, "a", slo_with_budget(remaining=-0.125))

    assert budget_gates([step])[step.pk].closed
    assert budget_gate_blockers([step]) == {}


# --- the start ------------------------------------------------------------------------------------


def test_step_start__budget_exhausted__refused_with_the_gate_reason_and_nothing_changes(
    make_plan, role_user
):
    plan = make_plan([{"key": "a"}])
    step = gate(plan, "a", slo_with_budget(remaining=-0.125))
    entries = LedgerEntry.objects.count()

    with pytest.raises(TransitionRefused) as info:
        step_transition(step_id=step.pk, action="start", actor=role_user("tpm"))

    assert str(info.value) == f"a cannot start: {EXHAUSTED}"
    assert Step.objects.get(pk=step.pk).status in {"pending", "ready"}
    assert LedgerEntry.objects.filter(action="step.running").count() == 0
    assert LedgerEntry.objects.count() - entries <= 1  # at most pending -> ready


@pytest.mark.parametrize("remaining", [0.63, None])
def test_step_start__budget_left_or_no_data__starts(make_plan, role_user, remaining):
    plan = make_plan([{"key": "a"}])
    step = gate(plan, "a", slo_with_budget(remaining=remaining))

    step_transition(step_id=step.pk, action="start", actor=role_user("tpm"))

    assert Step.objects.get(pk=step.pk).status == "running"


def test_step_start__another_rule_and_the_gate__the_other_rule_is_the_reason(make_plan):
    plan = make_plan([{"key": "first"}, {"key": "a", "deps": ["first"]}])
    step = gate(plan, "a", slo_with_budget(remaining=-0.125))

    with pytest.raises(TransitionRefused, match="a cannot start: waits for first"):
        step_transition(step_id=step.pk, action="start", actor=None)


def test_step_start__lockstep_partner_gated__whole_group_held_naming_the_partner(make_plan):
    plan = make_plan([{"key": "eu", "lockstep": "g"}, {"key": "us", "lockstep": "g"}])
    gate(plan, "us", slo_with_budget(remaining=-0.125))
    eu = plan.steps.get(key="eu")

    with pytest.raises(TransitionRefused) as info:
        step_transition(step_id=eu.pk, action="start", actor=None)

    assert str(info.value) == (
        "eu cannot start: error budget gate (lockstep partner us): login-availability has "
        "-12.5% of its budget left; us needs more than 25%"
    )
    assert set(plan.steps.values_list("status", flat=True)) <= {"pending", "ready"}


def test_step_start__started_step_budget_exhausts_afterwards__it_keeps_moving(make_plan):
    plan = make_plan([{"key": "a"}])
    step = gate(plan, "a", slo_with_budget(remaining=0.63))
    step_transition(step_id=step.pk, action="start", actor=None)
    Step.objects.filter(pk=step.pk).update(
        budget_slo=slo_with_budget("burnt", remaining=-0.5)
    )  # the gate is only read at the start

    step_transition(step_id=step.pk, action="advance", actor=None)

    assert Step.objects.get(pk=step.pk).status == "verifying"


def test_slo_refresh__budget_crosses_the_gate__plan_pushed_once_with_the_reason(make_plan, pushes):
    with pushes.commit():  # the setup's own pushes go out here
        plan = make_plan([{"key": "a"}, {"key": "b"}])
        slo = slo_with_budget(remaining=0.63)
        gate(plan, "a", slo)
        started = make_plan([{"key": "a"}], key="started-plan")
        step_transition(step_id=gate(started, "a", slo).pk, action="start", actor=None)
    later = NOW + timedelta(minutes=10)

    counters(
        start=NOW,
        end=later,
        rps=100,
        error_ratio_at=lambda m: 0.5,
        requests_metric="login-availability_requests_total",
        failures_metric="login-availability_failures_total",
    )
    pushes.frames.clear()
    with pushes.commit():
        slo_refresh(slo_id=slo.pk, now=later)

    [(stream, _, html)] = pushes.frames  # the started plan's gate holds nothing: no push
    assert stream == plan.stream
    assert "error budget gate: login-availability has" in html
    # Still closed on the next tick: nothing moved, nothing pushed.
    with pushes.commit():
        slo_refresh(slo_id=slo.pk, now=later + timedelta(minutes=1))
    assert len(pushes.frames) == 1


# --- pages ---------------------------------------------------------------------------------------


@pytest.fixture
def gated_plan(make_plan):
    plan = make_plan([{"key": "a"}], key="checkout")
    gate(plan, "a", slo_with_budget(remaining=-0.125))
    return plan


def test_plan_page__gate_holds_a_step__its_row_shows_the_reason_and_start_is_disabled(
    client, role_user, gated_plan
):
    client.force_login(role_user("tpm"))

    page = client.get("/plans/checkout/").content.decode()

    assert f"Can't start: {EXHAUSTED}</p>" in page
    assert f'disabled title="{EXHAUSTED}"' in page


def test_portfolio__gate_holds_the_next_step__its_reason_shown(client, role_user, gated_plan):
    client.force_login(role_user("viewer"))

    [row] = client.get("/").context["rows"]

    assert row["blocker"] == EXHAUSTED


def test_step_page__gate_holds__gate_state_link_disabled_start_and_override_form(
    client, role_user, gated_plan
):
    client.force_login(role_user("tpm"))

    response = client.get("/plans/checkout/steps/a/")
    page = response.content.decode()

    assert response.context["blockers"]["start"] == EXHAUSTED
    assert (
        '<a href="/slos/login-availability/">login-availability</a>: -12.5% left, needs &gt; 25%'
        in page
    )
    assert 'data-testid="gate-state">blocked<' in page
    assert '<option value="start" disabled>start (not now)</option>' in page
    assert f"<strong>start</strong>: {EXHAUSTED}</p>" in page
    assert "Override the budget gate" in page and 'name="believed"' in page
    assert 'type="radio" name="would_choose_again" value="yes"' in page


def test_step_page__lockstep_partner_gated__reason_and_override_naming_its_slo(
    client, role_user, make_plan
):
    plan = make_plan([{"key": "eu", "lockstep": "g"}, {"key": "us", "lockstep": "g"}], key="p")
    gate(plan, "us", slo_with_budget("edge-availability", remaining=-0.125))
    client.force_login(role_user("tpm"))

    page = client.get("/plans/p/steps/eu/").content.decode()

    assert (
        "Can't start: error budget gate (lockstep partner us): edge-availability has -12.5% "
        "of its budget left; us needs more than 25%</p>"
    ) in page
    assert "linked to this step and edge-availability." in page
    assert 'data-testid="budget-gate"' not in page  # eu itself has no gate


def test_step_page__viewer__sees_the_gate_but_no_override_form(client, role_user, gated_plan):
    client.force_login(role_user("viewer"))

    page = client.get("/plans/checkout/steps/a/").content.decode()

    assert 'data-testid="gate-state">blocked<' in page
    assert "Override the budget gate" not in page


def test_step_page__gate_passes__shown_passing_without_override(client, role_user, make_plan):
    plan = make_plan([{"key": "a"}], key="checkout")
    gate(plan, "a", slo_with_budget(remaining=0.63))
    client.force_login(role_user("tpm"))

    page = client.get("/plans/checkout/steps/a/").content.decode()

    assert "login-availability</a>: 63% left, needs &gt; 25%" in page
    assert 'data-testid="gate-state">passing<' in page
    assert "Override the budget gate" not in page


def test_step_page__gate_partial__rendered_alone_for_htmx(client, role_user, gated_plan):
    client.force_login(role_user("viewer"))

    page = client.get(
        "/plans/checkout/steps/a/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="step-gate"
    ).content.decode()

    assert page.lstrip().startswith('<section id="step-gate"') and "<html" not in page


OVERRIDE = {
    "believed": "The login errors come from one bad client release.",
    "observed": "Errors are 1.1x the budget, all from app 4.2.",
    "why": "The new provider fixes the client bug; waiting burns more.",
    "would_choose_again": "yes",
}


def test_override_view__tpm__decision_recorded_step_started_redirected(
    client, role_user, gated_plan
):
    client.force_login(role_user("tpm"))

    response = client.post("/plans/checkout/steps/a/override-budget", OVERRIDE)

    assert response.status_code == 302 and response.url == "/plans/checkout/steps/a/"
    decision = Decision.objects.get()
    assert decision.would_choose_again is True and decision.step.key == "a"
    assert gated_plan.steps.get(key="a").status == "running"


def test_override_view__empty_fields__400_form_errors_and_typed_text_kept(
    client, role_user, gated_plan
):
    client.force_login(role_user("tpm"))

    response = client.post(
        "/plans/checkout/steps/a/override-budget",
        {**OVERRIDE, "why": "   ", "would_choose_again": ""},
    )
    page = response.content.decode()

    assert response.status_code == 400
    assert "Why start anyway: This field is required." in page
    assert "The login errors come from one bad client release." in page
    assert not Decision.objects.exists()
    assert gated_plan.steps.get(key="a").status in {"pending", "ready"}


def test_override_view__gate_no_longer_holds__409_with_the_reason(client, role_user, make_plan):
    plan = make_plan([{"key": "a"}], key="checkout")
    gate(plan, "a", slo_with_budget(remaining=0.63))
    client.force_login(role_user("tpm"))

    response = client.post("/plans/checkout/steps/a/override-budget", OVERRIDE)
    page = response.content.decode()

    assert response.status_code == 409
    assert "no error budget gate holds it" in page
    assert OVERRIDE["believed"] in page
    assert not Decision.objects.exists()


def test_override_view__viewer__403_and_nothing_recorded(client, role_user, gated_plan):
    client.force_login(role_user("viewer"))

    response = client.post("/plans/checkout/steps/a/override-budget", OVERRIDE)

    assert response.status_code == 403
    assert not Decision.objects.exists()
    assert gated_plan.steps.get(key="a").status in {"pending", "ready"}
