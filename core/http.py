"""The HTTP edge: one JSON-body parser for every API, refusing what the domain cannot hold; one
API guard; one way a refusal becomes a status; one way a form calls a service."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt

from core.errors import InvalidInput, TransitionRefused, refusal_status
from core.text import unsafe_text

MAX_JSON_DEPTH = 32


class BadBody(Exception):
    """A request body the API refuses, with the HTTP status and the reason a client can act on."""

    def __init__(self, status: int, reason: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.status, self.reason, self.path = status, reason, path

    def response(self) -> JsonResponse:
        body: dict[str, Any] = {"error": str(self)}
        if self.path:
            body["field"] = self.path
        return JsonResponse(body, status=self.status)


def _refuse_constant(name: str) -> None:
    raise BadBody(400, f"the body is not JSON: {name} is not a JSON number")


def json_parse(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value in `raw`, or BadBody(400) naming why and where it is refused."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise BadBody(400, f"the body is nested deeper than {max_depth} levels") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadBody(400, f"the body is not JSON: {exc}") from exc
    problem = unsafe_text(value, max_depth=max_depth)
    if problem:
        path, reason = problem
        raise BadBody(400, reason, path=path)
    return value


def json_body(request: HttpRequest, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The request's JSON body: 413 over the size limit (before parsing), 400 when refused."""
    try:
        raw = request.body
    except RequestDataTooBig as exc:
        raise BadBody(413, "the request body is too large") from exc
    return json_parse(raw, max_depth=max_depth)


def json_object_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    value = json_body(request)
    if not isinstance(value, dict):
        raise BadBody(400, "the body must be a JSON object")
    return value


def refusal_response(exc: TransitionRefused | InvalidInput) -> JsonResponse:
    return JsonResponse({"error": str(exc)}, status=refusal_status(exc))


def access_refusal(user: Any, token: Any, *, scope: str, permission: str) -> str | None:
    """Why this caller may not use an API (a token needs `scope`, its user `permission`), or None."""
    if token is not None and not token.allows(scope):
        return f"this token lacks the {scope!r} scope"
    if not user.has_perm(permission):
        return f"{user.get_username()} lacks permission {permission}"
    return None


def api_unauthorized(reason: str, *, invalid_token: bool = False) -> JsonResponse:
    """401 with the challenge RFC 6750 asks for, so a client knows a bearer token is expected."""
    response = JsonResponse({"error": reason}, status=401)
    challenge = 'Bearer realm="stepwise"'
    response["WWW-Authenticate"] = (
        f'{challenge}, error="invalid_token"' if invalid_token else challenge
    )
    return response


@dataclass(frozen=True)
class ApiAccess:
    """What one API endpoint accepts: read by the guard, the OpenAPI check and the route walk."""

    method: str
    scope: str
    permission: str


def api_endpoint(*, method: str, scope: str, permission: str) -> Callable:
    """Guard an API view: one HTTP method; the caller's token needs `scope`, its user
    `permission`. API views never read the session (the token middleware answers 401 before a
    view without a token runs), so they are CSRF-exempt by construction."""
    access = ApiAccess(method=method, scope=scope, permission=permission)

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != method:
                response = JsonResponse(
                    {"error": f"method {request.method} is not allowed here: use {method}"},
                    status=405,
                )
                response["Allow"] = method
                return response
            token = getattr(request, "api_token", None)
            refusal = access_refusal(request.user, token, scope=scope, permission=permission)
            if refusal:
                return JsonResponse(
                    {"error": refusal, "required": {"scope": scope, "permission": permission}},
                    status=403,
                )
            return view(request, *args, **kwargs)

        wrapped.api_access = access
        return wrapped

    return decorator


def _form_problems(form: Any) -> str:
    return "; ".join(
        f"{name}: {' '.join(errors)}" if name != "__all__" else " ".join(errors)
        for name, errors in form.errors.items()
    )


def form_submit(form: Any, call: Callable[[dict], Any]) -> tuple[Any, str | None, int]:
    """Validate `form` and call one service with its cleaned data: (what it returned, None, 200),
    or (None, why, status) with the status `refusal_status` gives (400 for a form error)."""
    if not form.is_valid():
        return None, _form_problems(form), 400
    try:
        return call(form.cleaned_data), None, 200
    except (TransitionRefused, InvalidInput) as exc:
        return None, str(exc), refusal_status(exc)


def form_action(
    request: HttpRequest, form: Any, call: Callable[[dict], Any], *, done: str, back: str
) -> HttpResponse:
    """Validate, call one service, and answer: htmx gets a status line (the change itself arrives
    over the websocket); a plain form post gets a redirect with a message."""
    _, error, status = form_submit(form, call)
    if request.htmx:
        return render(
            request, "core/_action_result.html", {"error": error, "done": done}, status=status
        )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, done)
    # `back` may come from the form's `next`: only ever a path on this site, and a URL, never a
    # view name for redirect() to look up ("0" was one).
    safe = back.startswith("/") and url_has_allowed_host_and_scheme(
        back, {request.get_host()}, require_https=False
    )
    return HttpResponseRedirect(back if safe else "/")
