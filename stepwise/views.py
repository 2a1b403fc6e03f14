import functools
import sys
from pathlib import Path
from typing import Any

import yaml
from django.contrib.auth.decorators import login_not_required
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from accounts.middleware import API_PREFIXES
from core.http import api_unauthorized
from stepwise.health import readiness_checks
from stepwise.metrics import CONTENT_TYPE, metrics_exposition, metrics_refusal


@login_not_required
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.yaml")


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The JSON API's OpenAPI 3.1 description (stepwise/openapi.yaml), checked against the real
    routes by tests/core/test_api_contract.py."""
    return yaml.safe_load(OPENAPI_DOCUMENT.read_text())


@login_not_required
def api_schema(request: HttpRequest) -> JsonResponse:
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"error": "method not allowed here: use GET"}, status=405)
        response["Allow"] = "GET"
        return response
    return JsonResponse(openapi_document())


@login_not_required
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness_checks()
    ready = all(c.ok for c in checks)
    signed_in = request.user.is_authenticated
    return JsonResponse(
        {
            "status": "ready" if ready else "not ready",
            # Hostnames and database errors are for operators: an anonymous probe (a load
            # balancer) needs only what is down.
            "checks": {
                c.name: {"ok": c.ok, **({"detail": c.detail} if signed_in else {})} for c in checks
            },
        },
        status=200 if ready else 503,
    )


@login_not_required
@csrf_exempt  # reads no session: a token or the peer's address decides
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus scrapes: a token with the metrics:read scope, or an allowed address."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"error": "method not allowed here: use GET"}, status=405)
        response["Allow"] = "GET"
        return response
    refusal = metrics_refusal(
        address=request.META.get("REMOTE_ADDR", ""), token=getattr(request, "api_token", None)
    )
    if refusal is not None:
        status, reason = refusal
        if status == 401:
            return api_unauthorized(reason)
        return JsonResponse({"error": reason}, status=status)
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE)


# Error answers: API clients (/api/, /ofrep/) get JSON with the reason, never an HTML page.


def _api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _api(request):
        return JsonResponse({"error": "bad request"}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _api(request):
        reason = str(exception or "") or "you may not do this"
        return JsonResponse({"error": f"forbidden: {reason}"}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _api(request):
        return JsonResponse({"error": f"no such endpoint: {request.path}"}, status=404)
    return defaults.page_not_found(request, exception)


DATABASE_RETRY_AFTER_SECONDS = 5


def _database_unavailable() -> bool:
    # Django calls this handler inside its `except`, so the exception is still in flight.
    return isinstance(sys.exc_info()[1], OperationalError | InterfaceError)


def server_error(request: HttpRequest) -> HttpResponse:
    """500, except when the database is unreachable or its pool is exhausted: that is a 503 a
    client may retry, and it says when."""
    if _database_unavailable():
        reason = "the database is busy or unreachable; retry shortly"
        if _api(request):
            response = JsonResponse({"error": reason}, status=503)
        else:
            response = HttpResponse(render_to_string("503.html", {"reason": reason}), status=503)
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
    if _api(request):
        return JsonResponse({"error": "internal error: it was logged"}, status=500)
    return defaults.server_error(request)
