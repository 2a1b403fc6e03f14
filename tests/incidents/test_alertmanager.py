"""Alertmanager → incidents: webhook deliveries as Alertmanager sends them (payload version 4)."""

import copy
import json
from typing import Any

import pytest

from accounts.services import api_token_create
from incidents.alerts import alertmanager_ingest
from incidents.models import Alert, Incident, TimelineEntry
from incidents.services import incident_status_change
from ledger.models import LedgerEntry
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
URL = "/api/incidents/alertmanager"
GROUP_KEY = '{}/{service="checkout"}:{alertname=~".+"}'

FIRING: dict[str, Any] = {
    "version": "4",
    "groupKey": GROUP_KEY,
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "stepwise",
    "groupLabels": {"service": "checkout"},
    "commonLabels": {"service": "checkout", "env": "prod"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager.example.org:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "CheckoutHighErrorRate",
                "service": "checkout",
                "env": "prod",
                "severity": "critical",
            },
            "annotations": {
                "summary": "Checkout 5xx above 5% in eu-west",
                "description": "5xx ratio is 0.12 over 5m",
            },
            "startsAt": "2024-05-01T12:00:05.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=checkout_errors",
            "fingerprint": "1a30ba71cca2921f",
        },
        {
            "status": "firing",
            "labels": {
                "alertname": "CheckoutLatencyHigh",
                "service": "checkout",
                "env": "prod",
                "severity": "warning",
            },
            "annotations": {"summary": "Checkout p99 above 2s"},
            "startsAt": "2024-05-01T12:01:00+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=checkout_p99",
            "fingerprint": "c6eadffa33fcdf37",
        },
    ],
}


def payload(**changes: Any) -> dict[str, Any]:
    """The two-alert firing delivery; `status="resolved"` resolves every alert in it."""
    body = copy.deepcopy(FIRING)
    if changes.get("status") == "resolved":
        for alert in body["alerts"]:
            alert.update(status="resolved", endsAt="2024-05-01T12:30:00Z")
    body.update(changes)
    return body


def alert(fingerprint: str, name: str, **changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(FIRING["alerts"][0])
    raw["fingerprint"] = fingerprint
    raw["labels"]["alertname"] = name
    raw["annotations"] = {}
    raw.update(changes)
    return raw


def token(*, role: str = "responder", scopes: tuple[str, ...] = ("incidents:write",)) -> str:
    user = UserFactory(role=role, username=f"alertmanager-{role}")
    _, raw = api_token_create(user=user, name="alertmanager", scopes=list(scopes))
    return raw


def post(client, body: Any, raw_token: str | None):
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw_token}"} if raw_token else {}
    return client.post(URL, data, content_type="application/json", **headers)


def timeline(incident: Incident) -> list[tuple[str, str]]:
    return list(incident.timeline.order_by("seq").values_list("kind", "text"))


def stored() -> tuple[int, int, int, int]:
    return (
        Incident.objects.count(),
        Alert.objects.count(),
        TimelineEntry.objects.count(),
        LedgerEntry.objects.count(),
    )


# --- firing ---------------------------------------------------------------------------------------


