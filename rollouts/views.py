from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from live.broadcast import live_streams
from rollouts import selectors
from rollouts.forms import (
    FlagChangeForm,
    FlagRestoreForm,
    FlagRevertForm,
    PlanActionForm,
    ReconcileForm,
    StepActionForm,
    TargetConfirmForm,
)
from rollouts.models import Deviation, Plan, Step
from rollouts.services import InvalidInput, TransitionRefused
from rollouts.services.deviations import deviation_reconcile
from rollouts.services.flags import FLAGS_STREAM, flag_change, flag_restore, flag_revert
from rollouts.services.steps import plan_transition, step_target_confirm, step_transition


def form_action(
    request: HttpRequest, form: Any, call: Callable[[dict], Any], *, done: str, back: str
) -> HttpResponse:
    """Validate, call one service, and answer: htmx gets a status line (the change itself arrives
    over the websocket); a plain form post gets a redirect with a message."""
    error, status = None, 200
    if not form.is_valid():
        error, status = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()), 400
    else:
        try:
            call(form.cleaned_data)
        except TransitionRefused as exc:
            error, status = str(exc), 409
        except InvalidInput as exc:
            error, status = str(exc), 400
    if request.htmx:
        return render(
            request, "rollouts/_action_result.html", {"error": error, "done": done}, status=status
        )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, done)
    return redirect(back)


@require_GET
def portfolio(request: HttpRequest) -> HttpResponse:
    team, status = request.GET.get("team", ""), request.GET.get("status", "")
    context = {
        "rows": selectors.portfolio(
            team=team, status=status if status in Plan.Status.values else ""
        ),
        "teams": selectors.portfolio_teams(),
        "statuses": Plan.Status.values,
        "team": team,
        "status": status,
    }
    return render(
        request, "rollouts/portfolio.html" + ("#portfolio-table" if request.htmx else ""), context
    )


@require_GET
def plan_detail(request: HttpRequest, key: str) -> HttpResponse:
    plan = selectors.plan_get(key=key)
    streams = live_streams(plan.stream)  # before the rows: a change in between is replayed
    context = {
        **selectors.plan_live_context(plan_id=plan.pk),
        "live": False,
        "live_streams": streams,
        "can_manage": request.user.has_perm("rollouts.manage_plan"),
    }
    return render(request, "rollouts/plan_detail.html", context)


@require_POST
@permission_required("rollouts.manage_plan", raise_exception=True)
def plan_action(request: HttpRequest, key: str) -> HttpResponse:
    plan = selectors.plan_get(key=key)
    form = PlanActionForm(request.POST)
    return form_action(
        request,
        form,
        lambda d: plan_transition(
            plan_id=plan.pk, action=d["action"], actor=request.user, reason=d["reason"]
        ),
        done=f"plan {plan.key}: {form.data.get('action', '')}",
        back=f"/plans/{plan.key}/",
    )


@require_POST
@permission_required("rollouts.manage_plan", raise_exception=True)
def step_action(request: HttpRequest, key: str, step_key: str) -> HttpResponse:
    step = get_object_or_404(Step, plan__key=key, key=step_key)
    # htmx's hx-prompt sends the typed reason as a header.
    form = StepActionForm(
        {
            **request.POST.dict(),
            "reason": request.headers.get("HX-Prompt") or request.POST.get("reason", ""),
        }
    )
    return form_action(
        request,
        form,
        lambda d: step_transition(
            step_id=step.pk, action=d["action"], actor=request.user, reason=d["reason"]
        ),
        done=f"{step.key}: {form.data.get('action', '')} done",
        back=request.POST.get("next") or f"/plans/{key}/",
    )


@require_POST
@permission_required("rollouts.manage_plan", raise_exception=True)
def step_confirm_target(request: HttpRequest, key: str, step_key: str) -> HttpResponse:
    step = get_object_or_404(Step, plan__key=key, key=step_key)
    form = TargetConfirmForm(request.POST)
    return form_action(
        request,
        form,
        lambda d: step_target_confirm(
            step_id=step.pk, target=d["target"], actor=request.user, source="person"
        ),
        done=f"{form.data.get('target', '')} confirmed",
        back=f"/plans/{key}/steps/{step_key}/",
    )


