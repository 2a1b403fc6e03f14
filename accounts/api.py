from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse, JsonResponse


def api_endpoint(*, scope: str, permission: str) -> Callable:
    """Guard an API view: a token needs `scope`; a logged-in user needs `permission`.

    Session callers keep CSRF protection (the view is not exempted for them); token callers are
    exempted by the token middleware.
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            token = getattr(request, "api_token", None)
            if token is not None and not token.allows(scope):
                return JsonResponse({"error": f"this token lacks the {scope!r} scope"}, status=403)
            if not request.user.has_perm(permission):
                return JsonResponse(
                    {"error": f"{request.user.get_username()} lacks permission {permission}"},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
