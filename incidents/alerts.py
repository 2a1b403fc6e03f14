"""How the platform's alarms reach incidents: Alertmanager webhooks, and steps that failed their
verification with on_fail "fail_and_page".

Alertmanager re-sends a group until it resolves (every repeat_interval, and again after a retry),
so intake is idempotent by fingerprint: a fingerprint seen before updates its row and never opens
a second incident or writes a second timeline entry.

An Alertmanager group (its groupKey) maps to at most one open incident. The model has no place
for the groupKey, so it is kept in the `data` of the timeline entries of the alerts that opened
or joined the incident (`{"group_key": ...}`): "the open incident of this group" is the open
incident with an alert entry carrying that key. The Alert row's labels and annotations stay
exactly what Alertmanager sent.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.errors import InvalidInput, TransitionRefused
from incidents.models import Alert, Incident, TimelineEntry
from incidents.services import incident_declare, incident_system_note
from ledger.services import ledger_append
from rollouts.models import Step

logger = logging.getLogger(__name__)

# Alertmanager's own max_alerts defaults to "all"; a storm bigger than this is refused whole so
# the sender retries, rather than half-stored. Set max_alerts in the receiver below this.
MAX_ALERTS = 500
MAX_PROBLEMS_IN_MESSAGE = 5
# Alert entries one delivery writes to one incident's timeline; a bigger storm gets one more
# entry that counts and names the rest (every alert is still in the incident's alerts list).
MAX_ALERT_ENTRIES = 10
MAX_NAMES_LISTED = 10
SEVERITIES = {"critical": 1, "page": 2, "high": 2, "warning": 3, "info": 4}
DEFAULT_SEVERITY = 3
# Any 64-bit constant: the PostgreSQL advisory lock that serializes alert intake across processes,
# so two deliveries of one group cannot both open an incident.
_INTAKE_LOCK_KEY = 0x5354_4550_414C_5254
_PAYLOAD_STATUSES = ("firing", "resolved")


class AlertPayloadInvalid(InvalidInput):
    """A webhook payload that cannot be stored; `problems` names each field path that is wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:MAX_PROBLEMS_IN_MESSAGE])
        more = len(problems) - MAX_PROBLEMS_IN_MESSAGE
        super().__init__(shown + (f"; and {more} more" if more > 0 else ""))


@dataclass(frozen=True)
class _Alert:
    path: str
    fingerprint: str
    status: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str

    @property
    def severity(self) -> int:
        return SEVERITIES.get(self.labels.get("severity", "").lower(), DEFAULT_SEVERITY)

    @property
    def summary(self) -> str:
        return self.annotations.get("summary", "").strip()

    @property
    def service(self) -> str:
        return (self.labels.get("service") or self.labels.get("job") or "").strip()


@dataclass(frozen=True)
class _Payload:
    group_key: str
    receiver: str
    external_url: str
    truncated: int
    common_annotations: dict[str, str]
    alerts: list[_Alert]


@dataclass(frozen=True)
class _Note:
    severity: int
    name: str
    status: str
    text: str
    data: dict[str, Any]


@dataclass
class _Outcome:
    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    new: int = 0
    refreshed: int = 0
    resolved: int = 0
    ignored: list[dict[str, str]] = field(default_factory=list)
    notes: dict[int, list[_Note]] = field(default_factory=dict)

    def touched(
        self, incident: Incident, alert: _Alert, row: Alert, text: str, group: dict[str, str]
    ) -> None:
        """Something the commander should read: an alert fired or resolved on this incident.
        `group` is {"group_key": …} when the alert opened or joined the incident for its group
        (what _group_incident matches), else {"delivery_group_key": …}."""
        if incident.pk not in self.opened and incident.pk not in self.updated:
            self.updated.append(incident.pk)
        data = {"alert": row.pk, "fingerprint": alert.fingerprint, "status": alert.status, **group}
        note = _Note(alert.severity, alert.name, alert.status, text, data)
        self.notes.setdefault(incident.pk, []).append(note)

    def as_dict(self) -> dict[str, Any]:
        return {
            "incidents_opened": self.opened,
            "incidents_updated": self.updated,
            "alerts_new": self.new,
            "alerts_updated": self.refreshed,
            "alerts_resolved": self.resolved,
            "ignored": self.ignored,
        }


