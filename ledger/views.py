from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from ledger.forms import LedgerFilterForm, ManualEntryForm
from ledger.selectors import LedgerFilter, ledger_facets, ledger_page, ledger_verify
from ledger.services import LEDGER_STREAM, LedgerError, ledger_record_manual
from live.broadcast import live_streams


def _render_ledger(
    request: HttpRequest, *, form: ManualEntryForm, status: int = 200
) -> HttpResponse:
    filter_form = LedgerFilterForm(request.GET)
    filters = filter_form.to_filter()
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        # The cursor is read before the rows: a row committed in between is replayed, never skipped.
        "live_streams": live_streams(LEDGER_STREAM),
        "page": ledger_page(filters=filters, page=request.GET.get("page", 1)),
        "filter_form": filter_form,
        "filtered": filters != LedgerFilter(),
        "facets": ledger_facets(),
        "query": query.urlencode(),
        "form": form,
        "can_record": request.user.has_perm("ledger.record_entry"),
    }
    partial = request.htmx and request.htmx.target == "ledger-table"
    return render(
        request,
        "ledger/ledger_list.html" + ("#ledger-table" if partial else ""),
        context,
        status=status,
    )


@require_GET
@permission_required("ledger.view_ledgerentry", raise_exception=True)
def ledger_list(request: HttpRequest) -> HttpResponse:
    return _render_ledger(request, form=ManualEntryForm())


@require_GET
@permission_required("ledger.view_ledgerentry", raise_exception=True)
def ledger_verify_view(request: HttpRequest) -> HttpResponse:
    return render(request, "ledger/_verify_result.html", {"report": ledger_verify()})


@require_POST
@permission_required("ledger.record_entry", raise_exception=True)
def ledger_record(request: HttpRequest) -> HttpResponse:
    form = ManualEntryForm(request.POST)
    if form.is_valid():
        try:
            ledger_record_manual(actor=request.user, **form.cleaned_data)
        except LedgerError as exc:
            form.add_error(None, str(exc))
    if request.htmx:
        context = {"form": form if form.errors else ManualEntryForm(), "can_record": True}
        return render(
            request,
            "ledger/ledger_list.html#record-form",
            context,
            status=400 if form.errors else 200,
        )
    if form.errors:
        return _render_ledger(request, form=form, status=400)
    return redirect("ledger:list")
