"""Re-grading an incident: severity (with its reason and narration cadence) and services, by a
commander, on the timeline, in the ledger and pushed to the console."""

import pytest

from core.errors import InvalidInput, TransitionRefused
from incidents.models import Incident, TimelineEntry
from incidents.services import incident_status_change, incident_triage
from ledger.models import LedgerEntry

pytestmark = pytest.mark.django_db


def _snapshot(incident: Incident) -> tuple:
    incident.refresh_from_db()
    return (
        incident.severity,
        incident.services,
        incident.narration_minutes,
        incident.timeline.count(),
        LedgerEntry.objects.count(),
    )


def test_incident_triage__sev2_raised_to_sev1__cadence_timeline_ledger_and_push(
    incident, commander, pushes
):
    with pushes.commit():
        incident_triage(
            incident_id=incident.pk,
            severity=1,
            services=["checkout", " payments ", "checkout"],
            actor=commander,
            reason="EU card payments failing too",
        )

    incident.refresh_from_db()
    assert (incident.severity, incident.services) == (1, ["checkout", "payments"])
    assert incident.narration_minutes == Incident.NARRATION_MINUTES[1] == 10
    entry = incident.timeline.order_by("-seq").first()
    assert entry.kind == TimelineEntry.Kind.STATUS
    assert entry.text == (
        "severity SEV2 → SEV1; services none → checkout, payments: EU card payments failing too"
    )
    ledger = LedgerEntry.objects.get(action="incident.triaged")
    assert ledger.payload["from"] == {"severity": "SEV2", "services": []}
    assert ledger.payload["to"] == {"severity": "SEV1", "services": ["checkout", "payments"]}
    assert ledger.incident_id == incident.pk
    [(_, html)] = pushes.on(incident.stream)
    assert "SEV1" in html


def test_incident_triage__services_only__no_reason_needed(incident, commander):
    incident_triage(incident_id=incident.pk, severity=2, services=["checkout"], actor=commander)

    incident.refresh_from_db()
    assert incident.services == ["checkout"] and incident.severity == 2
    assert incident.timeline.order_by("-seq").first().text == "services none → checkout"


@pytest.mark.parametrize(
    ("severity", "services", "reason", "message"),
    [
        (1, [], "", "say why the severity changes"),
        (2, [], "", "INC-{pk} is already SEV2 with those services: nothing to change"),
        (7, [], "worse", "severity must be SEV1, SEV2, SEV3 or SEV4"),
        (True, [], "worse", "severity must be SEV1, SEV2, SEV3 or SEV4"),
    ],
)
def test_incident_triage__bad_input__refused_and_nothing_changed(
    incident, commander, severity, services, reason, message
):
    before = _snapshot(incident)

    with pytest.raises(InvalidInput) as info:
        incident_triage(
            incident_id=incident.pk,
            severity=severity,
            services=services,
            actor=commander,
            reason=reason,
        )

    assert str(info.value) == message.format(pk=incident.pk)
    assert _snapshot(incident) == before


def test_incident_triage__responder__refused(incident, responder):
    before = _snapshot(incident)
    with pytest.raises(TransitionRefused, match="may not change the incident's severity"):
        incident_triage(
            incident_id=incident.pk, severity=1, services=[], actor=responder, reason="worse"
        )
    assert _snapshot(incident) == before


def test_incident_triage__resolved__still_regraded_for_the_postmortem(incident, commander):
    incident_status_change(incident_id=incident.pk, status="resolved", actor=commander)

    incident_triage(
        incident_id=incident.pk,
        severity=3,
        services=[],
        actor=commander,
        reason="only internal users were affected",
    )

    assert Incident.objects.get(pk=incident.pk).severity == 3


def test_triage_view__commander_htmx__updated(client, incident, commander):
    client.force_login(commander)

    response = client.post(
        f"/incidents/{incident.pk}/triage",
        {"severity": "1", "services": "checkout, payments", "reason": "spreading"},
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 200
    assert Incident.objects.get(pk=incident.pk).severity == 1


def test_triage_view__bad_severity_or_missing_reason__400_with_the_reason(
    client, incident, commander
):
    client.force_login(commander)
    url = f"/incidents/{incident.pk}/triage"

    bad = client.post(url, {"severity": "9", "services": ""}, HTTP_HX_REQUEST="true")
    unexplained = client.post(url, {"severity": "1", "services": ""}, HTTP_HX_REQUEST="true")

    assert bad.status_code == 400 and "severity" in bad.content.decode()
    assert unexplained.status_code == 400
    assert "say why the severity changes" in unexplained.content.decode()
    assert Incident.objects.get(pk=incident.pk).severity == 2


def test_triage_view__viewer__403(client, incident, viewer):
    client.force_login(viewer)
    response = client.post(f"/incidents/{incident.pk}/triage", {"severity": "1"})
    assert response.status_code == 403
    assert Incident.objects.get(pk=incident.pk).severity == 2


def test_console__commander__triage_form_with_the_current_grade(client, incident, commander):
    client.force_login(commander)
    body = client.get(f"/incidents/{incident.pk}/").content.decode()
    assert 'data-testid="triage"' in body
    assert '<option value="2" selected>SEV2</option>' in body
