"""The reads behind the leadership pages: chart series from the rollup, and plans at risk."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from leadership.selectors import plans_at_risk, slo_series
from rollouts.models import Deviation, Step, Verification
from signals.models import SLO, Sample
from signals.services import slo_save
from signals.slo_spec import MetricRef, SLISpec, SLOSpec
from signals.slos import slo_refresh, slo_rollup, slo_status
from tests.slo_data import DAY, counters, ratio_spec

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)


def test_slo_series__two_days_of_data__hourly_points_reach_now_and_match_the_status():
    slo, _ = slo_save(spec=ratio_spec(window_seconds=28 * DAY))
    burst = NOW - timedelta(hours=3)
    counters(
        start=NOW - timedelta(days=2),
        end=NOW,
        rps=5,
        error_ratio_at=lambda m: 0.02 if burst <= m < burst + timedelta(hours=1) else 0.0005,
        step=60,
    )
    slo_rollup(slo_id=slo.pk, now=NOW)
    status = slo_status(SLO.objects.get(pk=slo.pk))

    series = slo_series(status)

    assert series.resolution_seconds == 3600
    assert series.ends[-1] == status.at  # the latest minute, between two whole hours
    assert series.budget_remaining[-1] == pytest.approx(status.budget_remaining)
    assert series.budget_remaining[0] > series.budget_remaining[-1]
    worst = min(v for v in series.sli if v is not None)
    assert worst == pytest.approx(0.98, abs=0.002)  # the burst's hour
    assert max(v for v in series.burn_rates["1h"] if v is not None) == pytest.approx(20, rel=0.05)


def _latency_slo(window_seconds: int) -> SLO:
    """login-latency: p99 of login_duration_ms under 300 ms in 99 % of minutes."""
    slo, _ = slo_save(
        spec=SLOSpec(
            name="login-latency",
            service="login",
            indicator=SLISpec(kind="threshold", metric=MetricRef(metric="login_duration_ms")),
            objective=0.99,
            window_seconds=window_seconds,
            budgeting="Timeslices",
            threshold_op="lt",
            threshold=300.0,
        )
    )
    return slo


def test_slo_series__threshold_sli__latency_percentiles_per_minute():
    slo = _latency_slo(DAY)
    rows = [
        Sample(
            name="login_duration_ms",
            labels={},
            label_key="{}",
            timestamp=NOW - timedelta(minutes=m, seconds=s),
            value=100.0 + s + (500 if m == 5 else 0),
        )
        for m in range(1, 20)
        for s in range(0, 60, 6)
    ]
    Sample.objects.bulk_create(rows)
    slo_rollup(slo_id=slo.pk, now=NOW)

    series = slo_series(slo_status(SLO.objects.get(pk=slo.pk)))

    assert series.resolution_seconds == 60
    assert max(series.p99) > 600 and min(p for p in series.p99 if p) < 200
    assert all(a <= b for a, b in zip(series.p99, series.p999, strict=True) if a is not None)


def _gated_plan(make_plan, slo: SLO):
    plan = make_plan([{"key": "a", "status": "done"}, {"key": "b", "deps": ["a"]}], key="gated")
    Step.objects.filter(plan=plan, key="b").update(budget_slo=slo, budget_min_remaining=Decimal(25))
    return plan


def test_plans_at_risk__exhausted_gate_deviation_and_failed_verification__each_reason(make_plan):
    slo, _ = slo_save(spec=ratio_spec())
    counters(start=NOW - timedelta(hours=1), end=NOW, rps=10, error_ratio_at=lambda m: 0.05)
    slo_refresh(slo_id=slo.pk, now=NOW)
    _gated_plan(make_plan, slo)
    other = make_plan([{"key": "x", "status": "failed"}], key="other")
    step = other.steps.get()
    Verification.objects.create(
        step=step,
        status="failed",
        pass_condition="x < 1",
        fail_condition="x > 2",
        on_fail="pause_plan",
        interval_seconds=60,
        count=1,
        failure_limit=0,
        consecutive_error_limit=1,
        inconclusive_limit=1,
    )
    Deviation.objects.create(plan=other, kind="flag_change", summary="flag edited by hand")
    make_plan([{"key": "fine"}], key="fine")

    risks = {r.plan.key: r for r in plans_at_risk()}

    assert set(risks) == {"gated", "other"}
    assert risks["gated"].kinds == ["budget"]
    assert "login-availability" in risks["gated"].reasons[0][1]
    assert risks["other"].kinds == ["deviation", "verification"]


def test_plans_at_risk__gate_with_budget_left__not_at_risk(make_plan):
    slo, _ = slo_save(spec=ratio_spec())
    counters(start=NOW - timedelta(hours=1), end=NOW, rps=10, error_ratio_at=lambda m: 0.0)
    slo_refresh(slo_id=slo.pk, now=NOW)
    _gated_plan(make_plan, slo)
    assert plans_at_risk() == []


def test_plans_at_risk__untested_top_then_falsified__assumption_then_decision_reason(
    make_plan, role_user
):
    from leadership.selectors import plans_needing_decision
    from tests.rollouts.decision_factories import assume, decide, falsify

    tpm = role_user("tpm")
    plan = make_plan([{"key": "a"}], key="idp")
    top = assume(plan, tpm, statement="The new IdP takes peak login traffic")
    assume(plan, tpm, statement="Sessions survive the cut-over", impact=2, uncertainty=2)

    untested = {r.plan.key: r for r in plans_at_risk()}["idp"]
    assert untested.kinds == ["assumption"]
    assert "The new IdP takes peak login traffic" in untested.reasons[0][1]
    assert plans_needing_decision() == []

    falsify(top, tpm)
    falsified = {r.plan.key: r for r in plans_at_risk()}["idp"]
    assert falsified.kinds == ["decision"]
    assert [p.key for p, _ in plans_needing_decision()] == ["idp"]

    decide(plan, tpm, "persist", assumption_id=top.pk)
    assert plans_at_risk() == [] and plans_needing_decision() == []


def test_slo_series__slo_older_than_its_window__last_points_match_the_status():
    slo, _ = slo_save(spec=ratio_spec(window_seconds=2 * DAY))
    now = NOW + timedelta(minutes=7)  # off the 10-minute grid, as "now" usually is
    burst = NOW - timedelta(days=2, hours=12)  # before the window: must not count
    late = NOW - timedelta(minutes=40)
    counters(
        start=NOW - timedelta(days=3),
        end=now,
        rps=5,
        error_ratio_at=lambda m: (
            0.5 if burst <= m < burst + timedelta(hours=1) or m >= late else 0.0005
        ),
        step=60,
    )
    slo_rollup(slo_id=slo.pk, now=now)
    status = slo_status(SLO.objects.get(pk=slo.pk))

    series = slo_series(status)

    assert series.resolution_seconds == 600
    assert series.ends[-1] == status.at and status.at.minute == 7
    assert all(e.timestamp() % 600 == 0 for e in series.ends[:-1])
    assert series.budget_remaining[-1] == pytest.approx(status.budget_remaining)
    assert series.budget_remaining[0] == pytest.approx(1.0, abs=0.01)  # the old burst is out
    assert series.burn_rates["1h"][-1] == pytest.approx(status.burn_rates["1h"])
    assert series.burn_rates["6h"][-1] == pytest.approx(status.burn_rates["6h"])


def test_slo_markers__flag_changed_outside_its_step__marked_beside_the_step_transition(
    make_plan, role_user
):
    from django.utils import timezone

    from leadership.selectors import slo_markers, slo_touching_steps
    from rollouts.services.flags import flag_change
    from rollouts.services.steps import step_transition

    slo, _ = slo_save(spec=ratio_spec())  # service "login"
    plan = make_plan(
        [
            {
                "key": "ramp",
                "flag": "new-login",
                "percentage": 5,
                "service": "login",
                "status": "ready",
            }
        ]
    )
    step_transition(step_id=plan.steps.get().pk, action="start", actor=role_user("tpm"))
    flag_change(
        flag_key="new-login",
        changes={"rollout_percentage": 40},
        actor=role_user("commander"),
        reason="hotfix for the sign-in bug",
        source="board",
    )

    now = timezone.now()
    markers = slo_markers(
        slo, start=now - timedelta(hours=1), end=now, steps=slo_touching_steps(slo)
    )

    assert [(m.kind, m.text) for m in markers] == [
        ("step", "p/ramp running"),
        (
            "flag",
            "new-login v3: on 40% from the flags board, outside its step "
            "(hotfix for the sign-in bug)",
        ),
    ]
    assert markers[1].url == "/flags/new-login/"


def test_slo_series__slo_younger_than_its_burn_windows__lines_from_its_first_minute():
    slo, _ = slo_save(spec=ratio_spec(window_seconds=28 * DAY))
    counters(start=NOW - timedelta(days=2), end=NOW, rps=5, error_ratio_at=lambda m: 0.01, step=60)
    slo_rollup(slo_id=slo.pk, now=NOW)
    status = slo_status(SLO.objects.get(pk=slo.pk))

    series = slo_series(status)

    # Before the first rolled-up minute nothing was counted, as the status counts it: the 3-day
    # line exists from the start and ends on the status's own 3-day burn rate.
    three_days = series.burn_rates["3d"]
    assert three_days and all(rate is not None for rate in three_days)
    assert three_days[-1] == pytest.approx(status.burn_rates["3d"])
    assert series.sli[0] is not None


def _latency_spike(window_seconds: int) -> SLO:
    slo = _latency_slo(window_seconds)
    start = NOW.replace(minute=0, second=0) - timedelta(hours=2)  # 10:00
    spike = (start + timedelta(minutes=62), start + timedelta(minutes=66))  # 11:02-11:06
    Sample.objects.bulk_create(
        Sample(
            name="login_duration_ms",
            labels={},
            label_key="{}",
            timestamp=start + timedelta(seconds=s),
            value=900.0 if spike[0] <= start + timedelta(seconds=s) < spike[1] else 100.0,
        )
        for s in range(0, 2 * 3600, 10)
    )
    slo_rollup(slo_id=slo.pk, now=NOW)
    return SLO.objects.get(pk=slo.pk)


@pytest.mark.parametrize(
    ("window_seconds", "spike_at"),
    [
        (28 * DAY, datetime(2026, 11, 23, 12, 0, tzinfo=UTC)),  # hourly: (11:00, 12:00]
        (7 * DAY, datetime(2026, 11, 23, 11, 10, tzinfo=UTC)),  # 10 minutes: (11:00, 11:10]
    ],
)
def test_slo_series__latency_spike__labelled_with_the_end_of_its_interval_like_the_sli(
    window_seconds, spike_at
):
    series = slo_series(slo_status(_latency_spike(window_seconds)))

    worst = max(range(len(series.p99)), key=lambda i: series.p99[i] or 0)
    assert series.latency_ends[worst] == spike_at
    assert series.p99[worst] == pytest.approx(900.0)
    assert spike_at in series.ends  # the SLI dip is plotted at the same moment
    assert max(series.latency_ends) <= slo_status(SLO.objects.get(name="login-latency")).at


def test_plans_at_risk__open_incident_on_its_service__incident_reason_then_released(
    make_plan, role_user
):
    from incidents.services import incident_declare, incident_plan_release

    make_plan([{"key": "deploy", "kind": "deploy", "service": "accounts-api"}], key="idp")
    commander = role_user("commander")
    incident = incident_declare(
        title="login errors", severity=2, services=["accounts-api"], actor=commander
    )

    [risk] = plans_at_risk()
    assert risk.reasons == [
        (
            "incident",
            f"INC-{incident.pk} SEV2 declared: login errors (no step starts until it resolves "
            "or its commander releases the plan)",
        )
    ]
    incident_plan_release(
        incident_id=incident.pk, plan_key="idp", reason="the deploy is the fix", actor=commander
    )
    [risk] = plans_at_risk()
    assert "released by" in risk.reasons[0][1] and "the deploy is the fix" in risk.reasons[0][1]


def test_at_risk_page__open_action_items__overdue_first_done_ones_left_out(client, role_user):
    from datetime import timedelta

    from django.utils import timezone

    from incidents.models import ActionItem
    from incidents.services import incident_declare

    incident = incident_declare(title="login errors", severity=2, actor=role_user("commander"))
    today = timezone.localdate()
    # Rows written directly: a due date in the past is refused by the service, as it should be.
    ActionItem.objects.create(incident=incident, title="later", owner="web", due_on=today)
    ActionItem.objects.create(
        incident=incident, title="overdue", owner="sre", due_on=today - timedelta(days=2)
    )
    ActionItem.objects.create(incident=incident, title="closed", owner="web", done=True)
    client.force_login(role_user("viewer"))

    html = client.get("/risk/").content.decode()

    section = html[html.index('data-testid="open-action-items"') :].split("</section>", 1)[0]
    assert section.index("overdue") < section.index("later") and "closed" not in section
    assert "(overdue)" in section and f"INC-{incident.pk}" in section
