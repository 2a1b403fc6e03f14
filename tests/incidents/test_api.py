"""The incidents JSON API: declare, read, narrate, each behind a token with incidents:write."""

import json
from typing import Any

import pytest

from accounts.services import api_token_create
from incidents.models import Change, Incident, TimelineEntry
from incidents.services import change_start, change_verify, hypothesis_state, narration_post
from ledger.models import LedgerEntry
from rollouts.models import Flag, Plan

pytestmark = pytest.mark.django_db
DECLARE = "/api/incidents/"


def token_for(user, *, scopes: tuple[str, ...] = ("incidents:write",)) -> str:
    _, raw = api_token_create(user=user, name="cli", scopes=list(scopes))
    return raw


def post(client, url: str, body: Any, raw_token: str | None):
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw_token}"} if raw_token else {}
    return client.post(url, data, content_type="application/json", **headers)


def get(client, url: str, raw_token: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw_token}"} if raw_token else {}
    return client.get(url, **headers)


@pytest.fixture
def checkout_plan() -> Plan:
    # Test setup, not a state change under test: the plan row is written directly.
    return Plan.objects.create(key="checkout-v2", name="Checkout v2", owner="web", status="active")


# --- declare --------------------------------------------------------------------------------------


def test_incident_declare_api__valid_body__201_with_id_and_console_url(
    client, responder, checkout_plan, changed_flag
):
    body = {
        "title": "Checkout 500s in eu-west",
        "severity": "SEV2",
        "summary": "5xx at 12% since 12:00",
        "services": ["checkout", " payments "],
        "plans": ["checkout-v2"],
        "flags": ["checkout-v2"],
    }

    response = post(client, DECLARE, body, token_for(responder))

    assert response.status_code == 201, response.content
    incident = Incident.objects.get()
    assert response.json() == {"id": incident.pk, "url": f"/incidents/{incident.pk}/"}
    assert (incident.title, incident.get_severity_display(), incident.source) == (
        "Checkout 500s in eu-west",
        "SEV2",
        "api",
    )
    assert incident.summary == "5xx at 12% since 12:00"
    assert incident.services == ["checkout", "payments"]
    assert list(incident.plans.values_list("key", flat=True)) == ["checkout-v2"]
    assert list(incident.flags.values_list("key", flat=True)) == ["checkout-v2"]
    assert incident.declared_by == responder
    assert LedgerEntry.objects.filter(incident_id=incident.pk, action="incident.declared").exists()


@pytest.mark.parametrize(("severity", "expected"), [(1, 1), (4, 4), ("sev3", 3), (" SEV1 ", 1)])
def test_incident_declare_api__severity_number_or_name__accepted(
    client, responder, severity, expected
):
    response = post(client, DECLARE, {"title": "t", "severity": severity}, token_for(responder))

    assert response.status_code == 201, response.content
    assert Incident.objects.get().severity == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{", "the body is not JSON"),
        ("[1, 2]", "the body must be a JSON object"),
        ({"severity": 2}, "title: required"),
        ({"title": "   ", "severity": 2}, "title: required"),
        ({"title": 5, "severity": 2}, "title: must be a string"),
        ({"title": "t"}, "severity: required"),
        (
            {"title": "t", "severity": "SEV9"},
            'severity: must be "SEV1".."SEV4" or 1..4, not \'SEV9\'',
        ),
        ({"title": "t", "severity": 0}, "severity: must be"),
        ({"title": "t", "severity": 2.0}, "severity: must be"),
        ({"title": "t", "severity": True}, "severity: must be"),
        ({"title": "t", "severity": 2, "summary": ["x"]}, "summary: must be a string"),
        ({"title": "t", "severity": 2, "services": "a,b"}, "services: must be a list of strings"),
        ({"title": "t", "severity": 2, "plans": [1]}, "plans: must be a list of strings"),
        ({"title": "t", "severity": 2, "plans": ["nope"]}, "unknown plan or flag: nope"),
        ({"title": "t", "severity": 2, "flags": ["gone"]}, "unknown plan or flag: gone"),
        ({"title": "t", "severty": 2}, "unknown field(s) severty"),
    ],
)
def test_incident_declare_api__bad_field__400_with_reason_and_nothing_stored(
    client, responder, body, problem
):
    response = post(client, DECLARE, body, token_for(responder))

    assert response.status_code == 400, response.content
    assert problem in response.json()["error"]
    assert Incident.objects.count() == 0


