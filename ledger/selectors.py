from dataclasses import dataclass

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import QuerySet

from ledger.anchor import Anchor, anchors_read, entry_mac
from ledger.chain import ChainBreak, ChainReport, chain_verify
from ledger.models import LedgerEntry

PAGE_SIZE = 50


@dataclass(frozen=True)
class LedgerFilter:
    action: str = ""
    subject_type: str = ""
    actor: str = ""
    plan_id: int | None = None
    step_id: int | None = None
    incident_id: int | None = None

    def apply(self, qs: QuerySet[LedgerEntry]) -> QuerySet[LedgerEntry]:
        if self.action:
            qs = qs.filter(action__startswith=self.action)
        if self.subject_type:
            qs = qs.filter(subject_type=self.subject_type)
        if self.actor:
            qs = qs.filter(actor_label=self.actor)
        for field in ("plan_id", "step_id", "incident_id"):
            if (value := getattr(self, field)) is not None:
                qs = qs.filter(**{field: value})
        return qs


def ledger_page(*, filters: LedgerFilter, page: int | str = 1) -> Page:
    qs = filters.apply(LedgerEntry.objects.order_by("-seq"))
    return Paginator(qs, PAGE_SIZE).get_page(page)


def ledger_facets() -> dict[str, list[str]]:
    """Distinct values the filter dropdowns offer."""
    return {
        "actions": list(
            LedgerEntry.objects.order_by("action").values_list("action", flat=True).distinct()
        ),
        "subject_types": list(
            LedgerEntry.objects.order_by("subject_type")
            .values_list("subject_type", flat=True)
            .distinct()
        ),
        "actors": list(
            LedgerEntry.objects.order_by("actor_label")
            .values_list("actor_label", flat=True)
            .distinct()
        ),
    }


# The triggers migrations install on PostgreSQL (ledger 0002, and 0003 in production): the chain
# detects what they would have refused, but a missing or disabled one means someone with owner
# rights was there.
def guard_triggers() -> tuple[str, ...]:
    return (
        ("ledger_append_only", "ledger_no_truncate")
        if settings.PRODUCTION
        else ("ledger_append_only",)
    )


def _guard_problems() -> list[str]:
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'ledger_ledgerentry'::regclass AND NOT tgisinternal"
        )
        found = dict(cursor.fetchall())
    problems = []
    for name in guard_triggers():
        if name not in found:
            problems.append(f"the trigger {name} is missing: the table is not append-only")
        elif found[name] != "O":
            problems.append(f"the trigger {name} is disabled: the table is not append-only")
    return problems


def _anchor_break(checked: int, anchors: list[Anchor]) -> ChainBreak | None:
    """The chain against the newest genuine anchor: it must still hold the head it signed."""
    for anchor in anchors:
        if not anchor.genuine:
            return ChainBreak(
                anchor.seq, None, f"the {anchor.where} anchor is not signed with the ledger key"
            )
    if not anchors:
        return None
    newest = max(anchors, key=lambda a: a.seq)
    if checked == 0:
        return ChainBreak(
            newest.seq,
            None,
            f"the chain is empty but was anchored at seq {newest.seq}: it was emptied",
        )
    if checked < newest.seq:
        return ChainBreak(
            checked + 1,
            None,
            f"the chain ends at seq {checked} but was anchored at seq {newest.seq}: "
            "entries were cut from its end",
        )
    anchored = LedgerEntry.objects.filter(seq=newest.seq).values_list("hash", flat=True).first()
    if anchored != newest.hash:
        return ChainBreak(newest.seq, None, "differs from its anchor: the chain was rewritten")
    return None


def ledger_verify() -> ChainReport:
    """The chain, its MACs, its anchors outside the table and (PostgreSQL) its guard triggers."""
    # Anchors first: they are written after commit, so a chain read after them holds at least
    # what they signed, even while entries are being appended (read the other way round, a
    # commit between the two reads would look like a cut tail).
    anchors = anchors_read()
    report = chain_verify(
        LedgerEntry.objects.order_by("seq").iterator(chunk_size=2000), mac=entry_mac
    )
    if not report.ok:
        return report
    problem = _anchor_break(report.checked, anchors)
    if problem is None and (guards := _guard_problems()):
        problem = ChainBreak(report.checked, None, "; ".join(guards))
    return ChainReport(report.checked, problem)
