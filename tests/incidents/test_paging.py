"""A step that failed verification with on_fail "fail_and_page" reaches the incident console.

The evaluation sends `step_paged` from on_commit; these tests send it the same way."""

import logging
from unittest import mock

import pytest
from django.db import transaction

from incidents.models import Incident
from incidents.services import incident_declare, incident_status_change
from ledger.models import LedgerEntry
from rollouts.models import Plan, Step
from rollouts.services.evaluation import step_paged

pytestmark = pytest.mark.django_db
REASON = "#3: fail condition held: error_rate > 0.02 (error_rate = 0.1)"


@pytest.fixture
def step() -> Step:
    # Test setup, not a state change under test: plan and step rows are written directly.
    plan = Plan.objects.create(key="checkout-v2", name="Checkout v2", owner="web", status="active")
    return Step.objects.create(
        plan=plan,
        key="ramp-50",
        title="ramp to 50%",
        owner_team="web",
        kind="deploy",
        service="checkout",
        position=1,
        status="failed",
        on_fail="fail_and_page",
    )


def page_after_commit(django_capture_on_commit_callbacks, step: Step) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        transaction.on_commit(lambda: step_paged.send(sender=Step, step_id=step.pk, reason=REASON))


def test_step_paged__no_open_incident__sev2_declared_and_linked_to_step_and_plan(
    step, django_capture_on_commit_callbacks
):
    page_after_commit(django_capture_on_commit_callbacks, step)

    incident = Incident.objects.get()
    assert incident.title == "checkout-v2/ramp-50 failed verification"
    assert incident.get_severity_display() == "SEV2"
    assert incident.source == "verification"
    assert incident.declared_by is None
    assert incident.summary == REASON
    assert incident.services == ["checkout"]
    assert list(incident.steps.all()) == [step]
    assert list(incident.plans.all()) == [step.plan]
    assert list(incident.timeline.order_by("seq").values_list("kind", "author_label", "text")) == [
        (
            "status",
            "stepwise",
            "SEV2 declared by stepwise: checkout-v2/ramp-50 failed verification",
        ),
        ("system", "stepwise", f"checkout-v2/ramp-50 failed verification: {REASON}"),
    ]
    declared = LedgerEntry.objects.get(incident_id=incident.pk, action="incident.declared")
    assert (declared.actor_id, declared.actor_label) == (None, "stepwise")


def test_step_paged__open_incident_linked_to_plan__note_posted_there_instead(
    step, commander, django_capture_on_commit_callbacks
):
    incident = incident_declare(
        title="Checkout errors", severity=1, actor=commander, plan_keys=["checkout-v2"]
    )

    page_after_commit(django_capture_on_commit_callbacks, step)

    assert Incident.objects.count() == 1
    last = incident.timeline.order_by("-seq").first()
    assert (last.kind, last.author_label) == ("system", "stepwise")
    assert last.text == f"checkout-v2/ramp-50 failed verification: {REASON}"
    assert last.data == {"step": step.pk, "plan": "checkout-v2", "reason": REASON}
    assert list(incident.steps.all()) == [step]  # now linked to the step that failed
    assert LedgerEntry.objects.filter(
        incident_id=incident.pk, step_id=step.pk, action="incident.step_failed"
    ).exists()


def test_step_paged__open_incident_linked_to_step__note_posted_there(
    step, commander, django_capture_on_commit_callbacks
):
    incident_declare(title="Unrelated", severity=3, actor=commander)
    linked = incident_declare(title="Ramp trouble", severity=2, actor=commander, step_ids=[step.pk])

    page_after_commit(django_capture_on_commit_callbacks, step)

    assert Incident.objects.count() == 2
    assert "failed verification" in linked.timeline.order_by("-seq").first().text


def test_step_paged__linked_incident_resolved__new_incident_declared(
    step, commander, django_capture_on_commit_callbacks
):
    old = incident_declare(title="Earlier", severity=2, actor=commander, plan_keys=["checkout-v2"])
    incident_status_change(incident_id=old.pk, status="resolved", actor=commander)

    page_after_commit(django_capture_on_commit_callbacks, step)

    new = Incident.objects.exclude(pk=old.pk).get()
    assert new.source == "verification"
    assert not old.timeline.filter(text__contains="failed verification").exists()


def test_step_paged__not_committed__nothing_declared(step, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        transaction.on_commit(lambda: step_paged.send(sender=Step, step_id=step.pk, reason=REASON))

    assert Incident.objects.count() == 0


def test_step_paged__service_fails__logged_and_sender_unharmed(step, caplog):
    with (
        mock.patch("incidents.receivers.step_failure_page", side_effect=RuntimeError("db gone")),
        caplog.at_level(logging.ERROR, logger="incidents.receivers"),
    ):
        step_paged.send(sender=Step, step_id=step.pk, reason=REASON)  # does not raise

    assert "could not page an incident for a failed step" in caplog.text
    assert "db gone" in caplog.text
    assert Incident.objects.count() == 0


def test_step_paged__step_deleted__nothing_declared_and_no_error(step):
    step_id = step.pk
    step.plan.delete()

    step_paged.send(sender=Step, step_id=step_id, reason=REASON)

    assert Incident.objects.count() == 0
