"""SLOs with a real error budget for the budget gate tests: counters in the built-in store, rolled
up, so `slo_status` computes the budget the way it does in production."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rollouts.models import Plan, Step
from signals.models import SLO
from signals.services import slo_save
from signals.slo_spec import MetricRef, SLISpec, SLOSpec
from signals.slos import slo_rollup
from tests.slo_data import counters

NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
OBJECTIVE = 0.999


def slo_with_budget(name: str = "login-availability", *, remaining: float | None) -> SLO:
    """An SLO (objective 99.9%) with `remaining` of its error budget left as a fraction
    (-0.125 is overspent by an eighth), or without data when `remaining` is None."""
    slo, _ = slo_save(
        spec=SLOSpec(
            name=name,
            service="login",
            indicator=SLISpec(
                kind="ratio",
                bad=MetricRef(metric=f"{name}_failures_total"),
                total=MetricRef(metric=f"{name}_requests_total"),
                counter=True,
            ),
            objective=OBJECTIVE,
            window_seconds=30 * 86400,
        )
    )
    if remaining is None:
        return slo
    counters(
        start=NOW - timedelta(minutes=30),
        end=NOW,
        rps=100,
        error_ratio_at=lambda moment: (1 - remaining) * (1 - OBJECTIVE),
        requests_metric=f"{name}_requests_total",
        failures_metric=f"{name}_failures_total",
    )
    slo_rollup(slo_id=slo.pk, now=NOW)
    slo.refresh_from_db()
    return slo


def gate(plan: Plan, key: str, slo: SLO, min_remaining: str | int = 25) -> Step:
    """Put an error budget gate on a step (test setup, written directly)."""
    Step.objects.filter(plan=plan, key=key).update(
        budget_slo=slo, budget_min_remaining=Decimal(str(min_remaining))
    )
    return plan.steps.get(key=key)
