"""Leadership pages: SLOs worst first, one SLO with its charts, plans at risk. Thin: a selector or
one service per view."""

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.errors import InvalidInput, TransitionRefused
from core.http import form_submit
from incidents.services import incident_declare_from_slo_alert
from leadership import charts, selectors
from leadership.forms import MetricSourceForm, MetricSourceTestForm, OpenSLOImportForm
from leadership.services import (
    metric_source_edit,
    metric_source_register,
    metric_source_retire,
    slos_import,
)
from rollouts.models import Decision
from signals.models import SLO, MetricSource
from signals.openslo import openslo_export
from signals.prometheus import prometheus_probe
from signals.services import slo_spec_of
from signals.slo_spec import SLOInvalid


@require_GET
def slo_overview(request: HttpRequest) -> HttpResponse:
    template = "leadership/slo_overview.html" + ("#slo-table" if request.htmx else "")
    return render(
        request,
        template,
        {"statuses": selectors.slo_overview(), "burn_columns": selectors.OVERVIEW_BURN_WINDOWS},
    )


@require_GET
def slo_detail(request: HttpRequest, name: str) -> HttpResponse:
    page = selectors.slo_page(name=name, with_history=not request.htmx)
    if page is None:
        raise Http404(f"no SLO named {name!r}")
    if request.htmx:
        # The numbers and alerts refresh on their own; the charts stay as drawn.
        return render(request, "leadership/slo_detail.html#slo-live", page)
    slo, markers = page["slo"], page["markers"]
    page["series"] = series = selectors.slo_series(page["status"])
    page["charts"] = {
        "sli": charts.sli_chart(slo, series, markers),
        "budget": charts.budget_chart(series, markers),
        "latency": charts.latency_chart(slo, series, markers),
        "burn": charts.burn_chart(series, page["rules"], markers),
    }
    return render(request, "leadership/slo_detail.html", page)


@require_http_methods(["GET", "POST"])
def slo_import(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "leadership/slo_import.html", {"form": OpenSLOImportForm()})
    if not request.user.has_perm("signals.manage_slo"):
        raise PermissionDenied("importing SLOs needs the tpm role")
    form = OpenSLOImportForm(request.POST, request.FILES)
    problems, imported = [], None
    if form.is_valid():
        try:
            imported = slos_import(
                text=form.cleaned_data["text"], actor=request.user, origin="openslo import"
            )
        except SLOInvalid as exc:
            problems = exc.problems
    status = 400 if problems or not form.is_valid() else 200
    return render(
        request,
        "leadership/slo_import.html",
        {"form": form, "problems": problems, "imported": imported},
        status=status,
    )


@require_GET
def slo_export(request: HttpRequest, name: str = "") -> HttpResponse:
    slos = SLO.objects.select_related("source")
    if name:
        slos = slos.filter(name=name)
        if not slos:
            raise Http404(f"no SLO named {name!r}")
    response = HttpResponse(
        openslo_export([slo_spec_of(slo) for slo in slos]), content_type="application/yaml"
    )
    filename = f"{name or 'slos'}.openslo.yaml"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_POST
@permission_required("incidents.narrate", raise_exception=True)
def slo_alert_declare(request: HttpRequest, alert_id: int) -> HttpResponse:
    back = request.POST.get("back") or reverse("slos")
    try:
        incident, created = incident_declare_from_slo_alert(alert_id=alert_id, actor=request.user)
    except (InvalidInput, TransitionRefused) as exc:
        messages.error(request, str(exc))
        safe = url_has_allowed_host_and_scheme(back, {request.get_host()}, require_https=False)
        return redirect(back if safe else reverse("slos"))
    if not created:
        messages.info(request, f"INC-{incident.pk} is already open for this alert")
    return redirect("incident-console", incident.pk)


@require_GET
def plans_at_risk(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "leadership/plans_at_risk.html",
        {
            "risks": selectors.plans_at_risk(),
            "action_items": selectors.open_action_items(),
            "today": timezone.localdate(),
        },
    )


