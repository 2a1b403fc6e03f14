from django.http import HttpRequest, JsonResponse

from core.http import api_endpoint
from ledger.forms import LedgerFilterForm
from ledger.models import LedgerEntry
from ledger.selectors import ledger_page, ledger_verify


def entry_json(entry: LedgerEntry) -> dict:
    return {
        "seq": entry.seq,
        "created_at": entry.created_at.isoformat(),
        "actor": entry.actor_label,
        "action": entry.action,
        "subject_type": entry.subject_type,
        "subject_id": entry.subject_id,
        "plan_id": entry.plan_id,
        "step_id": entry.step_id,
        "incident_id": entry.incident_id,
        "payload": entry.payload,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


@api_endpoint(method="GET", scope="ledger:read", permission="ledger.view_ledgerentry")
def ledger_entries(request: HttpRequest) -> JsonResponse:
    form = LedgerFilterForm(request.GET)
    if not form.is_valid():
        return JsonResponse(
            {"error": "invalid filter", "fields": form.errors.get_json_data()}, status=400
        )
    page = ledger_page(filters=form.to_filter(), page=request.GET.get("page", 1))
    return JsonResponse(
        {
            "entries": [entry_json(e) for e in page],
            "page": page.number,
            "pages": page.paginator.num_pages,
            "count": page.paginator.count,
        }
    )


@api_endpoint(method="GET", scope="ledger:read", permission="ledger.view_ledgerentry")
def ledger_chain(request: HttpRequest) -> JsonResponse:
    report = ledger_verify()
    body = {"ok": report.ok, "checked": report.checked}
    if report.first_break:
        body["first_break"] = {
            "seq": report.first_break.seq,
            "id": report.first_break.entry_id,
            "reason": report.first_break.reason,
        }
    return JsonResponse(body, status=200 if report.ok else 409)
