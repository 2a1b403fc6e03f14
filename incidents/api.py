"""The incidents JSON API: Alertmanager intake, declare, read, narrate, re-grade, one-click flag
revert. Errors are JSON with a reason: 400 for input, 403 for permission, 404 for an unknown
incident, 409 for a refused action."""

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from core.errors import InvalidInput, TransitionRefused
from core.http import (
    BadBody,
    api_endpoint,
    json_body,
    json_object_body,
    refusal_response,
)
from incidents.alerts import AlertPayloadInvalid, alertmanager_ingest
from incidents.models import Change, Incident
from incidents.selectors import incident_as_dict
from incidents.services import (
    incident_declare,
    incident_flag_revert,
    incident_triage,
    narration_post,
)

# No "incidents:read" scope exists yet, so reading takes the same scope as writing.
SCOPE = "incidents:write"
DECLARE_FIELDS = {"title", "severity", "summary", "services", "plans", "flags"}
NARRATION_FIELDS = {"text", "corrects"}
TRIAGE_FIELDS = {"severity", "services", "reason"}
FLAG_REVERT_FIELDS = {"flag", "seen_version", "expected_effect"}


class _BadRequest(Exception):
    def __init__(self, response: JsonResponse) -> None:
        self.response = response


def _error(message: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def _json(request: HttpRequest) -> Any:
    try:
        return json_body(request)
    except BadBody as exc:
        raise _BadRequest(exc.response()) from exc


def _json_object(request: HttpRequest, allowed: set[str]) -> dict[str, Any]:
    try:
        body = json_object_body(request)
    except BadBody as exc:
        raise _BadRequest(exc.response()) from exc
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _BadRequest(
            _error(
                f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}", 400
            )
        )
    return body