def test_alertmanager_webhook__two_firing_alerts__one_incident_with_both_alerts_on_its_timeline(
    client,
):
    response = post(client, payload(), token())

    assert response.status_code == 202, response.content
    [incident] = Incident.objects.all()
    assert response.json() == {
        "incidents_opened": [incident.pk],
        "incidents_updated": [],
        "alerts_new": 2,
        "alerts_updated": 0,
        "alerts_resolved": 0,
        "ignored": [],
    }
    assert incident.title == "Checkout 5xx above 5% in eu-west"  # the most severe alert's summary
    assert incident.get_severity_display() == "SEV1"  # severity=critical
    assert incident.source == "alertmanager"
    assert incident.services == ["checkout"]
    assert incident.detected_at.isoformat() == "2024-05-01T10:01:00+00:00"  # the earliest startsAt
    assert "http://alertmanager.example.org:9093" in incident.summary
    alerts = {a.fingerprint: a for a in incident.alerts.all()}
    assert set(alerts) == {"1a30ba71cca2921f", "c6eadffa33fcdf37"}
    assert all(a.status == "firing" and a.ends_at is None for a in alerts.values())
    assert alerts["c6eadffa33fcdf37"].labels["alertname"] == "CheckoutLatencyHigh"
    assert alerts["1a30ba71cca2921f"].starts_at.isoformat() == "2024-05-01T12:00:05.123456+00:00"
    assert timeline(incident) == [
        ("status", "SEV1 declared by alertmanager-responder: Checkout 5xx above 5% in eu-west"),
        (
            "alert",
            "alert firing: CheckoutHighErrorRate (critical): Checkout 5xx above 5% in eu-west",
        ),
        ("alert", "alert firing: CheckoutLatencyHigh (warning): Checkout p99 above 2s"),
    ]
    ledger = LedgerEntry.objects.filter(incident_id=incident.pk).order_by("seq")
    assert [e.action for e in ledger] == ["incident.declared", "incident.alerts_received"]
    assert ledger[1].payload["firing"] == ["1a30ba71cca2921f", "c6eadffa33fcdf37"]
    assert ledger[1].payload["group_key"] == GROUP_KEY


def test_alertmanager_webhook__same_payload_resent__nothing_new(client):
    raw = token()
    post(client, payload(), raw)
    before = stored()

    response = post(client, payload(), raw)

    assert response.status_code == 202
    assert response.json() == {
        "incidents_opened": [],
        "incidents_updated": [],
        "alerts_new": 0,
        "alerts_updated": 2,
        "alerts_resolved": 0,
        "ignored": [],
    }
    assert stored() == before


def test_alertmanager_ingest__resent_alert_with_new_annotations__row_updated_silently(responder):
    alertmanager_ingest(payload=payload(), actor=responder)
    changed = payload()
    changed["alerts"][1]["annotations"]["summary"] = "Checkout p99 above 3s"
    before = stored()

    alertmanager_ingest(payload=changed, actor=responder)

    assert Alert.objects.get(fingerprint="c6eadffa33fcdf37").annotations == {
        "summary": "Checkout p99 above 3s"
    }
    assert stored() == before


def test_alertmanager_ingest__new_alert_while_group_incident_open__joins_it(responder):
    first = alertmanager_ingest(payload=payload(), actor=responder)
    later = payload(alerts=[alert("9f00aa11bb22cc33", "CheckoutPodsCrashLooping")])

    outcome = alertmanager_ingest(payload=later, actor=responder)

    [incident_id] = first["incidents_opened"]
    assert outcome["incidents_opened"] == []
    assert outcome["incidents_updated"] == [incident_id]
    assert outcome["alerts_new"] == 1
    assert Incident.objects.count() == 1
    assert Alert.objects.get(fingerprint="9f00aa11bb22cc33").incident_id == incident_id
    assert timeline(Incident.objects.get())[-1] == (
        "alert",
        "alert firing: CheckoutPodsCrashLooping (critical)",
    )


def test_alertmanager_ingest__more_severe_alert_joins__timeline_says_so(responder):
    warning = alert("0000000000000001", "CheckoutSlow", labels={"alertname": "CheckoutSlow"})
    alertmanager_ingest(payload=payload(alerts=[warning]), actor=responder)
    critical = alert("0000000000000002", "CheckoutDown")

    alertmanager_ingest(payload=payload(alerts=[critical]), actor=responder)

    incident = Incident.objects.get()
    assert incident.get_severity_display() == "SEV3"
    assert timeline(incident)[-1][1] == (
        "alert firing: CheckoutDown (critical) — more severe than this SEV3 incident"
    )


