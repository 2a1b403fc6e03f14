"""Every incident state change: lock the incident, check, write, timeline, ledger, push.

The timeline entry is the incident's record and the ledger entry is the platform's; both are
written in the same transaction, and the console is pushed on commit.
"""

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.errors import InvalidInput, NotFound, TransitionRefused
from incidents.models import (
    ActionItem,
    BreakGlassSwitch,
    Change,
    Hypothesis,
    Incident,
    PlanRelease,
    RoleAssignment,
    TimelineEntry,
)
from incidents.rules import change_blocker, flag_move, flag_revert_plan, revert_plan_problem
from incidents.selectors import incident_held_plans
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.models import Decision, Flag, FlagVersion, Plan, Step
from rollouts.services.decisions import decision_record
from rollouts.services.flags import flag_change, flag_restore, flag_revert, flag_revert_check
from signals.measurements import duration_spec
from signals.models import SLOAlert

MAX_NARRATION = 2_000


def _who(actor: AbstractBaseUser | None, label: str = "stepwise") -> str:
    return actor.get_username() if actor else label


def _lock(incident_id: int) -> Incident:
    incident = Incident.objects.select_for_update().filter(pk=incident_id).first()
    if incident is None:
        raise NotFound(f"no incident with id {incident_id}")
    return incident


def _require(actor: AbstractBaseUser | None, permission: str, doing: str) -> None:
    if actor is not None and not actor.has_perm(permission):
        raise TransitionRefused(f"{actor.get_username()} may not {doing}")


def console_touch(*, incident: Incident, event: str, entry: TimelineEntry | None = None) -> None:
    """Mark the console changed. An event that only adds `entry` to the timeline pushes that one
    entry (appended in sequence order), not the whole console."""
    stream_touch(stream=incident.stream, event=event, ref=None if entry is None else entry.pk)


def _held_plans_touch(incident: Incident, *, also: Iterable[Plan] = ()) -> None:
    """The plans this incident holds (or held: `also`) show it on their pages: push them."""
    plans = {held["plan"].pk: held["plan"] for held in incident_held_plans(incident)}
    plans.update({plan.pk: plan for plan in also})
    for plan in plans.values():
        stream_touch(stream=plan.stream, event="plan.hold_changed")


def _timeline(
    incident: Incident,
    *,
    kind: str,
    text: str,
    actor: AbstractBaseUser | None,
    author_label: str = "",
    data: dict[str, Any] | None = None,
    corrects: TimelineEntry | None = None,
) -> TimelineEntry:
    """Append to the locked incident's timeline with the next sequence number."""
    incident.last_seq += 1
    entry = TimelineEntry.objects.create(
        incident=incident,
        seq=incident.last_seq,
        kind=kind,
        text=text,
        author=actor,
        author_label=author_label or _who(actor),
        corrects=corrects,
        data=data or {},
    )
    fields = ["last_seq"]
    if kind == TimelineEntry.Kind.NARRATION and actor is not None:
        incident.last_narration_at = entry.created_at
        fields.append("last_narration_at")
    incident.save(update_fields=fields)
    return entry


def _ledger(
    incident: Incident,
    action: str,
    actor: Any,
    payload: dict,
    *,
    actor_label: str = "stepwise",
    plan_id: int | None = None,
) -> None:
    ledger_append(
        action=action,
        subject=incident,
        actor=actor,
        actor_label=None if actor else actor_label,
        payload={"incident": incident.pk, **payload},
        incident_id=incident.pk,
        plan_id=plan_id,
    )


def _services_clean(services: list[str] | None) -> list[str]:
    return sorted({s.strip() for s in services or [] if s and s.strip()})


