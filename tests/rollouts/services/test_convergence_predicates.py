from datetime import timedelta

import pytest
from django.utils import timezone

from ledger.models import LedgerEntry
from rollouts.models import Plan, Step, StepTarget
from rollouts.services.evaluation import convergence_check, convergence_due_steps
from rollouts.services.steps import plan_transition, step_transition
from signals.services import samples_ingest

pytestmark = pytest.mark.django_db

CONVERGENCE = {
    "measurement": {
        "metric": "config_version",
        "aggregation": "max",
        "matchers": {"region": "{target}"},
        "window": "5m",
    },
    "condition": "value >= 42",
}


def _config_version(region: str, value: float, *, seconds_ago: float = 5) -> None:
    at = (timezone.now() - timedelta(seconds=seconds_ago)).isoformat()
    samples_ingest(
        payload={
            "samples": [
                {
                    "name": "config_version",
                    "labels": {"region": region},
                    "timestamp": at,
                    "value": value,
                }
            ]
        }
    )


def _converging(make_plan) -> tuple[Plan, Step]:
    """A manual step with a convergence predicate, moved to converging by a person, and a step
    that depends on it."""
    plan = make_plan(
        [
            {"key": "config", "targets": ["eu-west", "us-east"]},
            {"key": "after", "deps": ["config"]},
        ]
    )
    step = plan.steps.get(key="config")
    Step.objects.filter(pk=step.pk).update(convergence=CONVERGENCE)
    for action in ("start", "advance", "advance"):
        step_transition(step_id=step.pk, action=action, actor=None, reason="config push")
    return plan, step


def _targets(step: Step) -> dict[str, StepTarget]:
    return {row.target.name: row for row in step.step_targets.select_related("target")}


def _statuses(plan: Plan) -> dict[str, str]:
    return dict(plan.steps.values_list("key", "status"))


def test_convergence_check__one_region_reached__only_that_target_confirmed_with_evidence(
    make_plan,
):
    plan, step = _converging(make_plan)
    _config_version("eu-west", 42)
    _config_version("us-east", 41)
    assert convergence_due_steps() == [step.pk]

    assert convergence_check(step_id=step.pk) == ["eu-west"]

    targets = _targets(step)
    assert targets["eu-west"].state == "converged"
    assert targets["eu-west"].confirmed_by == "convergence predicate"
    assert targets["us-east"].state == "pending"
    assert targets["us-east"].last_check["value"] == 41
    assert targets["us-east"].last_check["holds"] is False
    assert targets["us-east"].last_check["query"] == 'max(config_version{region="us-east"}[5m])'
    [converged] = LedgerEntry.objects.filter(step_id=step.pk, action="step.target_converged")
    assert converged.actor_label == "convergence predicate"
    assert (converged.payload["target"], converged.payload["value"]) == ("eu-west", 42)
    assert converged.payload["condition"] == "value >= 42"
    assert _statuses(plan) == {"config": "converging", "after": "pending"}
    assert convergence_due_steps() == [step.pk]


def test_convergence_check__last_region_reaches_value__step_done_and_dependant_ready(make_plan):
    plan, step = _converging(make_plan)
    _config_version("eu-west", 42)
    _config_version("us-east", 41, seconds_ago=20)
    convergence_check(step_id=step.pk)

    _config_version("us-east", 42)
    assert convergence_check(step_id=step.pk) == ["us-east"]

    assert _statuses(plan) == {"config": "done", "after": "ready"}
    assert _targets(step)["us-east"].last_check["value"] == 42
    assert convergence_due_steps() == []
    assert convergence_check(step_id=step.pk) == []  # a done step is not checked again


def test_convergence_check__no_data_in_a_region__pending_with_the_reason(make_plan):
    _, step = _converging(make_plan)
    _config_version("eu-west", 42)

    assert convergence_check(step_id=step.pk) == ["eu-west"]

    check = _targets(step)["us-east"].last_check
    assert check["value"] is None and check["holds"] is False
    assert check["problem"].startswith("no data")


def test_convergence_due_steps__paused_plan_or_step_without_predicate__not_listed(make_plan):
    plan, step = _converging(make_plan)
    other = make_plan([{"key": "plain", "targets": ["eu-west"]}], key="other")
    plain = other.steps.get()
    for action in ("start", "advance", "advance"):
        step_transition(step_id=plain.pk, action=action, actor=None, reason="push")
    assert convergence_due_steps() == [step.pk]

    plan_transition(plan_id=plan.pk, action="pause", actor=None, reason="incident")

    assert convergence_due_steps() == []