def test_alertmanager_ingest__other_group__opens_its_own_incident(responder):
    alertmanager_ingest(payload=payload(), actor=responder)
    other = payload(
        groupKey='{}/{service="search"}:{alertname=~".+"}',
        alerts=[alert("5e5e5e5e5e5e5e5e", "SearchDown", labels={"alertname": "SearchDown"})],
    )

    outcome = alertmanager_ingest(payload=other, actor=responder)

    assert len(outcome["incidents_opened"]) == 1
    assert Incident.objects.count() == 2
    assert Incident.objects.get(pk=outcome["incidents_opened"][0]).title == "SearchDown"


def test_alertmanager_ingest__group_incident_resolved__new_alert_opens_new_incident(
    responder, commander
):
    [first] = alertmanager_ingest(payload=payload(), actor=responder)["incidents_opened"]
    incident_status_change(incident_id=first, status="resolved", actor=commander)

    outcome = alertmanager_ingest(
        payload=payload(alerts=[alert("abcdefabcdefabcd", "CheckoutDown")]), actor=responder
    )

    [second] = outcome["incidents_opened"]
    assert second != first
    assert Alert.objects.get(fingerprint="abcdefabcdefabcd").incident_id == second


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("critical", "SEV1"),
        ("CRITICAL", "SEV1"),
        ("page", "SEV2"),
        ("high", "SEV2"),
        ("warning", "SEV3"),
        ("info", "SEV4"),
        ("whatever", "SEV3"),
        (None, "SEV3"),
    ],
)
def test_alertmanager_ingest__severity_label__maps_to_incident_severity(
    responder, severity, expected
):
    labels = {"alertname": "X", **({"severity": severity} if severity else {})}
    alertmanager_ingest(payload=payload(alerts=[alert("f1", "X", labels=labels)]), actor=responder)

    assert Incident.objects.get().get_severity_display() == expected


def test_alertmanager_ingest__common_summary_and_job_label__title_and_services(responder):
    alerts = [
        alert("f1", "A", labels={"alertname": "A", "job": "checkout-api"}),
        alert("f2", "B", labels={"alertname": "B", "service": "payments", "job": "x"}),
    ]
    body = payload(alerts=alerts, commonAnnotations={"summary": "Checkout is unhealthy"})

    alertmanager_ingest(payload=body, actor=responder)

    incident = Incident.objects.get()
    assert incident.title == "Checkout is unhealthy"
    assert incident.services == ["checkout-api", "payments"]


# --- resolved -------------------------------------------------------------------------------------


def test_alertmanager_webhook__group_resolved__alerts_resolved_with_timeline_notes(client):
    raw = token()
    post(client, payload(), raw)

    response = post(client, payload(status="resolved"), raw)

    assert response.status_code == 202
    incident = Incident.objects.get()
    assert response.json()["alerts_resolved"] == 2
    assert response.json()["incidents_updated"] == [incident.pk]
    for row in incident.alerts.all():
        assert row.status == "resolved"
        assert row.ends_at.isoformat() == "2024-05-01T12:30:00+00:00"
    assert timeline(incident)[-3:] == [
        (
            "alert",
            "alert resolved: CheckoutHighErrorRate (critical): Checkout 5xx above 5% in eu-west",
        ),
        ("alert", "alert resolved: CheckoutLatencyHigh (warning): Checkout p99 above 2s"),
        (
            "alert",
            f"all alerts resolved; INC-{incident.pk} stays declared until its commander resolves it",
        ),
    ]
    incident.refresh_from_db()
    assert incident.status == "declared"  # the commander decides when it is over


def test_alertmanager_ingest__resolution_resent__no_second_note(responder):
    alertmanager_ingest(payload=payload(), actor=responder)
    alertmanager_ingest(payload=payload(status="resolved"), actor=responder)
    before = stored()

    outcome = alertmanager_ingest(payload=payload(status="resolved"), actor=responder)

    assert outcome["alerts_resolved"] == 0
    assert outcome["alerts_updated"] == 2
    assert stored() == before