@transaction.atomic
def incident_declare(
    *,
    title: str,
    severity: int,
    actor: AbstractBaseUser | None,
    summary: str = "",
    services: list[str] | None = None,
    detected_at: datetime | None = None,
    source: str = Incident.Source.CONSOLE,
    plan_keys: list[str] | None = None,
    step_ids: list[int] | None = None,
    flag_keys: list[str] | None = None,
    actor_label: str = "",
    slo_alert_id: int | None = None,
) -> Incident:
    """Open an incident. The person who declares it commands it until they hand over.

    Ledger: incident.declared, then incident.role_assigned when the declarer commands it."""
    title = (title or "").strip()
    if not title:
        raise InvalidInput("an incident needs a title")
    if isinstance(severity, bool) or severity not in Incident.Severity.values:
        raise InvalidInput("severity must be SEV1, SEV2, SEV3 or SEV4")
    _require(actor, "incidents.narrate", "declare incidents")
    now = timezone.now()
    detected_at = detected_at or now
    if detected_at > now:
        raise InvalidInput("detected_at cannot be in the future")
    services = _services_clean(services)
    plans = list(Plan.objects.filter(key__in=plan_keys or []))
    flags = list(Flag.objects.filter(key__in=flag_keys or []))
    steps = list(Step.objects.filter(pk__in=step_ids or []))
    missing = sorted(set(plan_keys or []) - {p.key for p in plans}) + sorted(
        set(flag_keys or []) - {f.key for f in flags}
    )
    if missing:
        raise InvalidInput(f"unknown plan or flag: {', '.join(missing)}")
    incident = Incident.objects.create(
        title=title[:200],
        summary=summary,
        severity=severity,
        source=source,
        services=services,
        detected_at=detected_at,
        declared_at=now,
        declared_by=actor,
        narration_minutes=Incident.NARRATION_MINUTES[severity],
        slo_alert_id=slo_alert_id,
    )
    incident.plans.set(plans)
    incident.flags.set(flags)
    incident.steps.set(steps)
    who = actor_label or _who(actor)
    _timeline(
        incident,
        kind=TimelineEntry.Kind.STATUS,
        text=f"{incident.get_severity_display()} declared by {who}: {title}",
        actor=actor,
        author_label=who,
    )
    _ledger(
        incident,
        "incident.declared",
        actor,
        {
            "title": title,
            "severity": incident.get_severity_display(),
            "source": source,
            "services": services,
        },
        actor_label=who,
    )
    if actor is not None and actor.has_perm("incidents.command"):
        RoleAssignment.objects.create(
            incident=incident, user=actor, role=RoleAssignment.Role.COMMANDER, assumed_at=now
        )
        _timeline(
            incident,
            kind=TimelineEntry.Kind.ROLE,
            text=f"{who} is incident commander",
            actor=actor,
        )
        # Command begins here as it later moves by handover: a state change of its own, with
        # its own entry, so the ledger alone says who commanded from when.
        _ledger(
            incident,
            "incident.role_assigned",
            actor,
            {"user": actor.get_username(), "role": RoleAssignment.Role.COMMANDER.value},
        )
    console_touch(incident=incident, event="incident.declared")
    _held_plans_touch(incident)
    return incident


@transaction.atomic
def narration_post(
    *,
    incident_id: int,
    text: str,
    actor: AbstractBaseUser,
    corrects_seq: int | None = None,
) -> TimelineEntry:
    """Narrate. A correction is a new entry that names the one it corrects (the record stays)."""
    text = (text or "").strip()
    if not text:
        raise InvalidInput("say something: the narration is empty")
    if len(text) > MAX_NARRATION:
        raise InvalidInput(f"narration is limited to {MAX_NARRATION} characters")
    _require(actor, "incidents.narrate", "narrate incidents")
    incident = _lock(incident_id)
    corrects = None
    if corrects_seq is not None:
        corrects = incident.timeline.filter(seq=corrects_seq).first()
        if corrects is None:
            raise InvalidInput(f"there is no timeline entry #{corrects_seq} to correct")
    entry = _timeline(
        incident, kind=TimelineEntry.Kind.NARRATION, text=text, actor=actor, corrects=corrects
    )
    console_touch(incident=incident, event="timeline.narration", entry=entry)
    return entry


def _commander(incident: Incident) -> RoleAssignment | None:
    return incident.roles.filter(
        role=RoleAssignment.Role.COMMANDER, renounced_at__isnull=True
    ).first()


def _require_command(
    incident: Incident, actor: AbstractBaseUser | None, doing: str, *, closed_ok: bool = False
) -> None:
    _require(actor, "incidents.command", doing)
    if not incident.is_open and not closed_ok:
        raise TransitionRefused(f"INC-{incident.pk} is {incident.status}: reopen it to {doing}")


@transaction.atomic
def incident_status_change(
    *, incident_id: int, status: str, actor: AbstractBaseUser | None, reason: str = ""
) -> Incident:
    """declared → investigating → mitigated → resolved → postmortem (mitigated and resolved may
    reopen). Resolving is refused while a change is in progress: verify it first."""
    incident = _lock(incident_id)
    _require_command(incident, actor, "change the incident's status", closed_ok=True)
    if status not in Incident.Status.values:
        raise InvalidInput(f"unknown status {status!r}")
    if status not in Incident.TRANSITIONS[incident.status]:
        raise TransitionRefused(
            f"INC-{incident.pk} is {incident.status}; it cannot become {status}"
        )
    if status == Incident.Status.RESOLVED:
        pending = incident.changes.filter(status=Change.Status.IN_PROGRESS).first()
        if pending is not None:
            raise TransitionRefused(
                f"change “{pending.description}” is still in progress: verify it (hold or "
                "revert) before resolving"
            )
    before, now = incident.status, timezone.now()
    incident.status = status
    if status == Incident.Status.MITIGATED and incident.mitigated_at is None:
        incident.mitigated_at = now
    if status == Incident.Status.RESOLVED:
        incident.resolved_at = now
        incident.mitigated_at = incident.mitigated_at or now
    if status == Incident.Status.INVESTIGATING and before == Incident.Status.RESOLVED:
        incident.resolved_at = None
    incident.save(update_fields=["status", "mitigated_at", "resolved_at"])
    _timeline(
        incident,
        kind=TimelineEntry.Kind.STATUS,
        text=f"status {before} → {status}" + (f": {reason}" if reason else ""),
        actor=actor,
        data={"from": before, "to": status},
    )
    _ledger(incident, f"incident.{status}", actor, {"from": before, "to": status, "reason": reason})
    console_touch(incident=incident, event=f"incident.{status}")
    _held_plans_touch(incident)
    return incident


