from django.http import HttpRequest, JsonResponse

from core.http import BadBody, api_endpoint, json_body
from signals.services import MAX_BATCH, IngestInvalid, IngestTooLarge, samples_ingest


@api_endpoint(method="POST", scope="metrics:write", permission="signals.add_sample")
def metrics_ingest(request: HttpRequest) -> JsonResponse:
    """Ingest a batch of samples (format: docs/metrics-ingest.md). All or nothing."""
    try:
        payload = json_body(request)
    except BadBody as exc:
        if exc.status == 413:
            return JsonResponse(
                {"error": f"{exc}; send at most {MAX_BATCH} samples a batch"}, status=413
            )
        return exc.response()
    try:
        written = samples_ingest(payload=payload)
    except IngestTooLarge as exc:
        return JsonResponse({"error": str(exc), "limit": MAX_BATCH}, status=413)
    except IngestInvalid as exc:
        return JsonResponse({"error": str(exc), "invalid": exc.problems}, status=400)
    return JsonResponse({"written": written})
