"""Incident pages: thin. Each POST validates a form and calls one service; the console learns the
result over the websocket, the acting browser also gets a status line."""

from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from core.errors import InvalidInput, TransitionRefused
from core.http import form_action
from incidents import forms, selectors, services
from incidents.charts import durations_chart
from incidents.models import Incident
from incidents.postmortem import incident_durations, postmortem_build, postmortem_markdown
from live.broadcast import live_streams


def _list_page(
    request: HttpRequest, *, status: str, severity: str, form: forms.DeclareForm, code: int = 200
) -> HttpResponse:
    incidents = selectors.incident_list(status=status, severity=severity)
    durations = incident_durations(incidents)
    return render(
        request,
        "incidents/incident_list.html",
        {
            "incidents": incidents,
            "mttx": durations,
            "mttx_chart": durations_chart(durations["rows"]) if durations["any"] else "",
            "status": status,
            "severity": severity,
            "statuses": ["open", "all", *Incident.Status.values],
            "severities": Incident.Severity.choices,
            "form": form,
        },
        status=code,
    )


@require_GET
def incident_list(request: HttpRequest) -> HttpResponse:
    return _list_page(
        request,
        status=request.GET.get("status", "open"),
        severity=request.GET.get("severity", ""),
        form=forms.DeclareForm(),
    )


@require_POST
@permission_required("incidents.narrate", raise_exception=True)
def incident_declare(request: HttpRequest) -> HttpResponse:
    form = forms.DeclareForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            incident = services.incident_declare(
                title=data["title"],
                severity=data["severity"],
                summary=data["summary"],
                services=form.split(data["services"]),
                plan_keys=form.split(data["plans"]),
                flag_keys=form.split(data["flags"]),
                actor=request.user,
            )
        except (InvalidInput, TransitionRefused) as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("incident-console", incident_id=incident.pk)
    return _list_page(request, status="open", severity="", form=form, code=400)


@require_GET
def incident_console(request: HttpRequest, incident_id: int) -> HttpResponse:
    incident = selectors.incident_get(incident_id=incident_id)
    streams = live_streams(incident.stream)  # before the rows: a change in between is replayed
    context = selectors.console_live_context(incident_id=incident.pk)
    context |= {
        "live": False,
        "live_streams": streams,
        "severities": Incident.Severity.choices,
    }
    return render(request, "incidents/console.html", context)


def _console_action(
    request: HttpRequest,
    incident_id: int,
    form: Any,
    call: Callable[[dict], Any],
    done: str,
) -> HttpResponse:
    selectors.incident_get(incident_id=incident_id)  # 404 for an incident that does not exist
    return form_action(
        request,
        form,
        call,
        done=done,
        back=reverse("incident-console", kwargs={"incident_id": incident_id}),
    )


