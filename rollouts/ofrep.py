"""OpenFeature Remote Evaluation Protocol (OFREP), served ahead of Django's handler.

`ofrep_app` is an ASGI application mounted on /ofrep/ by stepwise/asgi.py: a flag client's
request skips Django's middleware and URL resolution, and, while this process hears every change
(core.invalidation), is answered from memory: the compiled configuration (rollouts.flag_config)
and the token (accounts.services) without a database round trip, the answer's JSON assembled
from fragments encoded once per configuration. Authentication, scope and permission are the same
functions every other API uses. Which revision each consumer was served is gathered in memory
and recorded by a worker task at most once a second per process.
"""

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError

from accounts.services import api_token_authenticate, api_token_cached
from core.errors import NotFound
from core.http import BadBody, access_refusal, json_parse
from core.invalidation import invalidation_listen
from core.metrics import ofrep_observe
from rollouts.evaluation import (
    FLAG_NOT_FOUND,
    PARSE_ERROR,
    SPLIT,
    CompiledFlag,
    EvaluationError,
    FlagConfig,
    bucket,
    context_validate,
    flag_decide,
)
from rollouts.flag_config import config_cached, config_current

logger = logging.getLogger(__name__)

SCOPE = "flags:evaluate"
PERMISSION = "rollouts.view_flag"
PREFIX = "/ofrep/"
BULK_PATH = "/ofrep/v1/evaluate/flags"
MAX_BODY_BYTES = 64 * 1024
DATABASE_RETRY_AFTER_SECONDS = 5
FETCH_FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, payload: dict[str, Any], **headers: str) -> Answer:
    return Answer(status, json.dumps(payload, separators=(",", ":")).encode(), headers)


def _refused(status: int, details: str, **headers: str) -> Answer:
    # OFREP defines no body for 401/403/405/5xx; a reason a person can read costs clients nothing.
    return _json(status, {"errorDetails": details}, **headers)


def _failed(key: str | None, code: str, details: str, status: int = 400) -> Answer:
    payload = {"errorCode": code, "errorDetails": details}
    return _json(status, {"key": key, **payload} if key is not None else payload)


class _Encoded:
    """One configuration's possible answers, each encoded once: a flag has a handful (variant x
    reason), so an answer is joined from bytes instead of serialised per request."""

    def __init__(self, config: FlagConfig) -> None:
        self.config = config
        self._fragments: dict[tuple[str, str, str], bytes] = {}
        # Per flag in key order: (flag, hash prefix, rollout, on, off, no-key answer) for a
        # flag decided by its bucket alone; (flag, None, ...) for one that needs flag_decide.
        self.entries = [
            (
                flag,
                flag.hash_prefix,
                flag.rollout_bp,
                self.fragment(flag, flag.on_variant, SPLIT),
                self.fragment(flag, flag.off_variant, SPLIT),
                _error_fragment(flag.key, *_no_key(flag)),
            )
            if flag.split_only
            else (flag, None, 0, b"", b"", b"")
            for flag in config.flags.values()
        ]

    def fragment(self, flag: CompiledFlag, variant: str, reason: str) -> bytes:
        found = self._fragments.get((flag.key, variant, reason))
        if found is None:
            found = self._fragments[(flag.key, variant, reason)] = json.dumps(
                {
                    "key": flag.key,
                    "value": flag.variants.get(variant),
                    "reason": reason,
                    "variant": variant,
                    "metadata": {"revision": self.config.revision, "version": flag.version},
                },
                separators=(",", ":"),
            ).encode()
        return found


def _error_fragment(key: str, code: str, details: str) -> bytes:
    return json.dumps(
        {"key": key, "errorCode": code, "errorDetails": details}, separators=(",", ":")
    ).encode()


def _no_key(flag: CompiledFlag) -> tuple[str, str]:
    try:
        flag_decide(flag=flag, context={})
    except EvaluationError as exc:
        return exc.code, exc.details
    raise AssertionError(f"{flag.key} decides without a targeting key")