@transaction.atomic
def incident_triage(
    *,
    incident_id: int,
    severity: int,
    services: list[str],
    actor: AbstractBaseUser | None,
    reason: str = "",
) -> Incident:
    """Re-grade an incident as understanding grows: its severity (with the reason, and the
    narration cadence that goes with the new severity) and the services it involves. A
    commander's call, also after resolution, so the postmortem records the right grade."""
    incident = _lock(incident_id)
    _require_command(incident, actor, "change the incident's severity", closed_ok=True)
    if isinstance(severity, bool) or severity not in Incident.Severity.values:
        raise InvalidInput("severity must be SEV1, SEV2, SEV3 or SEV4")
    services, reason = _services_clean(services), (reason or "").strip()
    before = {"severity": incident.get_severity_display(), "services": incident.services}
    held_before = [held["plan"] for held in incident_held_plans(incident)]
    moved = severity != incident.severity
    if not moved and services == incident.services:
        raise InvalidInput(
            f"INC-{incident.pk} is already {before['severity']} with those services: "
            "nothing to change"
        )
    if moved and not reason:
        raise InvalidInput("say why the severity changes")
    said = []
    if moved:
        incident.severity = severity
        incident.narration_minutes = Incident.NARRATION_MINUTES[severity]
        said.append(f"severity {before['severity']} → {incident.get_severity_display()}")
    if services != incident.services:
        said.append(
            f"services {', '.join(incident.services) or 'none'} → {', '.join(services) or 'none'}"
        )
        incident.services = services
    incident.save(update_fields=["severity", "narration_minutes", "services"])
    after = {"severity": incident.get_severity_display(), "services": services}
    _timeline(
        incident,
        kind=TimelineEntry.Kind.STATUS,
        text="; ".join(said) + (f": {reason}" if reason else ""),
        actor=actor,
        data={"from": before, "to": after},
    )
    _ledger(incident, "incident.triaged", actor, {"from": before, "to": after, "reason": reason})
    console_touch(incident=incident, event="incident.triaged")
    _held_plans_touch(incident, also=held_before)
    return incident


@transaction.atomic
def incident_plan_release(
    *, incident_id: int, plan_key: str, reason: str, actor: AbstractBaseUser | None
) -> PlanRelease:
    """The incident's commander lets a plan it holds start steps again, saying why (the plan's
    change is the fix, or unrelated after all). Idempotent: a second click returns the release.
    Ledger: incident.plan_released; on the timeline; the plan page is pushed."""
    incident = _lock(incident_id)
    _require_command(incident, actor, "release a plan")
    commander = _commander(incident)
    if commander is None or commander.user_id != actor.pk:
        who = commander.user.get_username() if commander else "nobody (take command first)"
        raise TransitionRefused(f"only INC-{incident.pk}'s commander releases its plans: {who}")
    held = {h["plan"].key: h for h in incident_held_plans(incident)}
    if plan_key not in held:
        raise InvalidInput(
            f"INC-{incident.pk} does not hold plan {plan_key!r}"
            + (f"; it holds {', '.join(sorted(held))}" if held else "")
        )
    if held[plan_key]["release"] is not None:
        return held[plan_key]["release"]
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(f"say why plan {plan_key} may go on during INC-{incident.pk}")
    plan = held[plan_key]["plan"]
    release = PlanRelease.objects.create(
        incident=incident, plan=plan, reason=reason[:300], released_by=actor
    )
    who = _who(actor)
    _timeline(
        incident,
        kind=TimelineEntry.Kind.DECISION,
        text=f"{who} released plan {plan.key}: its steps may start again. Why: {reason}",
        actor=actor,
        data={"plan": plan.key},
    )
    _ledger(
        incident,
        "incident.plan_released",
        actor,
        {"plan": plan.key, "reason": reason},
        plan_id=plan.pk,
    )
    console_touch(incident=incident, event="incident.plan_released")
    stream_touch(stream=plan.stream, event="plan.released")
    return release


