import json

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from accounts.api import api_endpoint
from signals.services import MAX_BATCH, IngestInvalid, IngestTooLarge, samples_ingest


@require_POST
@api_endpoint(scope="metrics:write", permission="signals.add_sample")
def metrics_ingest(request: HttpRequest) -> JsonResponse:
    """Ingest a batch of samples (format: docs/metrics-ingest.md). All or nothing."""
    try:
        body = request.body
    except RequestDataTooBig:
        return JsonResponse(
            {"error": f"the request body is too large; send at most {MAX_BATCH} samples a batch"},
            status=413,
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        return JsonResponse({"error": f"the body is not JSON: {exc}"}, status=400)
    try:
        written = samples_ingest(payload=payload)
    except IngestTooLarge as exc:
        return JsonResponse({"error": str(exc), "limit": MAX_BATCH}, status=413)
    except IngestInvalid as exc:
        return JsonResponse({"error": str(exc), "invalid": exc.problems}, status=400)
    return JsonResponse({"written": written})