def test_incident_declare_api__no_token__401(client):
    response = post(client, DECLARE, {"title": "t", "severity": 2}, None)

    assert response.status_code == 401
    assert Incident.objects.count() == 0


def test_incident_declare_api__token_without_scope__403(client, responder):
    raw = token_for(responder, scopes=("ledger:read",))

    response = post(client, DECLARE, {"title": "t", "severity": 2}, raw)

    assert response.status_code == 403
    assert "incidents:write" in response.json()["error"]
    assert Incident.objects.count() == 0


def test_incident_declare_api__viewer__403(client, viewer):
    response = post(client, DECLARE, {"title": "t", "severity": 2}, token_for(viewer))

    assert response.status_code == 403
    assert response.json()["error"] == "dee lacks permission incidents.narrate"
    assert Incident.objects.count() == 0


def test_incident_declare_api__logged_in_session_without_token__401_nothing_declared(
    client, responder
):
    client.force_login(responder)

    response = post(client, DECLARE, {"title": "from the browser", "severity": 3}, None)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Incident.objects.count() == 0


# --- read -----------------------------------------------------------------------------------------


def test_incident_detail_api__incident_with_hypothesis_and_change__json_with_timeline(
    client, incident, commander, viewer
):
    hypothesis_state(
        incident_id=incident.pk, statement="the v2 ramp broke checkout", actor=commander
    )
    change = change_start(
        incident_id=incident.pk,
        description="drain eu-west",
        expected_effect="5xx below 1%",
        revert_plan="undrain eu-west",
        actor=commander,
    )

    response = get(client, f"/api/incidents/{incident.pk}", token_for(viewer))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == incident.pk
    assert (body["title"], body["severity"], body["status"]) == (
        "Checkout 500s in eu-west",
        "SEV2",
        "declared",
    )
    assert body["commander"] == "ada"
    assert body["hypothesis"] == "the v2 ramp broke checkout"
    assert body["change"] == {
        "id": change.pk,
        "description": "drain eu-west",
        "revert": "undrain eu-west",
    }
    assert body["url"] == f"/incidents/{incident.pk}/"
    assert [(e["seq"], e["kind"], e["author"]) for e in body["timeline"]] == [
        (1, "status", "ada"),
        (2, "role", "ada"),
        (3, "hypothesis", "ada"),
        (4, "change", "ada"),
    ]
    assert body["timeline"][2]["text"] == "Hypothesis: the v2 ramp broke checkout"
    assert all(e["at"] for e in body["timeline"])


def test_incident_detail_api__unknown_id__404_json(client, viewer):
    response = get(client, "/api/incidents/999999", token_for(viewer))

    assert response.status_code == 404
    assert response.json() == {"error": "no incident with id 999999"}


def test_incident_detail_api__no_token__401(client, incident):
    response = get(client, f"/api/incidents/{incident.pk}", None)

    assert response.status_code == 401


# --- narration ------------------------------------------------------------------------------------