@transaction.atomic
def command_handover(
    *, incident_id: int, to_username: str, actor: AbstractBaseUser
) -> RoleAssignment:
    """One action: the current commander's role ends and the new commander's begins."""
    incident = _lock(incident_id)
    _require_command(incident, actor, "hand over command")
    to_user = get_user_model().objects.filter(username=to_username).first()
    if to_user is None:
        raise InvalidInput(f"no user named {to_username!r}")
    if not to_user.has_perm("incidents.command"):
        raise TransitionRefused(f"{to_username} cannot command incidents (not a commander)")
    current = _commander(incident)
    if current is not None and current.user_id == to_user.pk:
        raise TransitionRefused(f"{to_username} already commands INC-{incident.pk}")
    now = timezone.now()
    if current is not None:
        current.renounced_at = now
        current.save(update_fields=["renounced_at"])
    assignment = RoleAssignment.objects.create(
        incident=incident, user=to_user, role=RoleAssignment.Role.COMMANDER, assumed_at=now
    )
    previous = current.user.get_username() if current else "nobody"
    _timeline(
        incident,
        kind=TimelineEntry.Kind.ROLE,
        text=f"{to_username} is now incident commander (was {previous})",
        actor=actor,
    )
    _ledger(incident, "incident.command_handed_over", actor, {"from": previous, "to": to_username})
    console_touch(incident=incident, event="incident.command")
    return assignment


@transaction.atomic
def role_assign(
    *, incident_id: int, username: str, role: str, actor: AbstractBaseUser
) -> RoleAssignment:
    """Scribe, communications or subject-matter expert (command moves by handover)."""
    incident = _lock(incident_id)
    _require_command(incident, actor, "assign roles")
    if role not in RoleAssignment.Role.values or role == RoleAssignment.Role.COMMANDER:
        raise InvalidInput("role must be scribe, communications or sme (command is handed over)")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise InvalidInput(f"no user named {username!r}")
    assignment = RoleAssignment.objects.create(incident=incident, user=user, role=role)
    _timeline(
        incident,
        kind=TimelineEntry.Kind.ROLE,
        text=f"{username} is {assignment.get_role_display()}",
        actor=actor,
    )
    _ledger(incident, "incident.role_assigned", actor, {"user": username, "role": role})
    console_touch(incident=incident, event="incident.role")
    return assignment


@transaction.atomic
def hypothesis_state(*, incident_id: int, statement: str, actor: AbstractBaseUser) -> Hypothesis:
    """The commander states the one hypothesis being worked; the previous must be closed first."""
    incident = _lock(incident_id)
    _require_command(incident, actor, "state hypotheses")
    statement = (statement or "").strip()
    if not statement:
        raise InvalidInput("state the hypothesis")
    current = incident.hypotheses.filter(status=Hypothesis.Status.OPEN).first()
    if current is not None:
        raise TransitionRefused(
            f"hypothesis “{current.statement}” is still open: confirm or reject it first"
        )
    hypothesis = Hypothesis.objects.create(
        incident=incident, statement=statement[:500], author=actor
    )
    _timeline(
        incident,
        kind=TimelineEntry.Kind.HYPOTHESIS,
        text=f"Hypothesis: {statement}",
        actor=actor,
        data={"hypothesis": hypothesis.pk},
    )
    _ledger(incident, "incident.hypothesis", actor, {"statement": statement})
    console_touch(incident=incident, event="incident.hypothesis")
    return hypothesis


@transaction.atomic
def hypothesis_close(
    *, incident_id: int, hypothesis_id: int, confirmed: bool, actor: AbstractBaseUser
) -> Hypothesis:
    incident = _lock(incident_id)
    _require_command(incident, actor, "close hypotheses")
    hypothesis = incident.hypotheses.filter(pk=hypothesis_id).first()
    if hypothesis is None:
        raise InvalidInput(f"INC-{incident.pk} has no hypothesis {hypothesis_id}")
    if hypothesis.status != Hypothesis.Status.OPEN:
        raise TransitionRefused(f"that hypothesis is already {hypothesis.status}")
    if incident.changes.filter(hypothesis=hypothesis, status=Change.Status.IN_PROGRESS).exists():
        raise TransitionRefused("a change under this hypothesis is in progress: verify it first")
    hypothesis.status = Hypothesis.Status.CONFIRMED if confirmed else Hypothesis.Status.REJECTED
    hypothesis.closed_at = timezone.now()
    hypothesis.save(update_fields=["status", "closed_at"])
    _timeline(
        incident,
        kind=TimelineEntry.Kind.HYPOTHESIS,
        text=f"Hypothesis {hypothesis.status}: {hypothesis.statement}",
        actor=actor,
        data={"hypothesis": hypothesis.pk, "status": hypothesis.status},
    )
    _ledger(
        incident,
        f"incident.hypothesis_{hypothesis.status}",
        actor,
        {"statement": hypothesis.statement},
    )
    console_touch(incident=incident, event="incident.hypothesis")
    return hypothesis


def _change_may_start(incident: Incident, *, revert: bool = False) -> Hypothesis:
    """The open hypothesis the next change tests, or TransitionRefused (`rules.change_blocker`):
    none is open, or another change waits for its verdict."""
    hypothesis = incident.hypotheses.filter(status=Hypothesis.Status.OPEN).first()
    in_progress = incident.changes.filter(status=Change.Status.IN_PROGRESS).first()
    if reason := change_blocker(hypothesis=hypothesis, in_progress=in_progress, revert=revert):
        raise TransitionRefused(reason)
    assert hypothesis is not None  # change_blocker refused otherwise
    return hypothesis


