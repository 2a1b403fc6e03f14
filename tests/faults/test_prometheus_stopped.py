"""A real Prometheus (its own process and port) stopped in the middle of a verification: the
evaluations after it are errors, never passes; the retries stay within the source's per-minute
budget; after the error limit the verification ends in error and the plan pauses (fail safe)."""

from unittest import mock

import pytest
from django.conf import settings

from rollouts.models import Evaluation, Plan, Verification
from rollouts.tasks import verification_evaluate_task
from signals import measurements
from tests.prometheus_server import PrometheusServer, prometheus_fixture  # noqa: F401
from tests.rollouts.conftest import make_plan  # noqa: F401  (prometheus_step's fixture)
from tests.rollouts.test_verification_prometheus import _scraped, prometheus_step  # noqa: F401

pytestmark = [pytest.mark.prometheus, pytest.mark.django_db]


def test_prometheus_stopped_mid_verification__no_pass__retries_within_budget__plan_paused(
    prometheus_step,  # noqa: F811  (the fixture imported above)
    prometheus: PrometheusServer,
    suite_report,
):
    _scraped(prometheus, canary=0.95, baseline=0.94)
    verification = prometheus_step.verifications.get()
    verification_evaluate_task.apply(args=(verification.pk, "interval"))
    assert verification.evaluations.get().outcome == Evaluation.Outcome.PASS

    prometheus.process.terminate()
    prometheus.process.wait(timeout=10)
    spent = []
    real_allowed = measurements.source_retry_allowed

    def counted(source: str) -> bool:
        allowed = real_allowed(source)
        spent.append(allowed)
        return allowed

    with mock.patch("rollouts.tasks.source_retry_allowed", side_effect=counted):
        for _ in range(verification.consecutive_error_limit + 1):
            verification_evaluate_task.apply(
                args=(verification.pk, "interval")
            )  # eager: retries inline

    verification.refresh_from_db()
    outcomes = list(verification.evaluations.order_by("pk").values_list("outcome", flat=True))
    suite_report(
        f"Prometheus stopped mid-verification: evaluations after it {outcomes[1:]}; retries granted {sum(spent)} of "
        f"{len(spent)} asked (budget {settings.SOURCE_RETRY_BUDGET_PER_MINUTE} a minute)"
    )
    assert outcomes[0] == "pass" and set(outcomes[1:]) == {"error"}
    assert sum(spent) <= settings.SOURCE_RETRY_BUDGET_PER_MINUTE
    assert verification.status == Verification.Status.ERROR
    assert Plan.objects.get(pk=prometheus_step.plan_id).status == Plan.Status.PAUSED
