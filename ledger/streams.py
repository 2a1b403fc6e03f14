"""How the ledger page is drawn for a push: entries, replayed from the chain itself."""

from django.template.loader import render_to_string

from ledger.models import LedgerEntry
from live.streams import stream_kind_register


def entry_rows(key: str, refs: list[str]) -> str:
    return "".join(
        render_to_string("ledger/_entry_row.html", {"entry": entry, "live": True})
        for entry in LedgerEntry.objects.filter(seq__in=refs).order_by("seq")
    )


def register() -> None:
    stream_kind_register(kind="ledger", permission="ledger.view_ledgerentry", rows=entry_rows)