def _change_record(
    incident: Incident,
    *,
    hypothesis: Hypothesis,
    description: str,
    expected_effect: str,
    revert_plan: str,
    actor: AbstractBaseUser,
    before: FlagVersion | None = None,
    version: FlagVersion | None = None,
    one_click_revert: bool = False,
) -> Change:
    """The Change row, its timeline line, its ledger entry and the push: what every change
    shares, whether typed into "Make one change" or made by a one-click revert. `before` and
    `version`: the flag version the change replaced and the one it made."""
    change = Change.objects.create(
        incident=incident,
        hypothesis=hypothesis,
        description=description[:500],
        expected_effect=expected_effect[:500],
        revert_plan=revert_plan[:500],
        flag=version.flag if version else None,
        flag_version=version,
        started_by=actor,
    )
    what, flag_data = description, {}
    if before is not None and version is not None:
        incident.flags.add(version.flag)
        moved = flag_move(before, version, verb="reverted" if one_click_revert else "")
        # A revert's description is the same move, said before it was made.
        what = moved if one_click_revert else f"{description} — {moved}"
        flag_data = {"flag": version.flag.key, "from": before.number, "version": version.number}
    _timeline(
        incident,
        kind=TimelineEntry.Kind.CHANGE,
        text=f"Change: {what} — expect: {expected_effect} — revert: {revert_plan}",
        actor=actor,
        data={
            "change": change.pk,
            **flag_data,
            **({"one_click_revert": True} if one_click_revert else {}),
        },
    )
    _ledger(
        incident,
        "incident.change_started",
        actor,
        {
            "change": change.pk,
            "description": description,
            "revert": revert_plan,
            **flag_data,
            **({"one_click_revert": True} if one_click_revert else {}),
        },
    )
    console_touch(incident=incident, event="incident.change")
    return change


@transaction.atomic
def change_start(
    *,
    incident_id: int,
    description: str,
    expected_effect: str,
    revert_plan: str,
    actor: AbstractBaseUser,
    flag_key: str = "",
    flag_changes: dict[str, Any] | None = None,
) -> Change:
    """Start the one change under the open hypothesis. It needs its expected effect and its revert
    (written out: "n/a" is not one) before it starts; a second change waits until the first is
    verified. A flag change is made here: its revert, unless the commander wrote one, restores
    the flag's previous version, settings written out ("restore new-login v6 (on at 5%)")."""
    incident = _lock(incident_id)
    _require_command(incident, actor, "make changes")
    description, expected_effect = (description or "").strip(), (expected_effect or "").strip()
    revert_plan, flag_key = (revert_plan or "").strip(), (flag_key or "").strip()
    if not description:
        raise InvalidInput("describe the change")
    if not expected_effect:
        raise InvalidInput("say what effect you expect, so it can be verified")
    if problem := revert_plan_problem(revert_plan, flag_change=bool(flag_key)):
        raise InvalidInput(problem)
    hypothesis = _change_may_start(incident)
    before = version = None
    if flag_key:
        # Locked here (the flag service locks it again), so `before` is what the change replaced.
        flag = Flag.objects.select_for_update().filter(key=flag_key).first()
        if flag is None:
            raise InvalidInput(f"no flag {flag_key!r}")
        _require(actor, "rollouts.flip_flag", "flip flags")
        before = FlagVersion.objects.select_related("flag").get(pk=flag.current_id)
        version = flag_change(
            flag_key=flag_key,
            changes=flag_changes or {},
            actor=actor,
            reason=f"INC-{incident.pk}: {description}"[:300],
            source="incident",
            incident_id=incident.pk,
        )
        if version.pk == before.pk:
            raise InvalidInput(
                f"{flag_key} is already {before.settings_text()} (v{before.number}): the change "
                "would change nothing"
            )
        revert_plan = revert_plan or flag_revert_plan(before)
    return _change_record(
        incident,
        hypothesis=hypothesis,
        description=description,
        expected_effect=expected_effect,
        revert_plan=revert_plan,
        actor=actor,
        before=before,
        version=version,
    )


