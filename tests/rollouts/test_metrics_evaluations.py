"""/metrics reads evaluations and reverts from the database: a worker's evaluation shows up in
any web process's scrape."""

import time

import pytest

from rollouts.services.evaluation import verification_evaluate
from rollouts.services.steps import step_transition
from signals.services import samples_ingest
from tests.test_metrics import scrape, value

pytestmark = pytest.mark.django_db


def test_metrics__breaching_evaluation_reverts_flag__counted_timed_and_revert_observed(
    make_plan, client
):
    plan = make_plan([{"key": "ramp", "flag": "checkout", "percentage": 25}])
    step = plan.steps.get()
    step.on_fail = "restore_previous_flag"
    step.save(update_fields=["on_fail"])
    step_transition(step_id=step.pk, action="start", actor=None, reason="ramp begins")
    at = time.time() - 5
    samples_ingest(
        payload={
            "samples": [
                {"name": "http_errors", "labels": {}, "timestamp": at, "value": 100},
                {"name": "http_requests", "labels": {}, "timestamp": at, "value": 1000},
            ]
        }
    )
    before = scrape(client)

    verification_evaluate(verification_id=step.verifications.get().pk, trigger="interval")

    after = scrape(client)
    for name, labels in (
        ("stepwise_verification_evaluations_total", {"outcome": "fail"}),
        ("stepwise_verification_evaluation_duration_seconds_count", {"outcome": "fail"}),
        (
            "stepwise_verification_evaluation_duration_seconds_bucket",
            {"outcome": "fail", "le": "+Inf"},
        ),
        ("stepwise_detect_to_revert_seconds_count", {}),
        ("stepwise_detect_to_revert_seconds_bucket", {"le": "60.0"}),
    ):
        assert value(after, name, **labels) == value(before, name, **labels) + 1, name
    assert value(after, "stepwise_verification_evaluations_total", outcome="pass") == 0
    assert value(after, "stepwise_detect_to_revert_seconds_sum") > 0