@require_POST
@permission_required("incidents.narrate", raise_exception=True)
def narrate(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.NarrationForm(request.POST),
        lambda d: services.narration_post(
            incident_id=incident_id, text=d["text"], actor=request.user, corrects_seq=d["corrects"]
        ),
        "posted",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def status_change(request: HttpRequest, incident_id: int) -> HttpResponse:
    form = forms.StatusForm(request.POST)
    return _console_action(
        request,
        incident_id,
        form,
        lambda d: services.incident_status_change(
            incident_id=incident_id, status=d["status"], actor=request.user, reason=d["reason"]
        ),
        f"status: {form.data.get('status', '')}",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def triage(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.TriageForm(request.POST),
        lambda d: services.incident_triage(
            incident_id=incident_id,
            severity=d["severity"],
            services=d["services"],
            actor=request.user,
            reason=d["reason"],
        ),
        "severity and services updated",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def plan_release(request: HttpRequest, incident_id: int) -> HttpResponse:
    form = forms.PlanReleaseForm(request.POST)
    return _console_action(
        request,
        incident_id,
        form,
        lambda d: services.incident_plan_release(
            incident_id=incident_id, plan_key=d["plan"], reason=d["reason"], actor=request.user
        ),
        f"plan {form.data.get('plan', '')} released",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def hypothesis_state(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.HypothesisForm(request.POST),
        lambda d: services.hypothesis_state(
            incident_id=incident_id, statement=d["statement"], actor=request.user
        ),
        "hypothesis stated",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def hypothesis_close(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.HypothesisCloseForm(request.POST),
        lambda d: services.hypothesis_close(
            incident_id=incident_id,
            hypothesis_id=d["hypothesis"],
            confirmed=bool(d["confirmed"]),
            actor=request.user,
        ),
        "hypothesis closed",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def change_start(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.ChangeForm(request.POST),
        lambda d: services.change_start(
            incident_id=incident_id,
            description=d["description"],
            expected_effect=d["expected_effect"],
            revert_plan=d["revert_plan"],
            actor=request.user,
            flag_key=d["flag_key"],
            flag_changes=d["flag_changes"],
        ),
        "change started",
    )


@require_GET
def flag_settings(request: HttpRequest, incident_id: int) -> HttpResponse:
    """The current settings of the flag typed into "Make one change", and its default revert."""
    selectors.incident_get(incident_id=incident_id)
    return render(
        request,
        "incidents/_flag_settings.html",
        selectors.flag_settings_for_change(flag_key=request.GET.get("flag_key", "")),
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def change_verify(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.ChangeVerifyForm(request.POST),
        lambda d: services.change_verify(
            incident_id=incident_id,
            change_id=d["change"],
            better=bool(d["better"]),
            actor=request.user,
            note=d["note"],
        ),
        "change verified",
    )


@require_POST
@permission_required("rollouts.flip_flag", raise_exception=True)
def flag_revert(request: HttpRequest, incident_id: int) -> HttpResponse:
    form = forms.FlagRevertForm(request.POST)
    return _console_action(
        request,
        incident_id,
        form,
        lambda d: services.incident_flag_revert(
            incident_id=incident_id,
            flag_key=d["flag"],
            seen_version=d["seen_version"],
            actor=request.user,
            expected_effect=d["expected_effect"],
        ),
        f"{form.data.get('flag', '')} reverted: verify it under “Now” (better or not better)",
    )


@require_POST
def break_glass(request: HttpRequest, incident_id: int) -> HttpResponse:
    # Who may flip a switch is the switch's own list or the break-glass permission: the
    # service decides, and refuses with the reason.
    return _console_action(
        request,
        incident_id,
        forms.BreakGlassForm(request.POST),
        lambda d: services.break_glass_flip(
            incident_id=incident_id, switch_id=d["switch"], on=bool(d["on"]), actor=request.user
        ),
        "break-glass flipped",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def handover(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.HandoverForm(request.POST),
        lambda d: services.command_handover(
            incident_id=incident_id, to_username=d["username"], actor=request.user
        ),
        "command handed over",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def role_assign(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.RoleForm(request.POST),
        lambda d: services.role_assign(
            incident_id=incident_id, username=d["username"], role=d["role"], actor=request.user
        ),
        "role assigned",
    )


@require_POST
@permission_required("incidents.narrate", raise_exception=True)
def action_item_add(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.ActionItemForm(request.POST),
        lambda d: services.action_item_add(
            incident_id=incident_id,
            title=d["title"],
            owner=d["owner"],
            due_on=d["due_on"],
            actor=request.user,
        ),
        "action item added",
    )


@require_POST
@permission_required("incidents.narrate", raise_exception=True)
def action_item_done(request: HttpRequest, incident_id: int) -> HttpResponse:
    form = forms.ActionItemDoneForm(request.POST)
    return _console_action(
        request,
        incident_id,
        form,
        lambda d: services.action_item_done_set(
            incident_id=incident_id, item_id=d["item"], done=d["done"], actor=request.user
        ),
        "action item updated",
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def incident_decision(request: HttpRequest, incident_id: int) -> HttpResponse:
    return _console_action(
        request,
        incident_id,
        forms.DecisionForm(request.POST),
        lambda d: services.incident_decision_record(
            incident_id=incident_id, actor=request.user, **d
        ),
        "decision recorded",
    )


@require_GET
def incident_postmortem(request: HttpRequest, incident_id: int) -> HttpResponse:
    incident = selectors.incident_get(incident_id=incident_id)
    form = forms.PostmortemForm(
        initial={
            "summary": incident.summary,
            "impact": incident.impact,
            "root_cause": incident.root_cause,
        }
    )
    return render(
        request,
        "incidents/postmortem.html",
        {"pm": postmortem_build(incident), "form": form, "today": timezone.localdate()},
    )


@require_POST
@permission_required("incidents.command", raise_exception=True)
def postmortem_write(request: HttpRequest, incident_id: int) -> HttpResponse:
    selectors.incident_get(incident_id=incident_id)
    return form_action(
        request,
        forms.PostmortemForm(request.POST),
        lambda d: services.postmortem_write(incident_id=incident_id, actor=request.user, **d),
        done="postmortem saved",
        back=reverse("incident-postmortem", kwargs={"incident_id": incident_id}),
    )


@require_GET
def incident_postmortem_markdown(request: HttpRequest, incident_id: int) -> HttpResponse:
    incident = selectors.incident_get(incident_id=incident_id)
    response = HttpResponse(
        postmortem_markdown(postmortem_build(incident)), content_type="text/markdown; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="INC-{incident.pk}-postmortem.md"'
    return response
