from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet

from ledger.chain import ChainReport, chain_verify
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


def ledger_verify() -> ChainReport:
    return chain_verify(LedgerEntry.objects.order_by("seq").iterator(chunk_size=2000))
