"""How the incident console is drawn for a push: the whole live console, or appended entries."""

from django.template.loader import render_to_string

from incidents.models import Incident, TimelineEntry
from incidents.selectors import console_live_context
from live.streams import stream_kind_register


def console_state(key: str) -> str:
    try:
        context = console_live_context(incident_id=int(key))
    except Incident.DoesNotExist:  # deleted since it was touched
        return ""
    return render_to_string("incidents/_console_live.html", context)


def timeline_rows(key: str, refs: list[str]) -> str:
    """Entries appended in sequence order (replay keeps the order)."""
    return "".join(
        render_to_string("incidents/_timeline_append.html", {"entry": entry})
        for entry in TimelineEntry.objects.filter(incident_id=key, pk__in=refs).order_by("seq")
    )


def register() -> None:
    stream_kind_register(
        kind="incident",
        permission="incidents.view_incident",
        state=console_state,
        rows=timeline_rows,
    )