def test_narration_api__markup_in_text__stored_and_returned_verbatim(client, incident, responder):
    text = '<script>alert("x")</script> & rollback "now"'

    response = post(
        client, f"/api/incidents/{incident.pk}/narration", {"text": text}, token_for(responder)
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["text"] == text  # JSON needs no HTML escaping; the templates escape on render
    assert (body["seq"], body["kind"], body["author"], body["corrects"]) == (
        3,
        "narration",
        "cy",
        None,
    )
    assert incident.timeline.get(seq=3).text == text
    assert '\\"x\\"' in response.content.decode()  # JSON-escaped quotes, not &quot;


def test_narration_api__correction__points_at_the_corrected_entry(client, incident, responder):
    narration_post(incident_id=incident.pk, text="eu-west is down", actor=responder)

    response = post(
        client,
        f"/api/incidents/{incident.pk}/narration",
        {"text": "eu-central is down, not eu-west", "corrects": 3},
        token_for(responder),
    )

    assert response.status_code == 201, response.content
    entry = incident.timeline.get(seq=4)
    assert entry.corrects.seq == 3
    assert incident.timeline.get(seq=3).text == "eu-west is down"  # the record stays


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("nope", "the body is not JSON"),
        ({}, "text: required"),
        ({"text": "   "}, "text: required"),
        ({"text": 42}, "text: must be a string"),
        ({"text": "x" * 2001}, "narration is limited to 2000 characters"),
        ({"text": "ok", "corrects": "two"}, "corrects: must be the seq"),
        ({"text": "ok", "corrects": 0}, "corrects: must be the seq"),
        ({"text": "ok", "corrects": 99}, "there is no timeline entry #99 to correct"),
        ({"text": "ok", "by": "me"}, "unknown field(s) by"),
    ],
)
def test_narration_api__bad_input__400_with_reason_and_nothing_stored(
    client, incident, responder, body, problem
):
    response = post(client, f"/api/incidents/{incident.pk}/narration", body, token_for(responder))

    assert response.status_code == 400, response.content
    assert problem in response.json()["error"]
    assert TimelineEntry.objects.filter(incident=incident).count() == 2


def test_narration_api__unknown_incident__404_json(client, responder):
    response = post(client, "/api/incidents/424242/narration", {"text": "hi"}, token_for(responder))

    assert response.status_code == 404
    assert response.json() == {"error": "no incident with id 424242"}


def test_narration_api__viewer__403_and_nothing_stored(client, incident, viewer):
    response = post(
        client, f"/api/incidents/{incident.pk}/narration", {"text": "hi"}, token_for(viewer)
    )

    assert response.status_code == 403
    assert "incidents.narrate" in response.json()["error"]
    assert TimelineEntry.objects.filter(incident=incident).count() == 2


def test_narration_api__token_without_scope__403(client, incident, responder):
    raw = token_for(responder, scopes=("metrics:write",))

    response = post(client, f"/api/incidents/{incident.pk}/narration", {"text": "hi"}, raw)

    assert response.status_code == 403
    assert TimelineEntry.objects.filter(incident=incident).count() == 2


# --- re-grade ------------------------------------------------------------------------------------


def test_triage_api__commander_raises_severity__200_with_the_incident_and_ledgered(
    client, incident, commander
):
    response = post(
        client,
        f"/api/incidents/{incident.pk}/triage",
        {"severity": "SEV1", "reason": "card payments failing too"},
        token_for(commander),
    )

    assert response.status_code == 200
    assert response.json()["severity"] == "SEV1" and response.json()["services"] == []
    assert LedgerEntry.objects.filter(action="incident.triaged", incident_id=incident.pk).exists()


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"severity": 1}, 400, "say why the severity changes"),
        ({"services": ["checkout"]}, 400, "severity: required"),
        ({"severity": "SEV9", "reason": "x"}, 400, "severity: must be"),
        ({"severity": 2, "services": "checkout"}, 400, "services: must be a list of strings"),
        ({"severity": 2, "owner": "me"}, 400, "unknown field(s) owner"),
    ],
)
def test_triage_api__bad_body__400_with_the_reason_and_nothing_changed(
    client, incident, commander, body, status, reason
):
    response = post(client, f"/api/incidents/{incident.pk}/triage", body, token_for(commander))

    assert response.status_code == status and reason in response.json()["error"]
    assert Incident.objects.get(pk=incident.pk).severity == 2


