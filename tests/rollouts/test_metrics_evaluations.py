"""/metrics reads evaluations and reverts from the database: a worker's evaluation shows up in
any web process's scrape."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from rollouts.models import Evaluation
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.steps import step_transition
from signals.services import samples_ingest
from stepwise.metrics import EvaluationTally
from tests.metrics_scrape import fresh_evaluation_tally, scrape, value  # noqa: F401

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


def test_evaluation_tally__rows_settled_a_minute__summed_once_kept_when_deleted(make_plan):
    plan = make_plan([{"key": "ramp"}])
    step = plan.steps.get()
    step_transition(step_id=step.pk, action="start", actor=None, reason="begins")
    verification = step.verifications.get()

    def evaluation(sequence: int, outcome: str, seconds_ago: float) -> Evaluation:
        return Evaluation.objects.create(
            verification=verification,
            sequence=sequence,
            trigger="interval",
            outcome=outcome,
            reason="",
            evaluated_at=timezone.now() - timedelta(seconds=seconds_ago),
            duration_seconds=0.02,
        )

    settled = [evaluation(1, "pass", 120), evaluation(2, "pass", 90)]
    recent = evaluation(3, "fail", 1)
    tally = EvaluationTally()

    first = tally.totals()
    again = tally.totals()
    Evaluation.objects.filter(pk__in=[e.pk for e in [*settled, recent]]).delete()
    after_delete = tally.totals()

    assert (first["pass"]["total"], first["fail"]["total"]) == (2, 1)
    assert first["pass"]["d_1"] == 2  # both within the 0.025 s bucket
    assert again == first
    # Settled rows were counted once and stay counted, as a counter does; the recent one is
    # read afresh at each scrape until it settles.
    assert (after_delete["pass"]["total"], after_delete["fail"]["total"]) == (2, 0)