def test_alertmanager_ingest__one_of_two_resolved__no_all_resolved_note(responder):
    alertmanager_ingest(payload=payload(), actor=responder)
    body = payload(status="resolved")
    body["alerts"] = body["alerts"][:1]

    alertmanager_ingest(payload=body, actor=responder)

    texts = [text for _, text in timeline(Incident.objects.get())]
    assert texts[-1].startswith("alert resolved: CheckoutHighErrorRate")
    assert not any(t.startswith("all alerts resolved") for t in texts)
    assert Alert.objects.get(fingerprint="c6eadffa33fcdf37").status == "firing"


def test_alertmanager_ingest__unknown_resolved_alert__ignored_and_reported(responder):
    body = payload(status="resolved")
    body["alerts"] = body["alerts"][:1]

    outcome = alertmanager_ingest(payload=body, actor=responder)

    assert outcome["ignored"] == [
        {
            "fingerprint": "1a30ba71cca2921f",
            "alertname": "CheckoutHighErrorRate",
            "reason": "resolved, but never seen firing",
        }
    ]
    assert outcome["incidents_opened"] == []
    assert (Incident.objects.count(), Alert.objects.count()) == (0, 0)


def test_alertmanager_ingest__refires_while_incident_open__firing_again_on_same_incident(
    responder,
):
    alertmanager_ingest(payload=payload(), actor=responder)
    alertmanager_ingest(payload=payload(status="resolved"), actor=responder)
    again = payload()
    again["alerts"] = again["alerts"][:1]
    again["alerts"][0]["startsAt"] = "2024-05-01T13:00:00Z"

    outcome = alertmanager_ingest(payload=again, actor=responder)

    incident = Incident.objects.get()
    assert outcome["incidents_updated"] == [incident.pk]
    row = Alert.objects.get(fingerprint="1a30ba71cca2921f")
    assert (row.status, row.ends_at, row.starts_at.hour) == ("firing", None, 13)
    assert timeline(incident)[-1][1].startswith("alert firing again: CheckoutHighErrorRate")


def test_alertmanager_ingest__refires_after_incident_resolved__new_incident_takes_the_alert(
    responder, commander
):
    [first] = alertmanager_ingest(payload=payload(), actor=responder)["incidents_opened"]
    alertmanager_ingest(payload=payload(status="resolved"), actor=responder)
    incident_status_change(incident_id=first, status="resolved", actor=commander)

    outcome = alertmanager_ingest(payload=payload(), actor=responder)

    [second] = outcome["incidents_opened"]
    assert second != first
    assert set(Alert.objects.values_list("incident_id", "status")) == {(second, "firing")}


# --- refused --------------------------------------------------------------------------------------


def _without_fingerprint() -> dict[str, Any]:
    body = payload()
    del body["alerts"][1]["fingerprint"]
    return body


def _with_alert(**changes: Any) -> dict[str, Any]:
    body = payload()
    body["alerts"][0].update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{not json", "the body is not JSON"),
        ('"a string"', "payload: must be a JSON object"),
        (payload(alerts={"0": FIRING["alerts"][0]}), "alerts: must be a list"),
        (_without_fingerprint(), "alerts[1].fingerprint: required"),
        (_with_alert(startsAt="yesterday"), "alerts[0].startsAt: 'yesterday' is not an RFC 3339"),
        (_with_alert(startsAt="2024-05-01T12:00:00"), "alerts[0].startsAt: '2024-05-01T12:00:00'"),
        (_with_alert(startsAt="0001-01-01T00:00:00Z"), "alerts[0].startsAt: not set"),
        (_with_alert(status="exploding"), "alerts[0].status: must be firing or resolved"),
        (payload(status="exploding"), "status: must be firing or resolved, not 'exploding'"),
        (_with_alert(labels={"severity": "critical"}), "alerts[0].labels.alertname: required"),
        (
            _with_alert(labels={"alertname": "X", "n": 1}),
            "alerts[0].labels: values must be strings",
        ),
        (_with_alert(fingerprint="c6eadffa33fcdf37"), "alerts[1].fingerprint: repeats alerts[0]"),
        (payload(groupKey=None), "groupKey: required"),
        (payload(version="3"), "version: only Alertmanager webhook version 4"),
    ],
)
def test_alertmanager_webhook__malformed_payload__400_names_the_problem_and_nothing_stored(
    client, body, problem
):
    raw = token()
    before = stored()

    response = post(client, body, raw)

    assert response.status_code == 400, response.content
    assert problem in response.json()["error"]
    assert stored() == before


