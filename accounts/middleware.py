from collections.abc import Callable

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpRequest, HttpResponse, JsonResponse

from accounts.services import api_token_authenticate

API_PREFIXES = ("/api/", "/ofrep/")


def presented_token(request: HttpRequest) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("X-API-Key") or None


class ApiTokenMiddleware:
    """Authenticate `Authorization: Bearer …` / `X-API-Key` requests as the token's user.

    A presented but invalid token is refused outright rather than falling back to the session,
    so a revoked machine credential can never ride along on a browser cookie. Tokens are read on
    the API paths only: there each endpoint checks the token's scope, while pages check only the
    user's role, so a token scoped to ingest metrics must not reach a page that kills a plan.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.api_token = None
        raw = presented_token(request)
        if raw is not None:
            if not request.path.startswith(API_PREFIXES):
                return JsonResponse(
                    {
                        "error": "API tokens are accepted on "
                        f"{' and '.join(API_PREFIXES)} only; pages need a login"
                    },
                    status=403,
                )
            token = api_token_authenticate(raw=raw)
            if token is None:
                return JsonResponse({"error": "invalid, expired or revoked API token"}, status=401)
            request.user = token.user
            request.api_token = token
            # Bearer tokens are not sent by browsers on their own, so CSRF does not apply.
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
            return JsonResponse(
                {"error": "authentication required: log in or send an API token"}, status=401
            )
        return super().handle_no_permission(request, view_func)
