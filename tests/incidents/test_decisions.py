"""Decisions made in an incident: on the console, the timeline, the decision log and the postmortem."""

import pytest
from django.urls import reverse

from core.errors import InvalidInput
from incidents.models import TimelineEntry
from incidents.postmortem import postmortem_build, postmortem_markdown
from incidents.services import incident_decision_record
from ledger.models import LedgerEntry
from rollouts.models import Decision

pytestmark = pytest.mark.django_db
CALL = {
    "label": "fail over to eu-west",
    "believed": "us-east recovers within minutes",
    "observed": "error rate still 30% after 20 minutes",
    "why": "eu-west has the headroom and the flag revert did not help",
}


def test_incident_decision_record__commander__logged_timeline_and_ledger(incident, commander):
    decision = incident_decision_record(incident_id=incident.pk, actor=commander, **CALL)

    assert decision.incident_id == incident.pk and decision.plan_id is None
    assert decision.decided == Decision.Decided.OTHER and decision.label == CALL["label"]
    entry = incident.timeline.get(kind=TimelineEntry.Kind.DECISION)
    assert entry.text.startswith(f"Decision #{decision.pk}: fail over to eu-west")
    ledgered = LedgerEntry.objects.get(action="decision.recorded")
    assert ledgered.payload["incident"] == incident.pk and ledgered.payload["why"] == CALL["why"]


def test_incident_decision_record__no_reasoning__refused_and_nothing_stored(incident, commander):
    with pytest.raises(InvalidInput) as refused:
        incident_decision_record(incident_id=incident.pk, actor=commander, **(CALL | {"why": " "}))
    assert "say why you decided this" in str(refused.value)
    assert not Decision.objects.exists()
    assert not incident.timeline.filter(kind=TimelineEntry.Kind.DECISION).exists()


def test_incident_decision__console_post__shown_in_console_and_postmortem(
    client, incident, commander
):
    client.force_login(commander)
    response = client.post(reverse("incident-decision", args=[incident.pk]), CALL)
    assert response.status_code == 302

    console = client.get(reverse("incident-console", args=[incident.pk])).content.decode()
    assert 'data-testid="incident-decision"' in console and "fail over to eu-west" in console
    markdown = postmortem_markdown(postmortem_build(incident))
    assert "## Decisions" in markdown and "**fail over to eu-west**" in markdown


def test_incident_decision__responder__403(client, incident, responder):
    client.force_login(responder)
    response = client.post(reverse("incident-decision", args=[incident.pk]), CALL)
    assert response.status_code == 403
    assert not Decision.objects.exists()
