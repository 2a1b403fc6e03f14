from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from core.errors import InvalidInput
from core.http import form_action, form_submit
from live.broadcast import live_streams
from rollouts import selectors
from rollouts.forms import (
    AssumptionForm,
    AssumptionPolicyForm,
    AssumptionStatusForm,
    BudgetOverrideForm,
    DecisionForm,
    FlagChangeForm,
    FlagRestoreForm,
    FlagRevertForm,
    PlanActionForm,
    ReconcileForm,
    StepActionForm,
    TargetConfirmForm,
    flag_restore_forms,
)
from rollouts.models import Assumption, Decision, Deviation, Plan, Step
from rollouts.services.assumptions import (
    assumption_add,
    assumption_revise,
    assumption_status_set,
    plan_assumption_policy_set,
)
from rollouts.services.decisions import decision_record, step_start_over_budget
from rollouts.services.deviations import deviation_reconcile
from rollouts.services.flags import FLAGS_STREAM, flag_change, flag_restore, flag_revert
from rollouts.services.steps import (
    PERSON,
    plan_transition,
    step_target_confirm,
    step_transition,
)


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


def _plan_page(
    request: HttpRequest, plan: Plan, *, status: int = 200, **extra: Any
) -> HttpResponse:
    """The plan page; a refused or incomplete assumption form comes back with what was typed."""
    streams = live_streams(plan.stream)  # before the rows: a change in between is replayed
    context = {
        **selectors.plan_live_context(plan_id=plan.pk),
        "live": False,
        "live_streams": streams,
        "can_manage": request.user.has_perm("rollouts.manage_plan"),
    }
    context["assumption_form"] = AssumptionForm(steps=[r.step for r in context["rows"]])
    context["policy_form"] = AssumptionPolicyForm(initial={"policy": plan.assumption_policy})
    context["status_form"] = AssumptionStatusForm(
        assumptions=[r.assumption for r in context["assumption_rows"]]
    )
    context |= extra
    return render(request, "rollouts/plan_detail.html", context, status=status)


@require_GET
def plan_detail(request: HttpRequest, key: str) -> HttpResponse:
    return _plan_page(request, selectors.plan_get(key=key))


def _assumption_fields(data: dict) -> dict[str, Any]:
    return {
        "statement": data["statement"],
        "impact": data["impact"],
        "uncertainty": data["uncertainty"],
        "probe": data["probe"],
        "probe_cost": data["probe_cost"],
        "probe_step_id": data["probe_step"],
    }


@require_http_methods(["GET", "POST"])
@permission_required("rollouts.manage_plan", raise_exception=True)
def assumption_edit_view(request: HttpRequest, key: str, assumption_id: int) -> HttpResponse:
    plan = selectors.plan_get(key=key)
    assumption = get_object_or_404(Assumption, pk=assumption_id, plan=plan)
    steps = list(plan.steps.order_by("position"))
    error, status = None, 200
    if request.method == "GET":
        form = AssumptionForm(
            steps=steps,
            initial={
                "statement": assumption.statement,
                "impact": assumption.impact,
                "uncertainty": assumption.uncertainty,
                "probe": assumption.probe,
                "probe_cost": assumption.probe_cost,
                "probe_step": assumption.probe_step_id,
            },
        )
    else:
        form = AssumptionForm(request.POST, steps=steps)
        revised, error, status = form_submit(
            form,
            lambda d: assumption_revise(
                assumption_id=assumption.pk, actor=request.user, **_assumption_fields(d)
            ),
        )
        if revised is not None:
            messages.success(request, f"Assumption revised: now rank {revised.rank}.")
            return redirect(reverse("plan-detail", args=[plan.key]) + "#assumptions")
    return render(
        request,
        "rollouts/assumption_edit.html",
        {"plan": plan, "assumption": assumption, "form": form, "error": error},
        status=status,
    )


@require_POST
@permission_required("rollouts.manage_plan", raise_exception=True)
def assumption_add_view(request: HttpRequest, key: str) -> HttpResponse:
    plan = selectors.plan_get(key=key)
    form = AssumptionForm(request.POST, steps=list(plan.steps.order_by("position")))
    assumption, error, status = form_submit(
        form,
        lambda d: assumption_add(plan_id=plan.pk, actor=request.user, **_assumption_fields(d)),
    )
    if assumption is not None:
        messages.success(request, f"Assumption added at rank {assumption.rank}.")
        return redirect(reverse("plan-detail", args=[plan.key]) + "#assumptions")
    return _plan_page(request, plan, status=status, assumption_form=form, assumption_error=error)