@require_GET
def step_detail(request: HttpRequest, key: str, step_key: str) -> HttpResponse:
    context = selectors.step_page(plan_key=key, step_key=step_key)
    plan = context["plan"]
    context["blockers"] = selectors.step_blockers(step=context["step"])
    context["can_manage"] = request.user.has_perm("rollouts.manage_plan")
    context["live_streams"] = live_streams(plan.stream, f"step:{context['step'].pk}")
    context |= selectors.step_verification_context(step_id=context["step"].pk)
    # The page re-fetches its header and its live region whenever one of its streams pushes.
    partial = {"step-head": "#head", "step-live": "#live"}.get(
        request.htmx.target if request.htmx else "", ""
    )
    return render(request, "rollouts/step_detail.html" + partial, context)


@require_POST
@permission_required("rollouts.manage_plan", raise_exception=True)
def deviation_action(request: HttpRequest, key: str, deviation_id: int) -> HttpResponse:
    deviation = get_object_or_404(Deviation, pk=deviation_id, plan__key=key)
    form = ReconcileForm(request.POST)
    return form_action(
        request,
        form,
        lambda d: deviation_reconcile(
            deviation_id=deviation.pk,
            decision=d["decision"],
            reason=d["reason"],
            actor=request.user,
        ),
        done="deviation reconciled",
        back=f"/plans/{key}/",
    )


@require_GET
def flags_board(request: HttpRequest) -> HttpResponse:
    streams = live_streams(FLAGS_STREAM)
    context = {
        "rows": selectors.flags_board(),
        "live_streams": streams,
        "can_flip": request.user.has_perm("rollouts.flip_flag"),
    }
    return render(request, "rollouts/flags_board.html", context)


@require_GET
def flag_detail(request: HttpRequest, flag_key: str) -> HttpResponse:
    context = {
        **selectors.flag_history(key=flag_key),
        "can_flip": request.user.has_perm("rollouts.flip_flag"),
    }
    context["change_form"] = FlagChangeForm(
        initial={
            "enabled": context["flag"].current.enabled,
            "rollout_percentage": context["flag"].current.rollout_percentage,
        }
    )
    return render(request, "rollouts/flag_detail.html", context)


@require_POST
@permission_required("rollouts.flip_flag", raise_exception=True)
def flag_revert_view(request: HttpRequest, flag_key: str) -> HttpResponse:
    form = FlagRevertForm(request.POST)
    return form_action(
        request,
        form,
        lambda d: flag_revert(
            flag_key=flag_key,
            seen_version=d["seen_version"],
            actor=request.user,
            reason=d["reason"],
            source="board",
        ),
        done=f"{flag_key} reverted",
        back=request.POST.get("next") or "/flags/",
    )


@require_POST
@permission_required("rollouts.flip_flag", raise_exception=True)
def flag_restore_view(request: HttpRequest, flag_key: str) -> HttpResponse:
    form = FlagRestoreForm(request.POST)
    return form_action(
        request,
        form,
        lambda d: flag_restore(
            flag_key=flag_key,
            version_number=d["version"],
            actor=request.user,
            reason=d["reason"],
            source="board",
        ),
        done=f"{flag_key}: restored",
        back=f"/flags/{flag_key}/",
    )


@require_POST
@permission_required("rollouts.flip_flag", raise_exception=True)
def flag_change_view(request: HttpRequest, flag_key: str) -> HttpResponse:
    form = FlagChangeForm(request.POST)
    return form_action(
        request,
        form,
        lambda d: flag_change(
            flag_key=flag_key,
            changes={"enabled": d["enabled"], "rollout_percentage": d["rollout_percentage"]},
            actor=request.user,
            reason=d["reason"],
            source="board",
        ),
        done=f"{flag_key} changed",
        back=f"/flags/{flag_key}/",
    )
