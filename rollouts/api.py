from django.http import HttpRequest, JsonResponse

from core.errors import InvalidInput, TransitionRefused
from core.http import BadBody, api_endpoint, json_object_body, refusal_response
from rollouts.forms import DeployWebhookForm, StepActionForm
from rollouts.services.deviations import deploy_report
from rollouts.services.steps import step_transition


@api_endpoint(method="POST", scope="deploys:write", permission="rollouts.view_step")
def deploy_webhook(request: HttpRequest) -> JsonResponse:
    """POST {"service", "version", "target"}: confirms a running deploy step's target, or records a deviation."""
    try:
        body = json_object_body(request)
    except BadBody as exc:
        return exc.response()
    form = DeployWebhookForm(body)
    if not form.is_valid():
        return JsonResponse(
            {"error": "invalid deploy", "fields": form.errors.get_json_data()}, status=400
        )
    try:
        outcome = deploy_report(**form.cleaned_data, actor=request.user)
    except InvalidInput as exc:
        return refusal_response(exc)
    return JsonResponse(outcome, status=202)


@api_endpoint(method="POST", scope="plans:write", permission="rollouts.manage_plan")
def step_action(request: HttpRequest, step_id: int) -> JsonResponse:
    try:
        body = json_object_body(request)
    except BadBody as exc:
        return exc.response()
    form = StepActionForm(body)
    if not form.is_valid():
        return JsonResponse(
            {"error": "invalid action", "fields": form.errors.get_json_data()}, status=400
        )
    try:
        step = step_transition(step_id=step_id, actor=request.user, **form.cleaned_data)
    except (TransitionRefused, InvalidInput) as exc:
        return refusal_response(exc)
    return JsonResponse({"step": step.key, "status": step.status})
