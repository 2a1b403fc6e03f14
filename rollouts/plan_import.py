"""Plan import and export pages: paste or upload a plan file, review its diff, apply; download."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from rollouts.models import Decision, Plan
from rollouts.plan_spec import MAX_TEXT_CHARS, PlanSpecInvalid, plan_export
from rollouts.services.plan_apply import PlanApplyRefused, PlanApplyResult, plan_apply

MAX_UPLOAD_BYTES = MAX_TEXT_CHARS


class PlanImportForm(forms.Form):
    text = forms.CharField(
        required=False,
        strip=False,
        max_length=MAX_TEXT_CHARS,
        widget=forms.Textarea(attrs={"rows": 22, "spellcheck": "false", "class": "code"}),
        label="Plan file (YAML)",
    )
    upload = forms.FileField(required=False, label="or upload a .yaml file")
    # What the preview showed; applying uses exactly this text and this base.
    previewed = forms.CharField(required=False, strip=False, widget=forms.HiddenInput)
    base = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    # The adapt decision this re-plan carries out (the decision page links here with it).
    decision = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def plan_text(self) -> str:
        """The text to preview: an uploaded file wins over the text box."""
        upload = self.cleaned_data.get("upload")
        if upload is None:
            return self.cleaned_data.get("text", "")
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"the file is larger than {MAX_UPLOAD_BYTES} bytes")
        try:
            return upload.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise forms.ValidationError(f"the file is not UTF-8 text (byte {exc.start})") from exc


def _render(
    request: HttpRequest,
    *,
    form: PlanImportForm,
    result: PlanApplyResult | None = None,
    errors: list[str] | None = None,
    status: int = 200,
    decision: Decision | None = None,
) -> HttpResponse:
    context = {
        "form": form,
        "decision": decision or (result.decision if result else None),
        "result": result,
        "errors": errors or [],
        "can_apply": request.user.has_perm("rollouts.manage_plan"),
        "import_url": reverse("plan-import"),
        "export_url": reverse("plan-export", kwargs={"key": result.spec.key})
        if result and result.plan
        else None,
    }
    partial = request.htmx and request.htmx.target == "import-result"
    template = "rollouts/plan_import.html" + ("#import-result" if partial else "")
    return render(request, template, context, status=status)


@require_http_methods(["GET", "POST"])
@permission_required("rollouts.view_plan", raise_exception=True)
def plan_import(request: HttpRequest) -> HttpResponse:
    """GET: the form (with ?decision=<id>, a re-plan under that adapt decision, the plan's file
    filled in). POST action=preview: the diff (nothing written). POST action=apply: write."""
    if request.method == "GET":
        return (
            _replan_form(request)
            if request.GET.get("decision")
            else _render(request, form=PlanImportForm())
        )
    form = PlanImportForm(request.POST, request.FILES)
    applying = request.POST.get("action") == "apply"
    if applying and not request.user.has_perm("rollouts.manage_plan"):
        return _render(
            request,
            form=form if form.is_valid() else PlanImportForm(),
            errors=["You may preview plans but not apply them (needs the tpm role)."],
            status=403,
        )
    if not form.is_valid():
        problems = [f"{name}: {' '.join(errs)}" for name, errs in form.errors.items()]
        return _render(request, form=form, errors=problems, status=400)
    try:
        text = form.cleaned_data["previewed"] if applying else form.plan_text()
    except forms.ValidationError as exc:
        return _render(request, form=form, errors=exc.messages, status=400)
    if not text.strip():
        return _render(
            request, form=form, errors=["paste a plan file or choose one to upload"], status=400
        )
    try:
        result = plan_apply(
            text=text,
            actor=request.user,
            dry_run=not applying,
            base_digest=(form.cleaned_data["base"] or None) if applying else None,
            decision_id=form.cleaned_data["decision"],
        )
    except PlanSpecInvalid as exc:
        return _render(request, form=form, errors=[str(e) for e in exc.errors], status=400)
    except PlanApplyRefused as exc:
        return _render(request, form=form, errors=exc.reasons, status=409)
    if not applying:
        # The preview's text and base ride along, so "Apply" writes what was reviewed.
        reviewed = PlanImportForm(
            initial={
                "text": text,
                "previewed": text,
                "base": result.base_digest,
                "decision": form.cleaned_data["decision"],
            }
        )
        return _render(request, form=reviewed, result=result)
    under = f" under adapt decision #{result.decision.pk}" if result.decision else ""
    messages.success(
        request,
        f"Applied plan {result.spec.key}{under}."
        if result.applied
        else "No changes: nothing applied.",
    )
    target = (
        reverse("plan-detail", kwargs={"key": result.plan.key})
        if result.plan
        else reverse("plan-import")
    )
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = target
        return response
    return redirect(target)


def _replan_form(request: HttpRequest) -> HttpResponse:
    """The import form for a re-plan under an adapt decision: the plan's current file to edit."""
    try:
        decision_id = int(request.GET["decision"])
    except ValueError:
        return _render(
            request, form=PlanImportForm(), errors=["decision: not a decision id"], status=400
        )
    decision = Decision.objects.select_related("plan").filter(pk=decision_id).first()
    if decision is None or decision.plan is None:
        return _render(
            request,
            form=PlanImportForm(),
            errors=[f"no plan decision with id {decision_id}"],
            status=404,
        )
    form = PlanImportForm(initial={"text": plan_export(decision.plan), "decision": decision.pk})
    return _render(request, form=form, decision=decision)


@require_GET
@permission_required("rollouts.view_plan", raise_exception=True)
def plan_export_view(request: HttpRequest, key: str) -> HttpResponse:
    plan = Plan.objects.filter(key=key).first()
    if plan is None:
        raise Http404(f"no plan {key}")
    response = HttpResponse(plan_export(plan), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{plan.key}.yaml"'
    return response