def test_alertmanager_webhook__several_problems__each_listed(client):
    body = payload()
    body["alerts"][0]["startsAt"] = "soon"
    del body["alerts"][1]["labels"]

    response = post(client, body, token())

    assert response.status_code == 400
    assert response.json()["invalid"] == [
        "alerts[0].startsAt: 'soon' is not an RFC 3339 time with a timezone",
        "alerts[1].labels: required",
    ]


def test_alertmanager_webhook__valid_alerts_before_a_bad_one__nothing_stored(client):
    body = payload()
    body["alerts"].append(alert("badbadbadbadbad0", "Bad", startsAt=12))

    response = post(client, body, token())

    assert response.status_code == 400
    assert "alerts[2].startsAt" in response.json()["error"]
    assert (Incident.objects.count(), Alert.objects.count()) == (0, 0)


def test_alertmanager_webhook__no_token__401(client):
    response = post(client, payload(), None)

    assert response.status_code == 401
    assert "authentication required" in response.json()["error"]
    assert Incident.objects.count() == 0


def test_alertmanager_webhook__token_without_incidents_scope__403(client):
    response = post(client, payload(), token(scopes=("metrics:write",)))

    assert response.status_code == 403
    assert "incidents:write" in response.json()["error"]
    assert Incident.objects.count() == 0


def test_alertmanager_webhook__viewer_token__403(client):
    response = post(client, payload(), token(role="viewer"))

    assert response.status_code == 403
    assert "lacks permission incidents.narrate" in response.json()["error"]
    assert Incident.objects.count() == 0


def test_alertmanager_webhook__get__405(client):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token()}")

    assert response.status_code == 405


def test_alertmanager_ingest__alert_storm__ten_entries_then_one_summary_every_alert_kept(
    responder,
):
    storm = [alert(f"{i:016x}", f"Pod{i}", labels={"alertname": f"Pod{i}"}) for i in range(24)]
    storm.append(alert("ffffffffffffffff", "CheckoutDown"))  # critical: listed first

    outcome = alertmanager_ingest(payload=payload(alerts=storm), actor=responder)

    incident = Incident.objects.get()
    assert outcome["alerts_new"] == 25
    assert incident.alerts.count() == 25
    entries = timeline(incident)[1:]
    assert len(entries) == 11
    assert entries[0] == ("alert", "alert firing: CheckoutDown (critical)")
    assert entries[9] == ("alert", "alert firing: Pod8")
    assert entries[10][1] == (
        "and 15 more alerts (15 firing): Pod9, Pod10, Pod11, Pod12, Pod13, Pod14, Pod15, Pod16, "
        "Pod17, Pod18 and 5 more names"
    )
    received = LedgerEntry.objects.get(action="incident.alerts_received")
    assert len(received.payload["firing"]) == 25


def test_alertmanager_ingest__eleven_alerts__each_gets_its_own_entry(responder):
    alerts = [alert(f"{i:016x}", f"Pod{i}") for i in range(11)]

    alertmanager_ingest(payload=payload(alerts=alerts), actor=responder)

    assert [text for _, text in timeline(Incident.objects.get())[1:]] == [
        f"alert firing: Pod{i} (critical)" for i in range(11)
    ]