def test_triage_api__responder_or_unknown_incident__403_and_404(
    client, incident, responder, commander
):
    refused = post(
        client,
        f"/api/incidents/{incident.pk}/triage",
        {"severity": 1, "reason": "x"},
        token_for(responder),
    )
    missing = post(client, "/api/incidents/999999/triage", {"severity": 1}, token_for(commander))

    assert refused.status_code == 403
    assert missing.status_code == 404


# --- one-click flag revert -----------------------------------------------------------------------


def _revert_url(incident: Incident) -> str:
    return f"/api/incidents/{incident.pk}/flag-revert"


def test_flag_revert_api__open_hypothesis__201_with_the_change_to_verify(
    client, incident, commander, changed_flag
):
    hypothesis_state(incident_id=incident.pk, statement="checkout-v2 breaks carts", actor=commander)

    response = post(
        client,
        _revert_url(incident),
        {"flag": "checkout-v2", "seen_version": 2, "expected_effect": "carts work again"},
        token_for(commander),
    )

    assert response.status_code == 201, response.content
    change = Change.objects.get()
    assert response.json() == {
        "incident": incident.pk,
        "change": change.pk,
        "description": "Revert checkout-v2 v2 (on at 50%) → off",
        "expected_effect": "carts work again",
        "revert": "restore checkout-v2 v2 (on at 50%)",
        "status": "in_progress",
        "flag": "checkout-v2",
        "version": 3,
    }
    assert Flag.objects.get(key="checkout-v2").current.number == 3


def test_flag_revert_api__no_hypothesis_or_a_revert_of_a_revert__409_with_the_consoles_words(
    client, incident, commander, changed_flag
):
    raw = token_for(commander)
    body = {"flag": "checkout-v2", "seen_version": 2}

    no_hypothesis = post(client, _revert_url(incident), body, raw)
    hypothesis_state(incident_id=incident.pk, statement="checkout-v2 breaks carts", actor=commander)
    first = post(client, _revert_url(incident), body, raw)
    change_verify(
        incident_id=incident.pk, change_id=first.json()["change"], better=True, actor=commander
    )
    again = post(client, _revert_url(incident), {"flag": "checkout-v2", "seen_version": 3}, raw)

    assert no_hypothesis.status_code == 409
    assert no_hypothesis.json() == {"error": "state a hypothesis first: a revert tests one too"}
    assert again.status_code == 409 and "a revert never raises exposure" in again.json()["error"]
    assert Flag.objects.get(key="checkout-v2").current.number == 3
    assert Change.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"flag": "checkout-v2"}, "seen_version: required"),
        ({"flag": "checkout-v2", "seen_version": "2"}, "seen_version: required"),
        ({"seen_version": 2}, "flag: required"),
        ({"flag": "checkout-v2", "seen_version": 2, "why": "x"}, "unknown field(s) why"),
    ],
)
def test_flag_revert_api__bad_body__400_and_the_flag_untouched(
    client, incident, commander, changed_flag, body, reason
):
    hypothesis_state(incident_id=incident.pk, statement="checkout-v2 breaks carts", actor=commander)

    response = post(client, _revert_url(incident), body, token_for(commander))

    assert response.status_code == 400 and reason in response.json()["error"]
    assert changed_flag.versions.count() == 2


def test_flag_revert_api__responder_or_unknown_incident__403_and_404(
    client, incident, responder, commander, changed_flag
):
    body = {"flag": "checkout-v2", "seen_version": 2}

    refused = post(client, _revert_url(incident), body, token_for(responder))
    missing = post(client, "/api/incidents/999999/flag-revert", body, token_for(commander))

    assert refused.status_code == 403 and missing.status_code == 404
    assert changed_flag.versions.count() == 2