@require_POST
@permission_required("rollouts.manage_plan", raise_exception=True)
def assumption_status_view(request: HttpRequest, key: str) -> HttpResponse:
    """Record what the evidence shows about one of the plan's assumptions."""
    plan = selectors.plan_get(key=key)
    form = AssumptionStatusForm(request.POST, assumptions=list(plan.assumptions.all()))

    def record(data: dict) -> Assumption:
        if not plan.assumptions.filter(pk=data["assumption"]).exists():
            raise InvalidInput(f"plan {plan.key} has no assumption {data['assumption']}")
        return assumption_status_set(
            assumption_id=data["assumption"],
            status=data["status"],
            evidence=data["evidence"],
            actor=request.user,
        )

    assumption, error, status = form_submit(form, record)
    if assumption is not None:
        messages.success(request, f"Recorded: the assumption is {assumption.status}.")
        return redirect(reverse("plan-detail", args=[key]) + f"#assumption-{assumption.pk}")
    return _plan_page(request, plan, status=status, status_form=form, status_error=error)


@require_POST
@permission_required("rollouts.manage_plan", raise_exception=True)
def plan_assumption_policy(request: HttpRequest, key: str) -> HttpResponse:
    plan = selectors.plan_get(key=key)
    form = AssumptionPolicyForm(request.POST)
    return form_action(
        request,
        form,
        lambda d: plan_assumption_policy_set(
            plan_id=plan.pk, policy=d["policy"], actor=request.user
        ),
        done=f"plan {plan.key}: assumption policy {form.data.get('policy', '')}",
        back=reverse("plan-detail", args=[plan.key]) + "#assumptions",
    )


def _decision_form(plan_context: dict[str, Any], *args: Any, **kwargs: Any) -> DecisionForm:
    return DecisionForm(
        *args,
        steps=plan_context["steps"],
        assumptions=plan_context["assumptions"],
        decisions=[r.decision for r in plan_context["rows"]],
        **kwargs,
    )


def _initial_decision(request: HttpRequest, context: dict[str, Any]) -> dict[str, Any]:
    """?assumption=<id> (the "decision needed" banner's link) fills in what prompted it: the
    assumption, its probe step and the evaluation that falsified it."""
    initial: dict[str, Any] = {}
    wanted = request.GET.get("assumption", "")
    assumption = next((a for a in context["assumptions"] if str(a.pk) == wanted), None)
    if assumption is not None:
        initial["assumption"] = assumption.pk
        initial["believed"] = assumption.statement
        if assumption.evidence:
            initial["observed"] = assumption.evidence
        if assumption.evidence_evaluation_id:
            initial["evaluation"] = assumption.evidence_evaluation_id
            initial["step"] = assumption.evidence_evaluation.verification.step_id
        elif assumption.probe_step_id:
            initial["step"] = assumption.probe_step_id
    if (decided := request.GET.get("decided", "")) in Decision.Decided.values:
        initial["decided"] = decided  # "Kill the plan" on the plan page comes with kill chosen
    if (corrects := request.GET.get("corrects", "")).isascii() and corrects.isdigit():
        initial["corrects"] = int(corrects)
    return initial


@require_http_methods(["GET", "POST"])
def plan_decisions_view(request: HttpRequest, key: str) -> HttpResponse:
    """GET: the plan's decision log beside its path. POST (manage_plan): record a decision; a
    refused or incomplete one comes back with what was typed and the reason."""
    plan = selectors.plan_get(key=key)
    if request.method == "POST" and not request.user.has_perm("rollouts.manage_plan"):
        return HttpResponse("Recording a decision needs the tpm role.", status=403)
    context = selectors.plan_decisions(plan=plan)
    error, status = None, 200
    if request.method == "POST":
        form = _decision_form(context, request.POST)
        decision, error, status = form_submit(
            form,
            lambda d: decision_record(
                actor=request.user,
                plan_id=plan.pk,
                believed=d["believed"],
                observed=d["observed"],
                decided=d["decided"],
                why=d["why"],
                would_choose_again=d["would_choose_again"],
                assumption_id=d["assumption"],
                step_id=d["step"],
                evaluation_id=d["evaluation"],
                corrects_id=d["corrects"],
            ),
        )
        if decision is not None:
            killed = " The plan is killed." if decision.decided == "kill" else ""
            messages.success(request, f"Decision #{decision.pk} recorded.{killed}")
            return redirect(reverse("plan-decisions", args=[plan.key]) + f"#decision-{decision.pk}")
    else:
        form = _decision_form(context, initial=_initial_decision(request, context))
    context |= {
        "form": form,
        "decision_error": error,
        "can_manage": request.user.has_perm("rollouts.manage_plan"),
        "question": Decision.DECISIVE_QUESTION,
    }
    return render(request, "rollouts/plan_decisions.html", context, status=status)


@require_GET
def plan_decisions_markdown_view(request: HttpRequest, key: str) -> HttpResponse:
    plan = selectors.plan_get(key=key)
    text = selectors.plan_decisions_markdown(
        plan=plan, base_url=request.build_absolute_uri("/").rstrip("/")
    )
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{plan.key}-decisions.md"'
    return response


