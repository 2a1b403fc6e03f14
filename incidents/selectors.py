"""Reads for the incident pages and APIs."""

from datetime import timedelta
from typing import Any

from django.db.models import Exists, OuterRef, Q
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from incidents.models import (
    BreakGlassSwitch,
    Change,
    Hypothesis,
    Incident,
    RoleAssignment,
    TimelineEntry,
)
from incidents.rules import change_blocker, flag_revert_plan
from ledger.models import LedgerEntry
from rollouts.gates import PlanHold
from rollouts.models import Decision, Flag, Plan, Step
from rollouts.selectors import flag_revert_previews

TIMELINE_SHOWN = 300
# "What changed?" looks this far back from detection.
CHANGES_LOOKBACK = timedelta(hours=6)


def incident_get(*, incident_id: int) -> Incident:
    return get_object_or_404(Incident, pk=incident_id)


def incident_list(*, status: str = "", severity: str = "") -> list[Incident]:
    incidents = Incident.objects.all()
    if status == "open":
        incidents = incidents.filter(status__in=Incident.OPEN)
    elif status in Incident.Status.values:
        incidents = incidents.filter(status=status)
    if severity.isdigit():
        incidents = incidents.filter(severity=int(severity))
    return list(incidents.prefetch_related("roles__user")[:200])


def commander_of(incident: Incident) -> RoleAssignment | None:
    return next(
        (
            r
            for r in incident.roles.all()
            if r.role == RoleAssignment.Role.COMMANDER and r.renounced_at is None
        ),
        None,
    )


def what_changed(incident: Incident) -> list[LedgerEntry]:
    """Recent ledger entries for the incident's plans, steps, flags and services: asked first."""
    since = incident.detected_at - CHANGES_LOOKBACK
    plan_ids = list(incident.plans.values_list("pk", flat=True))
    step_ids = list(incident.steps.values_list("pk", flat=True))
    flag_ids = [str(pk) for pk in incident.flags.values_list("pk", flat=True)]
    related = Q(plan_id__in=plan_ids) | Q(step_id__in=step_ids)
    related |= Q(subject_type="rollouts.flag", subject_id__in=flag_ids)
    if incident.services:
        related |= Q(step_id__in=Step.objects.filter(service__in=incident.services).values("pk"))
    return list(
        LedgerEntry.objects.filter(related, created_at__gte=since)
        .exclude(incident_id=incident.pk)
        .order_by("-seq")[:15]
    )