@transaction.atomic
def change_verify(
    *, incident_id: int, change_id: int, better: bool, actor: AbstractBaseUser, note: str = ""
) -> Change:
    """Better: hold the change. Not better: revert it now (a flag goes back to the version before
    the change; anything else is marked reverted for the commander to carry out its revert)."""
    incident = _lock(incident_id)
    _require_command(incident, actor, "verify changes")
    change = incident.changes.select_related("flag", "flag_version").filter(pk=change_id).first()
    if change is None:
        raise InvalidInput(f"INC-{incident.pk} has no change {change_id}")
    if change.status != Change.Status.IN_PROGRESS:
        who = change.verified_by.get_username() if change.verified_by else "someone"
        raise TransitionRefused(f"that change was already {change.get_status_display()} by {who}")
    change.status = Change.Status.HELD if better else Change.Status.REVERTED
    change.verified_by, change.verified_at = actor, timezone.now()
    change.verification_note = (note or "").strip()[:500]
    change.save(update_fields=["status", "verified_by", "verified_at", "verification_note"])
    restored = None
    if not better and change.flag_version is not None:
        # The change's own revert: the version current when it began, even when the change had
        # lowered exposure. Only the version this change made is undone: if someone changed the
        # flag since, the flag service refuses and names them rather than overwrite their change.
        restored = flag_restore(
            flag_key=change.flag.key,
            version_number=change.flag_version.number - 1,
            seen_version=change.flag_version.number,
            actor=actor,
            reason=f"INC-{incident.pk}: not better, reverting “{change.description}”"[:300],
            source="incident",
            incident_id=incident.pk,
        )
    verdict = "better: holding" if better else "not better: reverted"
    flag_said, flag_data = "", {}
    if restored is not None:
        flag_said = f" ({flag_move(change.flag_version, restored, verb='restored')})"
        flag_data = {"flag": change.flag.key, "version": restored.number}
    elif change.flag_version is not None:
        held = change.flag_version
        flag_said = f" ({change.flag.key} stays {held.settings_text()} (v{held.number}))"
    _timeline(
        incident,
        kind=TimelineEntry.Kind.VERIFICATION if better else TimelineEntry.Kind.REVERT,
        text=f"{change.description} — {verdict}{flag_said}"
        + (f": {change.verification_note}" if change.verification_note else ""),
        actor=actor,
        data={"change": change.pk, "better": better, **flag_data},
    )
    _ledger(
        incident,
        "incident.change_held" if better else "incident.change_reverted",
        actor,
        {"change": change.pk, "description": change.description, "note": note, **flag_data},
    )
    console_touch(incident=incident, event="incident.change")
    return change


@transaction.atomic
def incident_flag_revert(
    *,
    incident_id: int,
    flag_key: str,
    seen_version: int,
    actor: AbstractBaseUser,
    expected_effect: str = "",
) -> Change:
    """The console's one-click revert: the flag goes back to the version before the one the
    person saw, as the change under the open hypothesis (a revert tests one too), so it is
    verified like any change and its "not better" restores the version it replaced.

    Refused while no hypothesis is open or another change waits for its verdict, and when the
    flag service refuses: the flag moved on (concurrent clicks revert once; the others are told
    who reverted) or the revert would raise exposure (a revert of a revert)."""
    incident = _lock(incident_id)
    # A commander may revert any flag; a TPM the flags their plans' steps ramp.
    plan_flag = Step.objects.filter(flag__key=flag_key).exists()
    if not (actor.has_perm("incidents.command") or plan_flag):
        _require(actor, "incidents.command", "revert flags that no plan step owns")
    _require(actor, "rollouts.flip_flag", "flip flags")
    if not incident.is_open:
        raise TransitionRefused(
            f"INC-{incident.pk} is {incident.status}: reverting flags is closed"
        )
    # The flag before the change rules: of several clicks at one version, those after the first
    # learn who reverted it, not only that a change is now in progress.
    current, target = flag_revert_check(flag_key=flag_key, seen_version=seen_version)
    hypothesis = _change_may_start(incident, revert=True)
    version = flag_revert(
        flag_key=flag_key,
        seen_version=seen_version,
        actor=actor,
        reason=f"INC-{incident.pk}: one-click revert from the incident console",
        source="incident",
        incident_id=incident.pk,
    )
    again = f"{target.settings_text()} again (as in v{target.number})"
    expected_effect = (expected_effect or "").strip()
    expected_effect = expected_effect or f"things improve once {flag_key} is {again}"
    return _change_record(
        incident,
        hypothesis=hypothesis,
        description=(
            f"Revert {flag_key} v{current.number} ({current.settings_text()}) → "
            f"{target.settings_text()}"
        ),
        expected_effect=expected_effect,
        revert_plan=flag_revert_plan(current),
        actor=actor,
        before=current,
        version=version,
        one_click_revert=True,
    )


