import logging

import pytest

from accounts.services import api_token_create
from ledger.models import LedgerEntry
from live.models import StreamEvent
from rollouts.models import Target
from rollouts.services.consumers import (
    flag_consumer_fetch_record,
    flag_consumer_register,
)
from rollouts.services.steps import step_transition

pytestmark = pytest.mark.django_db


def _consumer(user, name: str, target: str):
    token, _ = api_token_create(user=user, name=name, scopes=["flags:evaluate"])
    return flag_consumer_register(
        name=name, token=token, target=Target.objects.get(name=target), actor=None
    )


def test_flag_step__every_consumer_in_every_target_fetches__converges_and_done(
    make_plan, role_user, pushes
):
    plan = make_plan(
        [{"key": "ramp", "flag": "new-login", "percentage": 5, "targets": ["eu", "us"]}]
    )
    reader = role_user("viewer")
    eu_a, eu_b, us = (
        _consumer(reader, "eu-a", "eu"),
        _consumer(reader, "eu-b", "eu"),
        _consumer(reader, "us-1", "us"),
    )
    step = plan.steps.get()
    for action in ("start", "advance", "advance"):
        step_transition(step_id=step.pk, action=action, actor=None)
    revision = step.flag_versions.get().config_revision

    flag_consumer_fetch_record(consumer_id=eu_a.pk, revision=revision - 1)  # an older configuration
    with pushes.commit():
        flag_consumer_fetch_record(consumer_id=eu_a.pk, revision=revision)
    assert dict(step.step_targets.values_list("target__name", "state")) == {
        "eu": "pending",
        "us": "pending",
    }
    assert StreamEvent.objects.filter(
        stream_id=plan.stream, event__contains="flag_consumer.fetched"
    ).exists()
    assert pushes.on(plan.stream)

    flag_consumer_fetch_record(consumer_id=eu_b.pk, revision=revision)
    assert dict(step.step_targets.values_list("target__name", "state")) == {
        "eu": "converged",
        "us": "pending",
    }
    step.refresh_from_db()
    assert step.status == "converging"

    flag_consumer_fetch_record(consumer_id=us.pk, revision=revision)
    step.refresh_from_db()
    assert step.status == "done"
    confirmations = LedgerEntry.objects.filter(action="step.target_converged", step_id=step.pk)
    assert sorted(e.payload["target"] for e in confirmations) == ["eu", "us"]
    assert all(
        e.payload["source"] == "flag consumers" and e.payload["revision"] == revision
        for e in confirmations
    )


def test_flag_step__consumer_holds_only_an_older_revision__target_stays_pending(
    make_plan, role_user
):
    plan = make_plan([{"key": "ramp", "flag": "new-login", "percentage": 25, "targets": ["eu"]}])
    eu = _consumer(role_user("viewer"), "eu-a", "eu")
    step = plan.steps.get()
    flag_consumer_fetch_record(consumer_id=eu.pk, revision=1)
    for action in ("start", "advance", "advance"):
        step_transition(step_id=step.pk, action=action, actor=None)
    flag_consumer_fetch_record(consumer_id=eu.pk, revision=1)
    assert step.step_targets.get().state == "pending"


def test_flag_consumers_converged__step_finished_meanwhile__info_not_error_and_others_confirmed(
    make_plan, role_user, monkeypatch, caplog
):
    from rollouts.services import convergence
    from rollouts.services.steps import step_target_confirm

    plan = make_plan(
        [
            {"key": "ramp", "flag": "new-login", "percentage": 5, "targets": ["eu"]},
            {"key": "cache", "flag": "new-cache", "percentage": 5, "targets": ["eu"]},
        ]
    )
    eu, tpm = _consumer(role_user("viewer"), "eu-a", "eu"), role_user("tpm")
    ramp, cache = plan.steps.get(key="ramp"), plan.steps.get(key="cache")
    for step in (ramp, cache):
        for action in ("start", "advance", "advance"):
            step_transition(step_id=step.pk, action=action, actor=None)
    revision = max(s.flag_versions.get().config_revision for s in (ramp, cache))

    # The race: after the consumer path read `ramp`'s target as pending, and before it locks the
    # plan, a person confirms eu on the step page, which finishes the step.
    real_revision = convergence.flag_step_revision
    raced = []

    def revision_then_person_confirms(step):
        if step.pk == ramp.pk and not raced:
            raced.append(
                step_target_confirm(step_id=ramp.pk, target="eu", actor=tpm, source="step page")
            )
        return real_revision(step)

    monkeypatch.setattr(convergence, "flag_step_revision", revision_then_person_confirms)

    with caplog.at_level(logging.INFO):
        assert flag_consumer_fetch_record(consumer_id=eu.pk, revision=revision)

    assert raced and [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == []
    [note] = [r for r in caplog.records if r.name == "rollouts.services.convergence"]
    assert note.levelname == "INFO" and note.exc_info is None
    assert "ramp in eu not confirmed: ramp is done" in note.getMessage()
    ramp.refresh_from_db()
    cache.refresh_from_db()
    assert (ramp.status, cache.status) == ("done", "done")
    assert LedgerEntry.objects.filter(action="step.target_converged", step_id=ramp.pk).count() == 1


def test_flag_consumers_converged__unexpected_failure__logged_as_error_with_traceback(
    make_plan, role_user, monkeypatch, caplog
):
    from rollouts.services import convergence

    plan = make_plan([{"key": "ramp", "flag": "new-login", "percentage": 5, "targets": ["eu"]}])
    eu = _consumer(role_user("viewer"), "eu-a", "eu")
    step = plan.steps.get()
    for action in ("start", "advance", "advance"):
        step_transition(step_id=step.pk, action=action, actor=None)

    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(convergence, "step_target_confirm", broken)

    # Serving still answers; the failure is an ERROR a person should look at.
    assert flag_consumer_fetch_record(
        consumer_id=eu.pk, revision=step.flag_versions.get().config_revision
    )
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.name == "rollouts.services.consumers" and error.exc_info[0] is RuntimeError
    assert step.step_targets.get().state == "pending"