def narration_due(incident: Incident, *, now=None) -> dict[str, Any] | None:
    """The reminder the console shows when the commander has been silent too long."""
    if not incident.is_open or not incident.narration_minutes:
        return None
    now = now or timezone.now()
    last = incident.last_narration_at or incident.declared_at
    silent = now - last
    if silent < timedelta(minutes=incident.narration_minutes):
        return None
    return {"minutes": int(silent.total_seconds() // 60), "limit": incident.narration_minutes}


def recent_timeline(incident: Incident) -> list[TimelineEntry]:
    """The last TIMELINE_SHOWN entries, oldest first."""
    newest = incident.timeline.select_related("corrects").order_by("-seq")[:TIMELINE_SHOWN]
    return list(reversed(newest))


def console_live_context(*, incident_id: int) -> dict[str, Any]:
    """The live parts of the console, rendered once for every open browser. Each flag carries
    `revert_to` (what its one-click revert applies) and `revert_why` (why that revert is refused
    now, in the words the service would refuse with), and `change_blocked` says why no change
    may start: the controls are greyed out with the reason rather than refused after a click."""
    incident = Incident.objects.prefetch_related("roles__user").get(pk=incident_id)
    timeline = recent_timeline(incident)
    hypothesis = incident.hypotheses.filter(status=Hypothesis.Status.OPEN).first()
    change = (
        incident.changes.select_related("flag", "hypothesis")
        .filter(status=Change.Status.IN_PROGRESS)
        .first()
    )
    revert_blocked = change_blocker(hypothesis=hypothesis, in_progress=change, revert=True)
    flags = list(
        Flag.objects.filter(incidents=incident)
        .select_related("current", "current__author")
        .annotate(owned_by_plan=Exists(Step.objects.filter(flag=OuterRef("pk"))))
        .order_by("key")
    )
    reverts = flag_revert_previews(flags)
    for flag in flags:
        flag.revert_to, refused = reverts[flag.pk]
        flag.revert_why = refused or revert_blocked
    return {
        "incident": incident,
        "commander": commander_of(incident),
        "moves": sorted(Incident.TRANSITIONS[incident.status]),
        "roles": [r for r in incident.roles.all() if r.renounced_at is None],
        "timeline": timeline,
        "hypothesis": hypothesis,
        "change": change,
        "change_blocked": change_blocker(hypothesis=hypothesis, in_progress=change),
        "changes": list(incident.changes.select_related("hypothesis", "flag", "verified_by")),
        "hypotheses": list(incident.hypotheses.all()),
        "flags": flags,
        "switches": list(BreakGlassSwitch.objects.select_related("flag", "flag__current")),
        "alerts": list(incident.alerts.all()),
        "decisions": list(
            Decision.objects.filter(incident_id=incident.pk).select_related("author").order_by("pk")
        ),
        "what_changed": what_changed(incident),
        "held_plans": incident_held_plans(incident),
        "narration_due": narration_due(incident),
        "live": True,
    }


def flag_settings_for_change(*, flag_key: str) -> dict[str, Any]:
    """What "Make one change" shows for the flag being typed: its current version and the revert
    a change of it would default to."""
    flag = Flag.objects.select_related("current").filter(key=flag_key.strip()).first()
    if flag is None or flag.current is None:
        return {"flag_key": flag_key.strip(), "flag": None}
    return {"flag_key": flag.key, "flag": flag, "revert": flag_revert_plan(flag.current)}


def incident_as_dict(incident: Incident) -> dict[str, Any]:
    """The API's view of an incident: the console's state without rendering the console."""
    incident = Incident.objects.prefetch_related("roles__user").get(pk=incident.pk)
    timeline = recent_timeline(incident)
    context = {
        "hypothesis": incident.hypotheses.filter(status=Hypothesis.Status.OPEN).first(),
        "change": incident.changes.filter(status=Change.Status.IN_PROGRESS).first(),
        "timeline": timeline,
    }
    commander = commander_of(incident)
    return {
        "id": incident.pk,
        "title": incident.title,
        "severity": incident.get_severity_display(),
        "status": incident.status,
        "services": incident.services,
        "commander": commander.user.get_username() if commander else None,
        "detected_at": incident.detected_at.isoformat(),
        "declared_at": incident.declared_at.isoformat(),
        "mitigated_at": incident.mitigated_at.isoformat() if incident.mitigated_at else None,
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "hypothesis": context["hypothesis"].statement if context["hypothesis"] else None,
        "change": (
            {
                "id": context["change"].pk,
                "description": context["change"].description,
                "revert": context["change"].revert_plan,
            }
            if context["change"]
            else None
        ),
        "timeline": [_entry_dict(e) for e in context["timeline"]],
    }


def _entry_dict(entry: TimelineEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "text": entry.text,
        "author": entry.author_label,
        "at": entry.created_at.isoformat(),
        "corrects": entry.corrects.seq if entry.corrects else None,
    }


def incident_id_for_reference(reference: str) -> int | None:
    """The id `INC-12` (any case) names, when that incident exists."""
    prefix, _, number = reference.strip().upper().partition("INC-")
    if prefix or not number.isdigit():
        return None
    return Incident.objects.filter(pk=int(number)).values_list("pk", flat=True).first()


def incident_held_plans(incident: Incident) -> list[dict[str, Any]]:
    """The plans an incident holds while open: those it names and those with a step that ships
    one of its services (not closed ones). Each with the services it shares and its release."""
    plans = {p.pk: p for p in incident.plans.exclude(status__in=Plan.CLOSED)}
    shared: dict[int, set[str]] = {}
    for step in (
        Step.objects.filter(service__in=incident.services)
        .exclude(plan__status__in=Plan.CLOSED)
        .select_related("plan")
    ):
        plans.setdefault(step.plan_id, step.plan)
        shared.setdefault(step.plan_id, set()).add(step.service)
    releases = {r.plan_id: r for r in incident.releases.select_related("released_by")}
    return [
        {
            "plan": plan,
            "services": sorted(shared.get(plan.pk, ())),
            "release": releases.get(plan.pk),
        }
        for plan in sorted(plans.values(), key=lambda p: p.key)
    ]


def incident_plan_holds(plans: list[Plan]) -> dict[int, list[PlanHold]]:
    """Plan id -> the open incidents holding it (rollouts.gates asks; registered in apps.py)."""
    wanted = {plan.pk for plan in plans if not plan.is_closed}
    holds: dict[int, list[PlanHold]] = {}
    if not wanted:
        return holds
    for incident in Incident.objects.filter(status__in=Incident.OPEN).order_by("pk"):
        for held in incident_held_plans(incident):
            plan = held["plan"]
            if plan.pk not in wanted or held["release"] is not None:
                continue
            what = ", ".join([*held["services"], incident.get_severity_display()])
            holds.setdefault(plan.pk, []).append(
                PlanHold(
                    label=f"INC-{incident.pk} ({what})",
                    url=reverse("incident-console", kwargs={"incident_id": incident.pk}),
                )
            )
    return holds