@transaction.atomic
def break_glass_flip(*, incident_id: int, switch_id: int, on: bool, actor: AbstractBaseUser) -> Any:
    """A pre-authorized kill switch: no approval, loudly recorded on the timeline and the ledger."""
    incident = _lock(incident_id)
    if not incident.is_open:
        raise TransitionRefused(f"INC-{incident.pk} is {incident.status}: break-glass is closed")
    switch = BreakGlassSwitch.objects.select_related("flag").filter(pk=switch_id).first()
    if switch is None:
        raise NotFound(f"no break-glass switch {switch_id}")
    allowed = actor.has_perm("incidents.break_glass") or (
        actor.has_perm("incidents.narrate") and switch.allowed_users.filter(pk=actor.pk).exists()
    )
    if not allowed:
        raise TransitionRefused(f"{actor.get_username()} is not authorized for “{switch.label}”")
    flag = Flag.objects.select_for_update().get(pk=switch.flag_id)
    before = FlagVersion.objects.select_related("flag").get(pk=flag.current_id)
    version = flag_change(
        flag_key=switch.flag.key,
        changes={"enabled": on, "rollout_percentage": 100 if on else 0},
        actor=actor,
        reason=f"BREAK-GLASS during INC-{incident.pk}: {switch.label} {'on' if on else 'off'}",
        source="incident",
        incident_id=incident.pk,
        break_glass=True,
    )
    incident.flags.add(switch.flag)
    _timeline(
        incident,
        kind=TimelineEntry.Kind.BREAK_GLASS,
        text=f"BREAK-GLASS: {switch.label} turned {'ON' if on else 'OFF'} by {_who(actor)} ("
        + (
            flag_move(before, version)
            if version.pk != before.pk
            else f"{flag.key} already {version.settings_text()} (v{version.number})"
        )
        + ")",
        actor=actor,
        data={"flag": switch.flag.key, "on": on, "from": before.number, "version": version.number},
    )
    _ledger(
        incident,
        "incident.break_glass",
        actor,
        {"switch": switch.label, "flag": switch.flag.key, "on": on, "version": version.number},
    )
    console_touch(incident=incident, event="incident.break_glass")
    return version


@transaction.atomic
def action_item_add(
    *,
    incident_id: int,
    title: str,
    owner: str,
    actor: AbstractBaseUser,
    due_on: date | None = None,
) -> ActionItem:
    """A follow-up with an owner and, usually, a due date. On the timeline and in the ledger."""
    incident = _lock(incident_id)
    _require(actor, "incidents.narrate", "add action items")
    title, owner = (title or "").strip(), (owner or "").strip()
    if not title or not owner:
        raise InvalidInput("an action item needs a title and an owner")
    if due_on is not None and due_on < timezone.localdate():
        raise InvalidInput(f"due date {due_on.isoformat()} is in the past")
    item = ActionItem.objects.create(
        incident=incident, title=title[:300], owner=owner[:150], due_on=due_on
    )
    due = f", due {due_on.isoformat()}" if due_on else ""
    _timeline(
        incident,
        kind=TimelineEntry.Kind.SYSTEM,
        text=f"action item: {item.title} (owner {item.owner}{due})",
        actor=actor,
        data={"action_item": item.pk},
    )
    _ledger(
        incident,
        "incident.action_item",
        actor,
        {"title": title, "owner": owner, "due_on": due_on.isoformat() if due_on else None},
    )
    console_touch(incident=incident, event="incident.action_item")
    return item


@transaction.atomic
def action_item_done_set(
    *, incident_id: int, item_id: int, done: bool, actor: AbstractBaseUser
) -> ActionItem:
    """Mark a follow-up done (or not done after all). A second click changes nothing."""
    if not ActionItem.objects.filter(pk=item_id, incident_id=incident_id).exists():
        raise NotFound(f"INC-{incident_id} has no action item {item_id}")
    incident = _lock(incident_id)
    _require(actor, "incidents.narrate", "close action items")
    item = ActionItem.objects.select_for_update().get(pk=item_id)
    if item.done == done:
        return item
    item.done, item.done_at = done, timezone.now() if done else None
    item.done_by = actor if done else None
    item.save(update_fields=["done", "done_at", "done_by"])
    said = "done" if done else "reopened"
    _timeline(
        incident,
        kind=TimelineEntry.Kind.SYSTEM,
        text=f"action item {said}: {item.title}",
        actor=actor,
        data={"action_item": item.pk},
    )
    _ledger(incident, f"incident.action_item_{said}", actor, {"title": item.title})
    console_touch(incident=incident, event=f"incident.action_item_{said}")
    return item


@transaction.atomic
def incident_decision_record(
    *,
    incident_id: int,
    label: str,
    believed: str,
    observed: str,
    why: str,
    actor: AbstractBaseUser,
) -> Decision:
    """A call made in the incident (e.g. "fail over to eu-west"), in the decision log, the ledger
    (by `decision_record`) and on the timeline."""
    incident = _lock(incident_id)
    _require(actor, "incidents.command", "record incident decisions")
    decision = decision_record(
        actor=actor,
        incident_id=incident.pk,
        decided=Decision.Decided.OTHER,
        label=label,
        believed=believed,
        observed=observed,
        why=why,
    )
    _timeline(
        incident,
        kind=TimelineEntry.Kind.DECISION,
        text=f"Decision #{decision.pk}: {decision.label} — {decision.why}",
        actor=actor,
        data={"decision": decision.pk},
    )
    console_touch(incident=incident, event="incident.decision")
    return decision