@require_GET
def decisions(request: HttpRequest) -> HttpResponse:
    # Filters outside their choices are dropped, as on the portfolio: a hand-edited URL shows
    # the unfiltered page rather than an error (or, with a NUL byte, a database refusal).
    team, decided = request.GET.get("team", ""), request.GET.get("decided", "")
    period = request.GET.get("period", "90d")
    if period not in selectors.PERIODS:
        period = "90d"
    if decided not in Decision.Decided.values:
        decided = ""
    if "\x00" in team:
        team = ""
    view = selectors.decisions_overview(team=team, decided=decided, period=period)
    return render(
        request,
        "leadership/decisions.html",
        {
            "view": view,
            "chart": charts.decisions_chart(view.weekly) if view.weekly else "",
            "needing": selectors.plans_needing_decision(),
            "thrashing": selectors.plans_thrashing_now(),
            "team": team,
            "decided": decided,
            "period": period,
            "periods": list(selectors.PERIODS),
            "calls": Decision.Decided.choices,
            "question": Decision.DECISIVE_QUESTION,
            "any_decisions": bool(view.decisions) or Decision.objects.exists(),
        },
    )


# --- metric sources ------------------------------------------------------------------------------
MANAGE_SOURCES = "signals.manage_metric_source"
SOURCES_ORIGIN = "metric sources page"


def _require_manage_sources(request: HttpRequest) -> None:
    if not request.user.has_perm(MANAGE_SOURCES):
        raise PermissionDenied("changing metric sources needs the tpm role")


@require_http_methods(["GET", "POST"])
def metric_sources(request: HttpRequest) -> HttpResponse:
    """Every source with who reads it; writers register a Prometheus source here."""
    form, error, status = MetricSourceForm(), None, 200
    if request.method == "POST":
        _require_manage_sources(request)
        form = MetricSourceForm(request.POST)
        source, error, status = form_submit(
            form,
            lambda data: metric_source_register(actor=request.user, origin=SOURCES_ORIGIN, **data),
        )
        if source is not None:
            messages.success(request, f"Registered {source.name}. Test it below.")
            return redirect("metric-source-detail", source.name)
    return render(
        request,
        "leadership/metric_sources.html",
        {"listed": selectors.metric_sources_listed(), "form": form, "error": error},
        status=status,
    )


def _source_page(
    request: HttpRequest, source: MetricSource, *, status: int = 200, **context: object
) -> HttpResponse:
    if "form" not in context:
        context["form"] = MetricSourceForm(
            editing=True,
            initial={key: getattr(source, key) for key in MetricSourceForm.base_fields},
        )
    return render(
        request,
        "leadership/metric_source_detail.html",
        {
            "source": source,
            "users": selectors.metric_source_users(source),
            "test_form": context.pop("test_form", MetricSourceTestForm()),
            **context,
        },
        status=status,
    )


def _source_or_404(name: str) -> MetricSource:
    source = MetricSource.objects.filter(name=name, kind=MetricSource.Kind.PROMETHEUS).first()
    if source is None:
        raise Http404(f"no Prometheus metric source named {name!r}")
    return source


@require_http_methods(["GET", "POST"])
def metric_source_detail(request: HttpRequest, name: str) -> HttpResponse:
    """One source: its settings (writers edit them), who reads it, a live test, retirement."""
    source = _source_or_404(name)
    if request.method == "GET":
        return _source_page(request, source)
    _require_manage_sources(request)
    form = MetricSourceForm(request.POST, editing=True)
    edited, error, status = form_submit(
        form,
        lambda data: metric_source_edit(
            actor=request.user, origin=SOURCES_ORIGIN, name=source.name, changes=data
        ),
    )
    if edited is not None:
        _, changed = edited
        messages.success(
            request, f"Changed {', '.join(sorted(changed))}." if changed else "Nothing changed."
        )
        return redirect("metric-source-detail", source.name)
    return _source_page(request, source, status=status, form=form, error=error)


@require_POST
def metric_source_test(request: HttpRequest, name: str) -> HttpResponse:
    """Run one live query and show the answer on the source's page, within seconds."""
    _require_manage_sources(request)
    source = _source_or_404(name)
    form = MetricSourceTestForm(request.POST)
    if not form.is_valid():
        return _source_page(request, source, status=400, test_form=form)
    probe = prometheus_probe(source=source, promql=form.cleaned_data["query"])
    return _source_page(request, source, test_form=form, probe=probe)


@require_POST
def metric_source_retire_view(request: HttpRequest, name: str) -> HttpResponse:
    _require_manage_sources(request)
    source, users = metric_source_retire(
        actor=request.user, origin=SOURCES_ORIGIN, name=_source_or_404(name).name
    )
    messages.success(request, f"Retired {source.name}: no new SLO or step may read it.")
    if users:
        messages.warning(
            request, f"Still read by {', '.join(users)}: they keep reading it until changed."
        )
    return redirect("metric-source-detail", source.name)