_encoded = _Encoded(FlagConfig(revision=-1, flags={}))


def _encoded_for(config: FlagConfig) -> _Encoded:
    global _encoded
    encoded = _encoded
    if encoded.config is not config:
        encoded = _encoded = _Encoded(config)
    return encoded


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


def single_answer(*, key: str, context: dict[str, Any], config: FlagConfig) -> Answer:
    """POST /ofrep/v1/evaluate/flags/{key}, after authentication."""
    flag = config.flags.get(key)
    if flag is None:
        return _failed(key, FLAG_NOT_FOUND, f"no flag {key!r}", status=404)
    try:
        variant, reason = flag_decide(flag=flag, context=context)
    except EvaluationError as exc:
        return _failed(key, exc.code, exc.details)
    return Answer(200, _encoded_for(config).fragment(flag, variant, reason))


def _etag(revision: int, context: dict[str, Any]) -> str:
    # The context is part of the ETag: a context-blind ETag serves another user's values.
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":"), default=str)
    return f'"{revision}-{hashlib.sha256(canonical.encode()).hexdigest()[:20]}"'


def _matches(header: str, etag: str) -> bool:
    return any(candidate.strip().removeprefix("W/") == etag for candidate in header.split(","))


def bulk_answer(*, context: dict[str, Any], if_none_match: str, config: FlagConfig) -> Answer:
    """POST /ofrep/v1/evaluate/flags, after authentication: every flag, ETag over revision+context."""
    etag = _etag(config.revision, context)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if if_none_match and _matches(if_none_match, etag):
        return Answer(304, b"", headers)
    encoded = _encoded_for(config)
    targeting_key = context.get("targetingKey")
    key = targeting_key.encode() if targeting_key else None
    parts = []
    add = parts.append
    for flag, prefix, rollout, on, off, no_key in encoded.entries:
        if prefix is not None:  # flag_decide's split, without its checks: they hold for it
            add(no_key if key is None else on if bucket(prefix, key) < rollout else off)
            continue
        try:
            add(encoded.fragment(flag, *flag_decide(flag=flag, context=context)))
        except EvaluationError as exc:
            add(_error_fragment(flag.key, exc.code, exc.details))
    body = b'{"flags":[%b],"metadata":{"revision":%d}}' % (b",".join(parts), config.revision)
    return Answer(200, body, headers)


