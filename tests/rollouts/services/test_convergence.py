import pytest

from accounts.services import api_token_create
from ledger.models import LedgerEntry
from live.models import StreamEvent
from rollouts.models import Target
from rollouts.services.consumers import (
    consumer_caches_clear,
    flag_consumer_fetch_record,
    flag_consumer_register,
)
from rollouts.services.steps import step_transition

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_consumer_memo():
    consumer_caches_clear()
    yield
    consumer_caches_clear()


def _consumer(user, name: str, target: str):
    token, _ = api_token_create(user=user, name=name, scopes=["flags:evaluate"])
    return flag_consumer_register(
        name=name, token=token, target=Target.objects.get(name=target), actor=None
    )


def test_flag_step__every_consumer_in_every_target_fetches__converges_and_done(
    make_plan, role_user
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
    flag_consumer_fetch_record(consumer_id=eu_a.pk, revision=revision)
    assert dict(step.step_targets.values_list("target__name", "state")) == {
        "eu": "pending",
        "us": "pending",
    }
    assert StreamEvent.objects.filter(stream_id=plan.stream, event="flag_consumer.fetched").exists()

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
