"""The HTTP edge: one JSON-body parser for every API, refusing what the domain cannot hold."""

import json
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse

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