# --- parsing: everything is checked before anything is written ---------------------------------


def _string_map(value: Any, path: str, problems: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{path}: must be an object of strings")
        return {}
    bad = sorted(str(k) for k, v in value.items() if not isinstance(v, str))
    if bad:
        problems.append(f"{path}: values must be strings ({', '.join(bad)})")
        return {}
    return dict(value)


def _string(value: Any, path: str, problems: list[str], *, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            problems.append(f"{path}: required")
        return ""
    if not isinstance(value, str):
        problems.append(f"{path}: must be a string")
        return ""
    return value


def _time(value: Any, path: str, problems: list[str], *, required: bool) -> datetime | None:
    """RFC 3339, as Alertmanager writes it (nanoseconds allowed); its zero time means "not set"."""
    if value is None or value == "":
        if required:
            problems.append(f"{path}: required")
        return None
    parsed = None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        problems.append(f"{path}: {value!r} is not an RFC 3339 time with a timezone")
        return None
    if parsed.year == 1:
        if required:
            problems.append(f"{path}: not set (Alertmanager's zero time)")
        return None
    return parsed


def _alert_parse(raw: Any, path: str, problems: list[str]) -> _Alert | None:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object")
        return None
    before = len(problems)
    status = raw.get("status")
    if status not in _PAYLOAD_STATUSES:
        problems.append(f"{path}.status: must be firing or resolved, not {status!r}")
    labels = _string_map(raw.get("labels"), f"{path}.labels", problems)
    if "labels" not in raw:
        problems.append(f"{path}.labels: required")
    name = labels.get("alertname", "").strip()
    if not name and isinstance(raw.get("labels"), dict):
        problems.append(f"{path}.labels.alertname: required")
    annotations = _string_map(raw.get("annotations"), f"{path}.annotations", problems)
    fingerprint = _string(raw.get("fingerprint"), f"{path}.fingerprint", problems, required=True)
    if len(fingerprint) > Alert._meta.get_field("fingerprint").max_length:
        problems.append(f"{path}.fingerprint: longer than 64 characters")
    starts_at = _time(raw.get("startsAt"), f"{path}.startsAt", problems, required=True)
    ends_at = _time(raw.get("endsAt"), f"{path}.endsAt", problems, required=False)
    generator_url = _string(raw.get("generatorURL"), f"{path}.generatorURL", problems)
    if len(problems) > before or starts_at is None:
        return None
    return _Alert(
        path=path,
        fingerprint=fingerprint,
        status=status,
        name=name[: Alert._meta.get_field("name").max_length],
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        # A firing alert's endsAt is Alertmanager's guess at expiry, not an end: keep it unset.
        ends_at=ends_at if status == "resolved" else None,
        # Prometheus puts the whole expression in the URL; an over-long one is dropped, not
        # truncated into a link that would open the wrong query.
        generator_url=generator_url if len(generator_url) <= 1000 else "",
    )


def alertmanager_payload_parse(*, payload: Any) -> _Payload:
    """Check a webhook payload (version 4) completely; raise AlertPayloadInvalid naming each path."""
    if not isinstance(payload, dict):
        raise AlertPayloadInvalid(["payload: must be a JSON object"])
    problems: list[str] = []
    version = payload.get("version")
    if version is not None and version != "4":
        problems.append(
            f"version: only Alertmanager webhook version 4 is understood, not {version!r}"
        )
    group_key = _string(payload.get("groupKey"), "groupKey", problems, required=True)
    if payload.get("status") not in _PAYLOAD_STATUSES:
        problems.append(f"status: must be firing or resolved, not {payload.get('status')!r}")
    receiver = _string(payload.get("receiver"), "receiver", problems)
    external_url = _string(payload.get("externalURL"), "externalURL", problems)
    for name in ("groupLabels", "commonLabels"):
        _string_map(payload.get(name), name, problems)
    common_annotations = _string_map(
        payload.get("commonAnnotations"), "commonAnnotations", problems
    )
    truncated = payload.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        problems.append("truncatedAlerts: must be a whole number, 0 or more")
        truncated = 0
    raw_alerts = payload.get("alerts")
    alerts: list[_Alert] = []
    if not isinstance(raw_alerts, list):
        problems.append("alerts: must be a list")
    elif len(raw_alerts) > MAX_ALERTS:
        problems.append(f"alerts: at most {MAX_ALERTS} a delivery (set max_alerts in the receiver)")
    else:
        first_at: dict[str, str] = {}
        for index, raw in enumerate(raw_alerts):
            alert = _alert_parse(raw, f"alerts[{index}]", problems)
            if alert is None:
                continue
            if alert.fingerprint in first_at:
                problems.append(
                    f"{alert.path}.fingerprint: repeats {first_at[alert.fingerprint]}.fingerprint"
                )
                continue
            first_at[alert.fingerprint] = alert.path
            alerts.append(alert)
    if problems:
        raise AlertPayloadInvalid(problems)
    return _Payload(
        group_key=group_key,
        receiver=receiver,
        external_url=external_url,
        truncated=truncated,
        common_annotations=common_annotations,
        alerts=alerts,
    )


# --- intake --------------------------------------------------------------------------------------


def _intake_lock() -> None:
    # SQLite runs every transaction with BEGIN IMMEDIATE (settings), which already serializes writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_INTAKE_LOCK_KEY])


def _group_incident(group_key: str) -> Incident | None:
    return (
        Incident.objects.filter(
            status__in=Incident.OPEN,
            timeline__kind=TimelineEntry.Kind.ALERT,
            timeline__data__group_key=group_key,
        )
        .order_by("-declared_at", "-pk")
        .first()
    )


def _alert_text(alert: _Alert, verb: str) -> str:
    severity = alert.labels.get("severity", "")
    text = f"alert {verb}: {alert.name}" + (f" ({severity})" if severity else "")
    return text + (f": {alert.summary}" if alert.summary else "")


def _notes_write(incident_id: int, notes: list[_Note]) -> None:
    """One timeline entry per alert, the most severe first, up to MAX_ALERT_ENTRIES; the rest of
    a storm in one entry, so it neither buries the narration nor re-renders the console for
    every alert."""
    notes = sorted(notes, key=lambda n: n.severity)  # stable: payload order within a severity
    shown = notes if len(notes) <= MAX_ALERT_ENTRIES + 1 else notes[:MAX_ALERT_ENTRIES]
    for note in shown:
        incident_system_note(
            incident_id=incident_id, text=note.text, kind=TimelineEntry.Kind.ALERT, data=note.data
        )
    rest = notes[len(shown) :]
    if not rest:
        return
    counts = Counter(n.status for n in rest)
    names = list(dict.fromkeys(n.name for n in rest))
    incident_system_note(
        incident_id=incident_id,
        text=f"and {len(rest)} more alerts ("
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        + "): "
        + ", ".join(names[:MAX_NAMES_LISTED])
        + (
            f" and {len(names) - MAX_NAMES_LISTED} more names"
            if len(names) > MAX_NAMES_LISTED
            else ""
        ),
        kind=TimelineEntry.Kind.ALERT,
        data={
            "alerts": [n.data["alert"] for n in rest],
            "fingerprints": [n.data["fingerprint"] for n in rest],
            **next(({"group_key": n.data["group_key"]} for n in rest if "group_key" in n.data), {}),
        },
    )


def _row_refresh(row: Alert, alert: _Alert, now: datetime, **changes: Any) -> None:
    row.labels, row.annotations, row.name = alert.labels, alert.annotations, alert.name
    row.generator_url, row.updated_at = alert.generator_url or row.generator_url, now
    for name, value in changes.items():
        setattr(row, name, value)
    row.save()


def _incident_open(payload: _Payload, fresh: list[_Alert], actor: Any) -> Incident:
    """A new incident for the group's fresh alerts, named after the most severe of them."""
    severity = min(a.severity for a in fresh)
    lead = next(a for a in fresh if a.severity == severity)
    title = payload.common_annotations.get("summary", "").strip() or lead.summary or lead.name
    summary = lead.annotations.get("description", "").strip()
    if payload.external_url:
        summary = (summary + "\n\n" if summary else "") + f"Alertmanager: {payload.external_url}"
    return incident_declare(
        title=title,
        severity=severity,
        summary=summary,
        services=[a.service for a in fresh if a.service],
        # Clock skew between Prometheus and us must not make detection "in the future".
        detected_at=min(min(a.starts_at for a in fresh), timezone.now()),
        source=Incident.Source.ALERTMANAGER,
        actor=actor,
        actor_label="" if actor else "alertmanager",
    )


@transaction.atomic
def alertmanager_ingest(*, payload: Any, actor: AbstractBaseUser | None) -> dict[str, Any]:
    """Store one Alertmanager webhook delivery. All or nothing: a malformed payload raises
    AlertPayloadInvalid (an InvalidInput) before anything is written.

    New firing alerts open an incident for their group, or join the group's open one; a known
    firing alert is refreshed silently; a known resolved alert is marked resolved. Side effects:
    incident_declare / incident_system_note (timeline entries of kind alert, console pushes on
    commit) and one ledger entry `incident.alerts_received` per incident touched.
    """
    if actor is not None and not actor.has_perm("incidents.narrate"):
        raise TransitionRefused(f"{actor.get_username()} may not post alerts to incidents")
    parsed = alertmanager_payload_parse(payload=payload)
    _intake_lock()
    now = timezone.now()
    rows = {
        row.fingerprint: row
        for row in Alert.objects.select_related("incident").filter(
            fingerprint__in=[a.fingerprint for a in parsed.alerts]
        )
    }
    outcome = _Outcome()
    delivery = {"delivery_group_key": parsed.group_key}
    fresh: list[_Alert] = []
    resolved_in: dict[int, Incident] = {}
    for alert in parsed.alerts:
        row = rows.get(alert.fingerprint)
        if alert.status == Alert.Status.FIRING:
            if row is None or (row.status == Alert.Status.RESOLVED and not row.incident.is_open):
                fresh.append(alert)  # a re-fire after its incident closed is a new occurrence
            elif row.status == Alert.Status.RESOLVED:
                _row_refresh(
                    row, alert, now, status=alert.status, starts_at=alert.starts_at, ends_at=None
                )
                text = _alert_text(alert, "firing again")
                outcome.touched(row.incident, alert, row, text, delivery)
                outcome.new += 1
            else:
                _row_refresh(row, alert, now)  # Alertmanager re-sending the group: nothing new
                outcome.refreshed += 1
        elif row is None:
            outcome.ignored.append(
                {
                    "fingerprint": alert.fingerprint,
                    "alertname": alert.name,
                    "reason": "resolved, but never seen firing",
                }
            )
        elif row.status == Alert.Status.FIRING:
            _row_refresh(row, alert, now, status=alert.status, ends_at=alert.ends_at or now)
            text = _alert_text(alert, "resolved")
            outcome.touched(row.incident, alert, row, text, delivery)
            outcome.resolved += 1
            resolved_in[row.incident_id] = row.incident
        else:
            _row_refresh(row, alert, now, ends_at=alert.ends_at or row.ends_at)
            outcome.refreshed += 1

    if fresh:
        incident = _group_incident(parsed.group_key)
        if incident is None:
            incident = _incident_open(parsed, fresh, actor)
            outcome.opened.append(incident.pk)
        for alert in fresh:
            row = rows.get(alert.fingerprint)
            fields = {
                "incident": incident,
                "status": alert.status,
                "starts_at": alert.starts_at,
                "ends_at": None,
            }
            if row is None:
                row = Alert.objects.create(
                    fingerprint=alert.fingerprint,
                    name=alert.name,
                    labels=alert.labels,
                    annotations=alert.annotations,
                    generator_url=alert.generator_url,
                    updated_at=now,
                    **fields,
                )
            else:
                _row_refresh(row, alert, now, **fields)
            text = _alert_text(alert, "firing")
            if incident.pk not in outcome.opened and alert.severity < incident.severity:
                text += f" — more severe than this {incident.get_severity_display()} incident"
            outcome.touched(incident, alert, row, text, {"group_key": parsed.group_key})
            outcome.new += 1

    for incident_id, notes in outcome.notes.items():
        _notes_write(incident_id, notes)
    for incident in resolved_in.values():
        if incident.is_open and not incident.alerts.filter(status=Alert.Status.FIRING).exists():
            incident_system_note(
                incident_id=incident.pk,
                text=f"all alerts resolved; INC-{incident.pk} stays {incident.status} until its "
                "commander resolves it",
                kind=TimelineEntry.Kind.ALERT,
            )

    for incident_id, notes in outcome.notes.items():
        fingerprints = {
            status: [n.data["fingerprint"] for n in notes if n.status == status]
            for status in _PAYLOAD_STATUSES
        }
        ledger_append(
            action="incident.alerts_received",
            subject_type="incidents.incident",
            subject_id=incident_id,
            actor=actor,
            actor_label=None if actor else "alertmanager",
            payload={
                "incident": incident_id,
                "group_key": parsed.group_key,
                "receiver": parsed.receiver,
                "truncated_alerts": parsed.truncated,
                **fingerprints,
            },
            incident_id=incident_id,
        )
    return outcome.as_dict()


# --- failed verifications ------------------------------------------------------------------------


@transaction.atomic
def step_failure_page(*, step_id: int, reason: str) -> Incident | None:
    """A step failed verification with on_fail "fail_and_page": tell the open incident linked to
    the step (or else to its plan) on its timeline, or declare a SEV2 linked to both.

    Side effects: incident_declare (its timeline, ledger and push) and a system note with the
    reason; or, on an existing incident, the note, a link to the step, and a ledger entry
    `incident.step_failed`.
    """
    step = Step.objects.select_related("plan", "flag").filter(pk=step_id).first()
    if step is None:
        logger.warning("step_paged for a step that no longer exists", extra={"step_id": step_id})
        return None
    where = f"{step.plan.key}/{step.key}"
    open_incidents = Incident.objects.filter(status__in=Incident.OPEN).order_by(
        "-declared_at", "-pk"
    )
    incident = (
        open_incidents.filter(steps=step).first() or open_incidents.filter(plans=step.plan).first()
    )
    data = {"step": step.pk, "plan": step.plan.key, "reason": reason}
    if incident is not None:
        incident_system_note(
            incident_id=incident.pk, text=f"{where} failed verification: {reason}", data=data
        )
        if not incident.steps.filter(pk=step.pk).exists():
            incident.steps.add(step)
        ledger_append(
            action="incident.step_failed",
            subject=incident,
            actor=None,
            actor_label="stepwise",
            payload={"incident": incident.pk, **data},
            plan_id=step.plan_id,
            step_id=step.pk,
            incident_id=incident.pk,
        )
        return incident
    incident = incident_declare(
        title=f"{where} failed verification",
        severity=Incident.Severity.SEV2,
        summary=reason,
        services=[step.service] if step.service else [],
        source=Incident.Source.VERIFICATION,
        plan_keys=[step.plan.key],
        step_ids=[step.pk],
        flag_keys=[step.flag.key] if step.flag else [],
        actor=None,
        actor_label="stepwise",
    )
    incident_system_note(
        incident_id=incident.pk, text=f"{where} failed verification: {reason}", data=data
    )
    return incident
