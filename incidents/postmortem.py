"""The postmortem, drafted from the incident's record (nothing is typed twice), its Markdown export,
and the detect/mitigate/resolve durations the incident list summarizes.

Durations are measured from detection: MTTD is detected → declared (how long until someone said
"this is an incident"), time to mitigate is detected → mitigated, time to resolve is detected →
resolved. A milestone not reached yet has no duration ("—"), never zero.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from core.markdown import md_cell, md_text
from incidents.models import Incident, RoleAssignment
from ledger.models import LedgerEntry
from rollouts.models import Decision, FlagVersion

TO_BE_WRITTEN = "to be written"
NOT_REACHED = "—"
DURATIONS = (
    ("mttd", "Time to declare (MTTD)", "detected → declared", "declared_at"),
    ("mttm", "Time to mitigate (MTTM)", "detected → mitigated", "mitigated_at"),
    ("mttr", "Time to resolve (MTTR)", "detected → resolved", "resolved_at"),
)


def duration_text(delta: timedelta | None) -> str:
    """`1 h 05 min`, `12 min 30 s`, `40 s`; `—` when the milestone was not reached."""
    if delta is None:
        return NOT_REACHED
    seconds = int(delta.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours} h {minutes:02d} min"
    if minutes:
        return f"{sign}{minutes} min {secs:02d} s"
    return f"{sign}{secs} s"


def _since_detection(incident: Incident, field: str) -> timedelta | None:
    at = getattr(incident, field)
    return at - incident.detected_at if at is not None else None


def _text_or_placeholder(text: str) -> dict[str, Any]:
    text = (text or "").strip()
    return {"text": text or TO_BE_WRITTEN, "written": bool(text)}


def _flag_versions(incident: Incident) -> list[FlagVersion]:
    """Versions made while the incident was open: any version of a flag linked to it (a plan step
    may ramp one meanwhile), and every version the console made for this incident (its reason
    names the incident, so a concurrent incident's flips are not counted here)."""
    until = incident.resolved_at or timezone.now()
    made_here = Q(source=FlagVersion.Source.INCIDENT) & (
        Q(reason__startswith=f"INC-{incident.pk}:")
        | Q(reason__contains=f"during INC-{incident.pk}:")
    )
    linked = Q(flag__in=incident.flags.all())
    return list(
        FlagVersion.objects.filter(
            made_here | linked, created_at__gte=incident.declared_at, created_at__lte=until
        )
        .select_related("flag", "author")
        .order_by("created_at", "pk")
    )


def _payload_text(payload: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    return "; ".join(
        f"{key}: {shown(value)}"
        for key, value in payload.items()
        if key != "incident" and value not in ("", None, [])
    )


def postmortem_build(incident: Incident) -> dict[str, Any]:
    """Everything the review needs, read from the record: summary, durations, roles and handovers,
    the timeline, hypotheses, changes with their verdicts, flag versions, linked plans and steps,
    the incident's ledger entries and its action items."""
    roles = list(incident.roles.select_related("user").order_by("assumed_at", "pk"))
    commanders = [r for r in roles if r.role == RoleAssignment.Role.COMMANDER]
    timeline = list(incident.timeline.select_related("corrects").order_by("seq"))
    changes = list(
        incident.changes.select_related(
            "hypothesis", "flag", "flag_version", "started_by", "verified_by"
        ).order_by("started_at", "pk")
    )
    versions = _flag_versions(incident)
    change_of_version = {
        c.flag_version_id: i for i, c in enumerate(changes, 1) if c.flag_version_id
    }
    ledger = list(LedgerEntry.objects.filter(incident_id=incident.pk).order_by("seq"))
    times = [incident.detected_at, incident.declared_at, *(e.created_at for e in timeline)]
    if incident.resolved_at:
        times.append(incident.resolved_at)
    local_days = {timezone.localtime(t).date() for t in times}
    return {
        "incident": incident,
        "id": incident.pk,
        "title": incident.title,
        "severity": incident.get_severity_display(),
        "status": incident.status,
        "source": incident.get_source_display(),
        "services": list(incident.services or []),
        "summary": _text_or_placeholder(incident.summary),
        "impact": _text_or_placeholder(incident.impact),
        "root_cause": _text_or_placeholder(incident.root_cause),
        "declared_by": incident.declared_by.get_username() if incident.declared_by else "",
        "milestones": [
            {"label": label, "at": getattr(incident, field)}
            for label, field in (
                ("detected", "detected_at"),
                ("declared", "declared_at"),
                ("mitigated", "mitigated_at"),
                ("resolved", "resolved_at"),
            )
        ],
        "durations": [
            {
                "key": key,
                "label": label,
                "span": span,
                "delta": _since_detection(incident, field),
                "text": duration_text(_since_detection(incident, field)),
            }
            for key, label, span, field in DURATIONS
        ],
        "commanders": [
            {"user": r.user.get_username(), "assumed_at": r.assumed_at, "until": r.renounced_at}
            for r in commanders
        ],
        "roles": [
            {
                "user": r.user.get_username(),
                "role": r.get_role_display(),
                "assumed_at": r.assumed_at,
                "until": r.renounced_at,
            }
            for r in roles
        ],
        "timeline": [
            {
                "seq": e.seq,
                "at": e.created_at,
                "author": e.author_label,
                "kind": e.kind,
                "kind_label": e.get_kind_display(),
                "text": e.text,
                "system": e.is_system,
                "corrects": e.corrects.seq if e.corrects else None,
            }
            for e in timeline
        ],
        "system_count": sum(1 for e in timeline if e.is_system),
        "hypotheses": [
            {
                "statement": h.statement,
                "status": h.status,
                "author": h.author.get_username(),
                "stated_at": h.created_at,
                "closed_at": h.closed_at,
            }
            for h in incident.hypotheses.select_related("author").order_by("created_at", "pk")
        ],
        "changes": [
            {
                "number": i,
                "description": c.description,
                "hypothesis": c.hypothesis.statement,
                "expected_effect": c.expected_effect,
                "revert_plan": c.revert_plan,
                "status": c.status,
                "verdict": c.get_status_display(),
                "flag": (
                    f"{c.flag.key} v{c.flag_version.number}"
                    if c.flag and c.flag_version
                    else (c.flag.key if c.flag else "")
                ),
                "started_by": c.started_by.get_username(),
                "started_at": c.started_at,
                "verified_by": c.verified_by.get_username() if c.verified_by else "",
                "verified_at": c.verified_at,
                "note": c.verification_note,
            }
            for i, c in enumerate(changes, 1)
        ],
        "flag_versions": [
            {
                "flag": v.flag.key,
                "number": v.number,
                "state": f"{'on' if v.enabled else 'off'} {v.rollout_percentage.normalize():f}%",
                "source": v.get_source_display(),
                "by_incident": v.source == FlagVersion.Source.INCIDENT,
                "change": change_of_version.get(v.pk),
                "restored_from": v.restored_from_id is not None,
                "author": v.author.get_username() if v.author else "stepwise",
                "reason": v.reason,
                "at": v.created_at,
            }
            for v in versions
        ],
        "plans": [
            {"key": p.key, "name": p.name, "status": p.status}
            for p in incident.plans.order_by("key")
        ],
        "steps": [
            {"plan": s.plan.key, "key": s.key, "title": s.title, "status": s.status}
            for s in incident.steps.select_related("plan").order_by("plan__key", "position")
        ],
        "ledger": [
            {
                "seq": e.seq,
                "at": e.created_at,
                "actor": e.actor_label,
                "action": e.action,
                "details": _payload_text(e.payload),
            }
            for e in ledger
        ],
        "decisions": [
            {
                "id": d.pk,
                "label": d.label,
                "believed": d.believed,
                "observed": d.observed,
                "why": d.why,
                "by": d.author.get_username(),
                "at": d.created_at,
            }
            for d in Decision.objects.filter(incident_id=incident.pk)
            .select_related("author")
            .order_by("pk")
        ],
        "action_items": [
            {
                "id": a.pk,
                "title": a.title,
                "owner": a.owner,
                "due_on": a.due_on,
                "done": a.done,
                "done_at": a.done_at,
                "created_at": a.created_at,
            }
            for a in incident.action_items.order_by("created_at", "pk")
        ],
        "spans_days": len(local_days) > 1,
        "generated_at": timezone.now(),
    }


# -- Markdown ---------------------------------------------------------------------------------


def _at(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else NOT_REACHED


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(md_cell(v, empty=NOT_REACHED) for v in row) + " |" for row in rows]
    return lines


def _held(until: datetime | None) -> str:
    return f"until {_at(until)}" if until else "still holds the role"


def postmortem_markdown(data: dict[str, Any]) -> str:
    """The postmortem as Markdown text, for a document or a ticket, safe to publish: every text a
    person wrote goes through `md_text` (it reads as written and renders as text, never as HTML,
    a link or structure)."""
    tz = timezone.get_current_timezone_name()
    out = [f"# INC-{data['id']} postmortem: {md_text(data['title'])}", ""]
    commanders = " → ".join(md_text(c["user"]) for c in data["commanders"]) or "nobody"
    out += [
        f"- **Severity:** {md_text(data['severity'])}",
        f"- **Status:** {md_text(data['status'])}",
        f"- **Services:** {md_text(', '.join(data['services']), empty=NOT_REACHED)}",
        f"- **Commander:** {commanders}",
        f"- **Declared by:** {md_text(data['declared_by'] or data['source'])}",
        *(f"- **{md_text(m['label'].capitalize())}:** {_at(m['at'])}" for m in data["milestones"]),
        f"- Times are {tz}. Drafted by Stepwise from the incident record at "
        f"{_at(data['generated_at'])}.",
        "",
    ]
    for key, heading in (
        ("summary", "Summary"),
        ("impact", "Impact"),
        ("root_cause", "Root cause"),
    ):
        out += [
            f"## {heading}",
            "",
            md_text(data[key]["text"], indent="") if data[key]["written"] else "_to be written_",
            "",
        ]

    out += ["## Durations", "", "Measured from detection.", ""]
    out += _table(
        ["Measure", "Span", "Time"], [(d["label"], d["span"], d["text"]) for d in data["durations"]]
    )
    out.append("")

    out += ["## Command and roles", ""]
    if data["roles"]:
        out += [
            f"- {md_text(r['role'])}: **{md_text(r['user'])}** from {_at(r['assumed_at'])}, {_held(r['until'])}"
            for r in data["roles"]
        ]
    else:
        out.append("- nobody took a role")
    out.append("")

    out += ["## Timeline", ""]
    for e in data["timeline"]:
        system = " _(system)_" if e["system"] else ""
        corrects = f"corrects #{e['corrects']}: " if e["corrects"] else ""
        out.append(
            f"- **{_at(e['at'])}** #{e['seq']} {md_text(e['author'])} ({md_text(e['kind_label'].lower())})"
            f"{system}: {corrects}{md_text(e['text'], empty=NOT_REACHED)}"
        )
    if not data["timeline"]:
        out.append("- nothing recorded")
    out.append("")

    out += ["## Hypotheses", ""]
    out += [
        f"- **{md_text(h['status'])}**: {md_text(h['statement'])} (stated by {md_text(h['author'])} at "
        f"{_at(h['stated_at'])}"
        + (f", closed at {_at(h['closed_at'])})" if h["closed_at"] else ")")
        for h in data["hypotheses"]
    ] or ["- none stated"]
    out.append("")

    out += ["## Changes", ""]
    if data["changes"]:
        out += _table(
            [
                "#",
                "Change",
                "Hypothesis",
                "Expected effect",
                "Revert",
                "Flag",
                "Started",
                "Verdict",
                "Verified by",
                "Note",
            ],
            [
                (
                    c["number"],
                    c["description"],
                    c["hypothesis"],
                    c["expected_effect"],
                    c["revert_plan"],
                    c["flag"],
                    f"{_at(c['started_at'])} by {c['started_by']}",
                    c["verdict"],
                    f"{c['verified_by']} at {_at(c['verified_at'])}" if c["verified_by"] else "",
                    c["note"],
                )
                for c in data["changes"]
            ],
        )
    else:
        out.append("No changes were made under a hypothesis.")
    out.append("")

    out += ["## Flag versions during the incident", ""]
    if data["flag_versions"]:
        out += _table(
            ["Flag", "Version", "State", "Source", "By", "At", "Reason"],
            [
                (
                    v["flag"],
                    f"v{v['number']}",
                    v["state"],
                    v["source"] + (f" (change {v['change']})" if v["change"] else ""),
                    v["author"],
                    _at(v["at"]),
                    v["reason"],
                )
                for v in data["flag_versions"]
            ],
        )
    else:
        out.append("No flag versions were made while the incident was open.")
    out.append("")

    out += ["## Linked plans and steps", ""]
    out += [
        f"- plan {md_text(p['key'])} {md_text(p['name'])} ({md_text(p['status'])})"
        for p in data["plans"]
    ]
    out += [
        f"- step {md_text(s['plan'])}/{md_text(s['key'])} {md_text(s['title'])} "
        f"({md_text(s['status'])})"
        for s in data["steps"]
    ]
    if not data["plans"] and not data["steps"]:
        out.append("- none linked")
    out.append("")

    out += ["## Ledger entries", ""]
    out += [
        f"- #{e['seq']} {_at(e['at'])} {md_text(e['action'])} by {md_text(e['actor'])}"
        + (f": {md_text(e['details'])}" if e["details"] else "")
        for e in data["ledger"]
    ] or ["- none"]
    out.append("")

    out += ["## Decisions", ""]
    out += [
        f"- #{d['id']} **{md_text(d['label'])}** ({md_text(d['by'])}, {_at(d['at'])}): believed "
        f"{md_text(d['believed'])}; observed {md_text(d['observed'])}; because {md_text(d['why'])}"
        for d in data["decisions"]
    ] or ["- none recorded"]
    out.append("")

    out += ["## Action items", ""]
    out += [
        f"- [{'x' if a['done'] else ' '}] {md_text(a['title'])} (owner: {md_text(a['owner'])}"
        + (f", due {a['due_on'].isoformat()}" if a["due_on"] else "")
        + ")"
        for a in data["action_items"]
    ] or ["- none yet"]
    out.append("")
    return "\n".join(out)


# -- List metrics -----------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, spreadsheets' PERCENTILE)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def incident_durations(incidents: Iterable[Incident]) -> dict[str, Any]:
    """Per incident, minutes from detection to declared / mitigated / resolved (None when not
    reached), oldest first; and per measure the count, median and p90 over the incidents that
    reached it."""
    rows = []
    for incident in sorted(incidents, key=lambda i: (i.declared_at, i.pk)):
        row: dict[str, Any] = {
            "id": incident.pk,
            "title": incident.title,
            "severity": incident.get_severity_display(),
            "declared_at": incident.declared_at,
        }
        for key, _label, _span, field in DURATIONS:
            delta = _since_detection(incident, field)
            row[key] = delta.total_seconds() / 60 if delta is not None else None
        rows.append(row)
    summary = []
    for key, label, span, _field in DURATIONS:
        values = [r[key] for r in rows if r[key] is not None]
        summary.append(
            {
                "key": key,
                "label": label,
                "span": span,
                "count": len(values),
                "median": _percentile(values, 0.5) if values else None,
                "p90": _percentile(values, 0.9) if values else None,
            }
        )
    return {"rows": rows, "summary": summary, "any": any(s["count"] for s in summary)}