class _Fetches:
    """The newest revision each token was served, handed to a worker task once a second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}
        self._flusher_pid: int | None = None

    def add(self, token_id: int, revision: int) -> None:
        with self._lock:
            if self._pending.get(token_id, -1) < revision:
                self._pending[token_id] = revision

    def take(self) -> dict[int, int]:
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def give_back(self, batch: dict[int, int]) -> None:
        for token_id, revision in batch.items():
            self.add(token_id, revision)

    def start(self) -> None:
        if self._flusher_pid == os.getpid():
            return
        self._flusher_pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="ofrep-fetches", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FETCH_FLUSH_SECONDS)
            fetches_flush()


_fetches = _Fetches()


def fetches_flush() -> None:
    """Hand the revisions served since the last flush to a worker task (the flusher's loop)."""
    from rollouts.tasks import flag_consumers_fetched_task

    batch = _fetches.take()
    if not batch:
        return
    try:
        flag_consumers_fetched_task.delay(sorted(batch.items()))
    except Exception:
        # Bookkeeping only: the flags were served. Kept for the next flush.
        _fetches.give_back(batch)
        logger.warning("could not hand %d consumer fetches to a worker", len(batch), exc_info=True)


def serving_start() -> None:
    """In a serving process: hear flag and token changes, and flush consumer fetches."""
    invalidation_listen()
    _fetches.start()


async def _config() -> FlagConfig:
    return config_cached() or await sync_to_async(config_current)()


async def _token(raw: str) -> Any:
    cached = api_token_cached(raw=raw)
    return cached if cached is not None else await sync_to_async(api_token_authenticate)(raw=raw)


def _route(path: str) -> str | None:
    """None for the bulk path, the flag key for the single one; NotFound otherwise."""
    if path == BULK_PATH:
        return None
    key = path.removeprefix(BULK_PATH + "/")
    if key == path or not key or "/" in key:
        raise NotFound(f"no OFREP endpoint {path}; POST {BULK_PATH} or {BULK_PATH}/{{key}}")
    return key


async def _answer(
    method: str, path: str, headers: dict[bytes, bytes], body: bytes | None
) -> Answer:
    """The answer to one request; `body` None when it was over MAX_BODY_BYTES."""
    try:
        key = _route(path)
    except NotFound as exc:
        return _refused(404, str(exc))
    if method != "POST":
        return _refused(405, f"{method} is not allowed here: OFREP evaluates on POST", Allow="POST")
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    raw = (
        authorization[7:].strip()
        if authorization[:7].lower() == "bearer "
        else headers.get(b"x-api-key", b"").decode("latin-1")
    )
    if not raw:
        return _refused(
            401,
            "send an API token: Authorization: Bearer <token>",
            **{"WWW-Authenticate": "Bearer"},
        )
    token = await _token(raw)
    if token is None:
        return _refused(
            401, "invalid, expired or revoked API token", **{"WWW-Authenticate": "Bearer"}
        )
    if refusal := access_refusal(token.user, token, scope=SCOPE, permission=PERMISSION):
        return _refused(403, refusal)
    if body is None:
        return _failed(key, PARSE_ERROR, f"the request body is over {MAX_BODY_BYTES} bytes")
    content_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip()
    if body.strip() and content_type.lower() != b"application/json":
        return _failed(key, PARSE_ERROR, "send the context as Content-Type: application/json")
    try:
        context = context_parse(body)
        config = await _config()
    except EvaluationError as exc:
        return _failed(key, exc.code, exc.details)
    if key is None:
        answer = bulk_answer(
            context=context,
            if_none_match=headers.get(b"if-none-match", b"").decode("latin-1"),
            config=config,
        )
    else:
        answer = single_answer(key=key, context=context, config=config)
    # A 200 or 304 at revision N means this client now evaluates at N or later.
    if answer.status in (200, 304):
        _fetches.add(token.pk, config.revision)
    return answer


async def _body(receive: Callable[[], Awaitable[dict]]) -> bytes | None:
    """The request body, or None when it is over MAX_BODY_BYTES."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _endpoint(path: str) -> str:
    if path == BULK_PATH:
        return "bulk"
    return "single" if path.startswith(BULK_PATH + "/") else "other"


async def ofrep_app(scope: dict, receive: Callable, send: Callable) -> None:
    """The ASGI application for every path under /ofrep/."""
    started = time.perf_counter()
    headers = dict(scope["headers"])
    try:
        body = await _body(receive)
        answer = await _answer(scope["method"], scope["path"], headers, body)
    except (OperationalError, InterfaceError):
        logger.warning("OFREP answered 503: the database is unavailable", exc_info=True)
        answer = _refused(
            503,
            "the database is busy or unreachable; retry shortly",
            **{"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    except Exception:
        logger.exception("OFREP request failed: %s %s", scope["method"], scope["path"])
        answer = _refused(500, "internal error; the server log has the details")
    response_headers = [
        (b"content-length", str(len(answer.body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    if answer.body:
        response_headers.append((b"content-type", b"application/json"))
    response_headers.extend((k.lower().encode(), v.encode()) for k, v in answer.headers.items())
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": response_headers}
    )
    await send({"type": "http.response.body", "body": answer.body})
    ofrep_observe(
        endpoint=_endpoint(scope["path"]),
        status=answer.status,
        seconds=time.perf_counter() - started,
    )


def ofrep_route(django_app: Callable) -> Callable:
    """HTTP: /ofrep/ to `ofrep_app`, everything else to Django."""

    async def route(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["path"].startswith(PREFIX):
            await ofrep_app(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    return route
