from collections.abc import Callable

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpRequest, HttpResponse, JsonResponse

from accounts.services import api_token_authenticate
from core.http import api_unauthorized

API_PREFIXES = ("/api/", "/ofrep/", "/metrics")
# Served to anyone: the description of the API, not its data.
PUBLIC_API_PATHS = ("/api/schema",)
# A token is authenticated when sent; without one the view decides (/metrics admits the
# addresses in STEPWISE_METRICS_ALLOW_IPS).
TOKEN_OPTIONAL_PATHS = ("/metrics",)


def presented_token(request: HttpRequest) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("X-API-Key") or None


class ApiTokenMiddleware:
    """On the API paths, authenticate `Authorization: Bearer …` / `X-API-Key` as the token's user,
    and nothing else: a browser session is never read there, so no API depends on CSRF, and a
    revoked machine credential can never ride along on a cookie. Missing or bad tokens get 401
    with a `WWW-Authenticate` challenge before any view (or the CSRF check) runs.

    Tokens are refused on pages: there only the user's role is checked, while each API endpoint
    also checks the token's scope, so a token scoped to ingest metrics must not reach a page that
    kills a plan.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.api_token = None
        raw = presented_token(request)
        on_api = request.path.startswith(API_PREFIXES)
        if raw is not None and not on_api:
            return JsonResponse(
                {
                    "error": "API tokens are accepted on "
                    f"{' and '.join(API_PREFIXES)} only; pages need a login"
                },
                status=403,
            )
        if on_api and request.path not in PUBLIC_API_PATHS:
            if raw is None:
                if request.path in TOKEN_OPTIONAL_PATHS:
                    return self.get_response(request)
                return api_unauthorized(
                    "authentication required: send an API token (Authorization: Bearer sw_...); "
                    "the API does not accept a browser session"
                )
            token = api_token_authenticate(raw=raw)
            if token is None:
                return api_unauthorized("invalid, expired or revoked API token", invalid_token=True)
            request.user = token.user
            request.api_token = token
            # The session was not read and bearer tokens are not sent by browsers on their own.
            request._dont_enforce_csrf_checks = True
        return self.get_response(request)


class LoginOrTokenRequiredMiddleware(LoginRequiredMiddleware):
    """Pages redirect to the login form; APIs answer 401 with a JSON reason instead."""

    # Sync-only on purpose: it is the innermost middleware, so the whole stack runs in one
    # thread instead of hopping between thread and event loop around each async-capable
    # MiddlewareMixin (each such hop costs a sync_to_async round trip; bench/RESULTS.md).
    async_capable = False

    def handle_no_permission(self, request: HttpRequest, view_func: Callable) -> HttpResponse:
        if request.path.startswith(API_PREFIXES):
            return api_unauthorized("authentication required: send an API token")
        return super().handle_no_permission(request, view_func)