# Nothing here writes, so a form post without a CSRF token still gets the reason, not a 403.
@csrf_exempt
def decision_detail(request: HttpRequest, key: str, decision_id: int) -> HttpResponse:
    """GET: the entry on the plan's decision page. Any write: 405, because decisions are
    append-only; the answer says how to correct one instead."""
    decision = get_object_or_404(Decision, pk=decision_id, plan__key=key)
    if request.method in {"GET", "HEAD"}:
        return redirect(reverse("plan-decisions", args=[key]) + f"#decision-{decision.pk}")
    response = JsonResponse(
        {
            "error": f"decisions are append-only: record a correction that references "
            f"#{decision.pk}",
            "correct_at": reverse("plan-decisions", args=[key]) + f"?corrects={decision.pk}",
        },
        status=405,
    )
    response["Allow"] = "GET, HEAD"
    return response


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
            step_id=step.pk,
            target=d["target"],
            actor=request.user,
            source=PERSON,
            reason=d["reason"],
        ),
        done=f"{form.data.get('target', '')} confirmed",
        back=f"/plans/{key}/steps/{step_key}/",
    )


def _step_page_context(request: HttpRequest, key: str, step_key: str) -> dict[str, Any]:
    context = selectors.step_page(plan_key=key, step_key=step_key)
    plan, step = context["plan"], context["step"]
    context |= selectors.step_actions(step=step)
    context["can_manage"] = request.user.has_perm("rollouts.manage_plan")
    context["live_streams"] = live_streams(plan.stream, f"step:{step.pk}")
    context |= selectors.step_verification_context(step_id=step.pk)
    context["override_form"] = BudgetOverrideForm()
    return context


@require_GET
def step_detail(request: HttpRequest, key: str, step_key: str) -> HttpResponse:
    context = _step_page_context(request, key, step_key)
    # The page re-fetches its header and its live regions whenever one of its streams pushes.
    target = request.htmx.target if request.htmx else ""
    if target == "step-verification":  # a running verification polls its own section
        return render(request, "rollouts/_step_verification.html", context)
    partial = {"step-head": "#head", "step-live": "#live", "step-gate": "#gate"}.get(target, "")
    return render(request, "rollouts/step_detail.html" + partial, context)


@require_POST
@permission_required("rollouts.manage_plan", raise_exception=True)
def step_override_budget(request: HttpRequest, key: str, step_key: str) -> HttpResponse:
    """Start a step its error budget gate holds, recording the decision. A refusal or an
    incomplete form shows the page again with what was typed."""
    step = get_object_or_404(Step, plan__key=key, key=step_key)
    form = BudgetOverrideForm(request.POST)
    started, error, status = form_submit(
        form, lambda d: step_start_over_budget(step_id=step.pk, actor=request.user, **d)
    )
    if started is not None:
        messages.success(request, f"{step.key} started over its error budget gate")
        return redirect("step-detail", key, step_key)
    context = _step_page_context(request, key, step_key)
    context |= {"override_form": form, "override_error": error}
    return render(request, "rollouts/step_detail.html", context, status=status)


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


def _flag_context(
    request: HttpRequest, flag_key: str, *, restore: FlagRestoreForm | None = None
) -> dict[str, Any]:
    """The flag page. `restore`, a refused restore form, is shown again in its version's row
    (`refused_row`); the current version has no restore form."""
    context = selectors.flag_history(key=flag_key)
    flag = context["flag"]
    context |= {
        "can_flip": request.user.has_perm("rollouts.flip_flag"),
        # Read before the rows: a change in between is pushed again, never missed.
        "live_streams": live_streams(flag.stream),
        "refused_row": flag_restore_forms(
            context["rows"], current_id=flag.current_id, refused=restore
        ),
        "change_form": FlagChangeForm(
            initial={
                "enabled": flag.current.enabled,
                "rollout_percentage": flag.current.rollout_percentage,
            }
        ),
    }
    return context


@require_GET
def flag_detail(request: HttpRequest, flag_key: str) -> HttpResponse:
    return render(request, "rollouts/flag_detail.html", _flag_context(request, flag_key))


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
    if not form.is_valid() and "version" in form.cleaned_data:
        # A version but no reason: its row shows the form again with the error beside the field.
        context = _flag_context(request, flag_key, restore=form)
        if row := context["refused_row"]:
            if request.htmx:
                response = render(
                    request,
                    "rollouts/_flag_live.html#restore-form",
                    {**context, "r": row},
                    status=400,
                )
                return reswap(retarget(response, f"#restore-v{row['version'].number}"), "outerHTML")
            return render(request, "rollouts/flag_detail.html", context, status=400)
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
