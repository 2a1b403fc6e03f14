"""OpenFeature Remote Evaluation Protocol (OFREP) endpoints.

The compiled flag configuration is cached per process, keyed by the flag-config revision. Every
request reads the revision (one indexed single-row query), so a change or a revert is served by
the very next request after it commits, whichever process answers it.
"""

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.http import BadBody, api_endpoint, json_parse
from rollouts.evaluation import (
    FLAG_NOT_FOUND,
    GENERAL,
    PARSE_ERROR,
    EvaluationError,
    FlagConfig,
    config_compile,
    context_validate,
    flag_evaluate,
)
from rollouts.models import Flag, FlagConfigRevision, FlagVersion
from rollouts.services.consumers import flag_consumer_fetch_record, flag_consumer_id_for_token

SCOPE = "flags:evaluate"
PERMISSION = "rollouts.view_flag"
_MAX_COMPILE_ATTEMPTS = 5

_config = FlagConfig(revision=-1, flags={})
_compile_lock = threading.Lock()


def config_cache_clear() -> None:
    """Drop this process's compiled configuration (tests roll the database back under it)."""
    global _config
    _config = FlagConfig(revision=-1, flags={})


_REVISION_SQL = f"SELECT revision FROM {FlagConfigRevision._meta.db_table} WHERE id = 1"


def _revision() -> int:
    # Read on every request, so never cached; a fixed statement skips the ORM's per-call
    # compilation, which cost more than the query itself (bench/RESULTS.md).
    with connection.cursor() as cursor:
        cursor.execute(_REVISION_SQL)
        row = cursor.fetchone()
    return row[0] if row else 0


def _compile_at(revision: int) -> FlagConfig:
    """The configuration exactly at a revision: read the flags, then check nobody committed a
    newer revision in between (each statement sees its own snapshot under READ COMMITTED)."""
    for _ in range(_MAX_COMPILE_ATTEMPTS):
        versions = list(
            FlagVersion.objects.select_related("flag").filter(
                pk__in=Flag.objects.values("current_id")
            )
        )
        after = _revision()
        if after == revision:
            return config_compile(revision=revision, versions=versions)
        revision = after
    raise EvaluationError(GENERAL, "flag configuration changed too often to read; retry")


def config_current() -> FlagConfig:
    """The compiled configuration at the committed revision; rebuilt when the revision moved."""
    return config_at(revision=_revision())


def config_at(*, revision: int) -> FlagConfig:
    """The compiled configuration at `revision`, just read from the database by the caller."""
    global _config
    config = _config
    if config.revision == revision:
        return config
    with _compile_lock:
        if _config.revision != revision:
            _config = _compile_at(revision)
        return _config


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body, separators=(",", ":")).encode()


def context_parse(raw: bytes) -> dict[str, Any]:
    """The evaluation context of a request body, or EvaluationError(PARSE_ERROR/INVALID_CONTEXT)."""
    if not raw.strip():
        return {}
    try:
        payload = json_parse(raw)
    except BadBody as exc:
        raise EvaluationError(PARSE_ERROR, f"request body refused: {exc}") from exc
    if not isinstance(payload, dict):
        raise EvaluationError(PARSE_ERROR, 'request body must be a JSON object: {"context": {}}')
    return context_validate(payload.get("context"))


def _record_fetch(token_id: int | None, revision: int) -> None:
    if token_id is None:
        return
    consumer_id = flag_consumer_id_for_token(token_id=token_id)
    if consumer_id is not None:
        flag_consumer_fetch_record(consumer_id=consumer_id, revision=revision)


def _success(evaluation: Any, revision: int) -> dict[str, Any]:
    return {
        "key": evaluation.key,
        "value": evaluation.value,
        "reason": evaluation.reason,
        "variant": evaluation.variant,
        "metadata": {"revision": revision, "version": evaluation.version},
    }


def single_answer(
    *, key: str, raw: bytes, config: Callable[[], FlagConfig], token_id: int | None
) -> Answer:
    """POST /ofrep/v1/evaluate/flags/{key}, after authentication."""
    try:
        context = context_parse(raw)
        current = config()
    except EvaluationError as exc:
        return Answer(400, {"key": key, "errorCode": exc.code, "errorDetails": exc.details})
    flag = current.flags.get(key)
    if flag is None:
        return Answer(
            404, {"key": key, "errorCode": FLAG_NOT_FOUND, "errorDetails": f"no flag {key!r}"}
        )
    try:
        evaluation = flag_evaluate(flag=flag, context=context)
    except EvaluationError as exc:
        return Answer(400, {"key": key, "errorCode": exc.code, "errorDetails": exc.details})
    # A 200 carrying revision N means this client now evaluates at N or later: it caches nothing.
    _record_fetch(token_id, current.revision)
    return Answer(200, _success(evaluation, current.revision))


def _etag(revision: int, context: dict[str, Any]) -> str:
    # The context is part of the ETag: a context-blind ETag serves another user's values.
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":"), default=str)
    return f'"{revision}-{hashlib.sha256(canonical.encode()).hexdigest()[:20]}"'


def _matches(header: str, etag: str) -> bool:
    return any(candidate.strip().removeprefix("W/") == etag for candidate in header.split(","))


def bulk_answer(
    *, raw: bytes, if_none_match: str, config: Callable[[], FlagConfig], token_id: int | None
) -> Answer:
    """POST /ofrep/v1/evaluate/flags, after authentication: every flag, ETag over revision+context."""
    try:
        context = context_parse(raw)
        current = config()
        etag = _etag(current.revision, context)
    except EvaluationError as exc:
        return Answer(400, {"errorCode": exc.code, "errorDetails": exc.details})
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if _matches(if_none_match, etag):
        _record_fetch(token_id, current.revision)
        return Answer(304, None, headers)
    flags = []
    for flag in current.flags.values():
        try:
            flags.append(_success(flag_evaluate(flag=flag, context=context), current.revision))
        except EvaluationError as exc:
            flags.append({"key": flag.key, "errorCode": exc.code, "errorDetails": exc.details})
    _record_fetch(token_id, current.revision)
    return Answer(200, {"flags": flags, "metadata": {"revision": current.revision}}, headers)


def _respond(answer: Answer) -> HttpResponse:
    response = HttpResponse(
        answer.encoded(),
        status=answer.status,
        content_type="application/json" if answer.body is not None else None,
    )
    for name, value in answer.headers.items():
        response[name] = value
    return response


def _body(request: HttpRequest) -> bytes:
    try:
        return request.body
    except RequestDataTooBig:
        return b"\x00"  # not JSON: answered as PARSE_ERROR like any other unreadable body


def _token_id(request: HttpRequest) -> int | None:
    token = getattr(request, "api_token", None)
    return token.pk if token is not None else None


@csrf_exempt
@require_POST
@api_endpoint(scope=SCOPE, permission=PERMISSION)
def evaluate_flag(request: HttpRequest, key: str) -> HttpResponse:
    """POST /ofrep/v1/evaluate/flags/{key}"""
    return _respond(
        single_answer(
            key=key, raw=_body(request), config=config_current, token_id=_token_id(request)
        )
    )


@csrf_exempt
@require_POST
@api_endpoint(scope=SCOPE, permission=PERMISSION)
def evaluate_flags(request: HttpRequest) -> HttpResponse:
    """POST /ofrep/v1/evaluate/flags"""
    return _respond(
        bulk_answer(
            raw=_body(request),
            if_none_match=request.headers.get("If-None-Match", ""),
            config=config_current,
            token_id=_token_id(request),
        )
    )