@transaction.atomic
def incident_system_note(
    *, incident_id: int, text: str, kind: str = TimelineEntry.Kind.SYSTEM, data: dict | None = None
) -> TimelineEntry:
    """Something the platform observed (an alert, a failed verification) on the timeline."""
    incident = _lock(incident_id)
    entry = _timeline(
        incident, kind=kind, text=text, actor=None, author_label="stepwise", data=data
    )
    console_touch(incident=incident, event=f"timeline.{kind}", entry=entry)
    return entry


@transaction.atomic
def break_glass_define(
    *, flag_key: str, label: str, actor: AbstractBaseUser | None, allowed: list[str] | None = None
) -> BreakGlassSwitch:
    """Pre-authorize a kill-switch flag for incidents, before any incident needs it."""
    flag = Flag.objects.filter(key=flag_key).first()
    if flag is None:
        raise InvalidInput(f"no flag {flag_key!r}")
    if flag.kind != Flag.Kind.KILL_SWITCH:
        raise InvalidInput(f"{flag_key} is a {flag.get_kind_display()}, not a kill switch")
    if not (label or "").strip():
        raise InvalidInput("say what the switch does, e.g. shed load")
    users = list(get_user_model().objects.filter(username__in=allowed or []))
    unknown = sorted(set(allowed or []) - {u.get_username() for u in users})
    if unknown:
        raise InvalidInput(f"unknown users: {', '.join(unknown)}")
    # Pre-authorizing is for people on an incident (responders and up): a viewer's role is
    # read-only, and a switch must not be the one write it has.
    readers = sorted(u.get_username() for u in users if not u.has_perm("incidents.narrate"))
    if readers:
        raise InvalidInput(
            f"{', '.join(readers)} may only read (no incident role): a break-glass switch is "
            "for responders, commanders and TPMs"
        )
    switch, _ = BreakGlassSwitch.objects.update_or_create(
        flag=flag, defaults={"label": label.strip()[:100]}
    )
    switch.allowed_users.set(users)
    ledger_append(
        action="break_glass.defined",
        subject=switch,
        actor=actor,
        actor_label=None if actor else "stepwise",
        payload={"flag": flag_key, "label": label, "allowed": sorted(allowed or [])},
    )
    return switch


@transaction.atomic
def postmortem_write(
    *, incident_id: int, summary: str, impact: str, root_cause: str, actor: AbstractBaseUser
) -> Incident:
    """The written parts of the postmortem (the rest is derived from the record)."""
    incident = _lock(incident_id)
    _require(actor, "incidents.command", "write the postmortem")
    if incident.is_open:
        raise TransitionRefused(f"INC-{incident.pk} is {incident.status}: resolve it first")
    before = {
        "summary": incident.summary,
        "impact": incident.impact,
        "root_cause": incident.root_cause,
    }
    incident.summary, incident.impact = summary.strip(), impact.strip()
    incident.root_cause = root_cause.strip()
    incident.save(update_fields=["summary", "impact", "root_cause"])
    changed = sorted(k for k, v in before.items() if v != getattr(incident, k))
    _ledger(incident, "incident.postmortem_written", actor, {"changed": changed})
    return incident


SLO_ALERT_SEVERITY = {
    SLOAlert.Severity.PAGE: Incident.Severity.SEV2,
    SLOAlert.Severity.TICKET: Incident.Severity.SEV3,
}


def incident_declare_from_slo_alert(
    *, alert_id: int, actor: AbstractBaseUser
) -> tuple[Incident, bool]:
    """Declare the incident for a burn-rate alert, or return the open one already declared for it
    (a second click, or a second person). Returns the incident and whether it is new."""
    with transaction.atomic():
        alert = (
            SLOAlert.objects.select_for_update(of=("self",))
            .select_related("slo")
            .filter(pk=alert_id)
            .first()
        )
        if alert is None:
            raise NotFound(f"no SLO alert with id {alert_id}")
        existing = Incident.objects.filter(slo_alert=alert, status__in=Incident.OPEN).first()
        if existing is not None:
            return existing, False
        if alert.resolved_at is not None:
            raise TransitionRefused(
                f"that {alert.severity} alert on {alert.slo.name} resolved at "
                f"{alert.resolved_at:%Y-%m-%d %H:%M} UTC: declare from an open one, or declare "
                "by hand if the service is still hurting"
            )
        slo = alert.slo
        rule = f"{duration_spec(alert.long_window_seconds)} and {duration_spec(alert.short_window_seconds)}"
        incident = incident_declare(
            title=f"{slo.title} burning its error budget at {alert.long_burn_rate:.1f}x",
            severity=SLO_ALERT_SEVERITY[alert.severity],
            summary=(
                f"Burn-rate {alert.severity} alert: over {rule} the error rate burned the budget of "
                f"{slo.name} faster than {alert.burn_rate_threshold:g}x "
                f"({alert.long_burn_rate:.1f}x and {alert.short_burn_rate:.1f}x)."
            ),
            services=[slo.service],
            detected_at=alert.opened_at,
            source=Incident.Source.SLO,
            actor=actor,
            slo_alert_id=alert.pk,
        )
        return incident, True