def _refusals_answered(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """An endpoint raises; the client gets JSON with the reason: its own status for a bad body,
    and the status `refusal_status` gives a refusal."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except _BadRequest as exc:
            return exc.response
        except (TransitionRefused, InvalidInput) as exc:
            return refusal_response(exc)

    return wrapped


def _incident_url(incident_id: int) -> str:
    return reverse("incident-console", kwargs={"incident_id": incident_id})


@api_endpoint(method="POST", scope=SCOPE, permission="incidents.narrate")
@_refusals_answered
def alertmanager_webhook(request: HttpRequest) -> JsonResponse:
    """Alertmanager's webhook receiver (docs/alertmanager.md): 202 with what was done."""
    try:
        outcome = alertmanager_ingest(payload=_json(request), actor=request.user)
    except AlertPayloadInvalid as exc:
        return _error(f"invalid Alertmanager payload: {exc}", 400, invalid=exc.problems)
    return JsonResponse(outcome, status=202)


def _severity(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in Incident.Severity.values:
        return value
    if isinstance(value, str):
        label = value.strip().upper()
        for number, name in Incident.Severity.choices:
            if label == name:
                return number
    raise InvalidInput(f'severity: must be "SEV1".."SEV4" or 1..4, not {value!r}')


def _string_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{name}: must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: must be a string")
    if required and not value.strip():
        raise InvalidInput(f"{name}: required")
    return value.strip()


@api_endpoint(method="POST", scope=SCOPE, permission="incidents.narrate")
@_refusals_answered
def incident_declare_api(request: HttpRequest) -> JsonResponse:
    """POST {title, severity, summary?, services?, plans?, flags?} -> 201 {id, url}."""
    body = _json_object(request, DECLARE_FIELDS)
    title = _text(body, "title", required=True)
    if "severity" not in body:
        raise InvalidInput('severity: required ("SEV1".."SEV4" or 1..4)')
    incident = incident_declare(
        title=title,
        severity=_severity(body["severity"]),
        summary=_text(body, "summary"),
        services=_string_list(body, "services"),
        plan_keys=_string_list(body, "plans"),
        flag_keys=_string_list(body, "flags"),
        source=Incident.Source.API,
        actor=request.user,
    )
    return JsonResponse({"id": incident.pk, "url": _incident_url(incident.pk)}, status=201)


@api_endpoint(method="GET", scope=SCOPE, permission="incidents.view_incident")
def incident_detail_api(request: HttpRequest, incident_id: int) -> JsonResponse:
    """The incident with its timeline, open hypothesis, change in progress and alerts."""
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None:
        return _error(f"no incident with id {incident_id}", 404)
    return JsonResponse(
        {
            **incident_as_dict(incident),
            "summary": incident.summary,
            "source": incident.source,
            "url": _incident_url(incident.pk),
            "alerts": [
                {
                    "fingerprint": a.fingerprint,
                    "name": a.name,
                    "status": a.status,
                    "starts_at": a.starts_at.isoformat(),
                    "ends_at": a.ends_at.isoformat() if a.ends_at else None,
                }
                for a in incident.alerts.all()
            ],
        }
    )


@api_endpoint(method="POST", scope=SCOPE, permission="incidents.narrate")
@_refusals_answered
def narration_api(request: HttpRequest, incident_id: int) -> JsonResponse:
    """POST {text, corrects?: seq} -> 201 with the new timeline entry."""
    if not Incident.objects.filter(pk=incident_id).exists():
        return _error(f"no incident with id {incident_id}", 404)
    body = _json_object(request, NARRATION_FIELDS)
    corrects = body.get("corrects")
    if corrects is not None and (
        not isinstance(corrects, int) or isinstance(corrects, bool) or corrects < 1
    ):
        raise InvalidInput("corrects: must be the seq (1 or more) of the entry it corrects")
    entry = narration_post(
        incident_id=incident_id,
        text=_text(body, "text", required=True),
        corrects_seq=corrects,
        actor=request.user,
    )
    return JsonResponse(
        {
            "incident": incident_id,
            "seq": entry.seq,
            "kind": entry.kind,
            "text": entry.text,
            "author": entry.author_label,
            "at": entry.created_at.isoformat(),
            "corrects": corrects,
        },
        status=201,
    )


@api_endpoint(method="POST", scope=SCOPE, permission="incidents.command")
@_refusals_answered
def triage_api(request: HttpRequest, incident_id: int) -> JsonResponse:
    """POST {severity, services?, reason?} -> 200 with the incident: re-grade it, as the console's
    Severity and services card does (a severity change needs its reason; services left out stay
    as they are)."""
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None:
        return _error(f"no incident with id {incident_id}", 404)
    body = _json_object(request, TRIAGE_FIELDS)
    if "severity" not in body:
        raise InvalidInput('severity: required ("SEV1".."SEV4" or 1..4)')
    incident_triage(
        incident_id=incident_id,
        severity=_severity(body["severity"]),
        services=_string_list(body, "services") if "services" in body else incident.services,
        reason=_text(body, "reason"),
        actor=request.user,
    )
    return JsonResponse(incident_as_dict(incident))


def _change_dict(change: Change) -> dict[str, Any]:
    return {
        "incident": change.incident_id,
        "change": change.pk,
        "description": change.description,
        "expected_effect": change.expected_effect,
        "revert": change.revert_plan,
        "status": change.status,
        "flag": change.flag.key if change.flag else None,
        "version": change.flag_version.number if change.flag_version else None,
    }


@api_endpoint(method="POST", scope=SCOPE, permission="rollouts.flip_flag")
@_refusals_answered
def flag_revert_api(request: HttpRequest, incident_id: int) -> JsonResponse:
    """POST {flag, seen_version, expected_effect?} -> 201 with the change it started: the
    console's one-click revert, through the same service and so under the same rules (an open
    hypothesis, no change in progress, the version the caller saw, never more exposure)."""
    if not Incident.objects.filter(pk=incident_id).exists():
        return _error(f"no incident with id {incident_id}", 404)
    body = _json_object(request, FLAG_REVERT_FIELDS)
    seen = body.get("seen_version")
    if not isinstance(seen, int) or isinstance(seen, bool) or seen < 1:
        raise InvalidInput(
            "seen_version: required, the flag version you looked at (1 or more), so a revert "
            "someone already made is not made twice"
        )
    change = incident_flag_revert(
        incident_id=incident_id,
        flag_key=_text(body, "flag", required=True),
        seen_version=seen,
        expected_effect=_text(body, "expected_effect"),
        actor=request.user,
    )
    return JsonResponse(_change_dict(change), status=201)
