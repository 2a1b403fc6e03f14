"""Per-process caches, told by every process when what they hold has changed.

A change calls `invalidation_publish(topic, ...)` inside its transaction; once it commits, this
process forgets at once and every other process hears it on one Redis pub/sub channel (a daemon
thread per serving process, started by `invalidation_listen`). A cache trusts what it holds only
while `invalidation_live()` says the channel is up: without Redis, or while the subscription is
lost, its owner checks the database on every request instead (correct, slower). A subscription
that comes back forgets everything first: what was published while it was down is unknown.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections, transaction

from core.redis import redis_client

logger = logging.getLogger(__name__)

RECONNECT_SECONDS = 0.5
# Between messages the listener asks each topic's `check` this often: a publish lost on its way
# (Redis restarted between commit and publish) is noticed this late at worst.
CHECK_SECONDS = 1.0
CHECK_BACKOFF_SECONDS = 10.0

Forget = Callable[[dict[str, Any]], None]

_forgetters: dict[str, list[Forget]] = {}
_checks: list[Callable[[], None]] = []
_state_lock = threading.Lock()
_state = {"live": False, "detail": "not listening: this process serves from the database"}
_listener: threading.Thread | None = None
_stopping = threading.Event()


def invalidation_on(topic: str, forget: Forget, *, check: Callable[[], None] | None = None) -> None:
    """Call `forget(facts)` when `topic` changes anywhere (facts {} after a resubscription), and
    `check()` about once a second while listening."""
    _forgetters.setdefault(topic, []).append(forget)
    if check is not None:
        _checks.append(check)


def invalidation_publish(topic: str, **facts: Any) -> None:
    """Once the current transaction commits, every process forgets what it holds of `topic`."""
    transaction.on_commit(lambda: _announce(topic, facts))


def invalidation_live() -> bool:
    """True while this process hears every change: cached answers may be served."""
    return _state["live"]


def invalidation_status() -> tuple[bool, str]:
    """(live, what an operator reads in /readyz)."""
    with _state_lock:
        return _state["live"], _state["detail"]


def invalidation_listen() -> None:
    """Start this process's listener (serving processes only; idempotent; nothing without Redis)."""
    global _listener
    if not settings.REDIS_URL:
        _set(False, "no Redis configured: flags and tokens are checked in the database per request")
        return
    with _state_lock:
        if _listener is not None and _listener.is_alive():
            return
        _stopping.clear()
        _listener = threading.Thread(target=_listen_forever, name="invalidation", daemon=True)
        _listener.start()


def invalidation_stop() -> None:
    """Stop this process's listener (tests; a process shutting down): caches stop being trusted."""
    _stopping.set()
    if _listener is not None:
        _listener.join(timeout=5)
    _set(False, "not listening: this process serves from the database")


def channel() -> str:
    return f"{settings.REDIS_PREFIX}:invalidate:{settings.DATABASES['default']['NAME']}"


def _set(live: bool, detail: str) -> None:
    with _state_lock:
        _state["live"], _state["detail"] = live, detail


def _forget(topic: str, facts: dict[str, Any]) -> None:
    for forget in _forgetters.get(topic, ()):
        try:
            forget(facts)
        except Exception:
            logger.exception("forgetting %s failed", topic)


def _forget_all() -> None:
    for topic in list(_forgetters):
        _forget(topic, {})


def _announce(topic: str, facts: dict[str, Any]) -> None:
    _forget(topic, facts)
    if not settings.REDIS_URL:
        return
    try:
        redis_client().publish(channel(), json.dumps({"topic": topic, **facts}))
    except Exception:
        # The change is committed; the other processes' once-a-second check finds a flag change,
        # and their token caches expire (accounts.services.TOKEN_CACHE_SECONDS).
        logger.warning("could not announce a %s change on Redis", topic, exc_info=True)


def _run_checks() -> bool:
    """Run each topic's check; False when one failed (the database may be down)."""
    try:
        for check in _checks:
            check()
        return True
    except Exception:
        # What is held stays served: nothing can change it while the database is down.
        logger.warning("invalidation check failed", exc_info=True)
        return False
    finally:
        # Never keep one of the request threads' pooled connections in this thread.
        connections.close_all()


def _listen_forever() -> None:
    try:
        while not _stopping.is_set():
            try:
                _listen()
            except Exception as exc:
                _set(False, f"notification channel down ({exc}); checking the database per request")
            _stopping.wait(RECONNECT_SECONDS)
    finally:
        connections.close_all()  # this thread's, opened by the checks


def _listen() -> None:
    from redis import Redis

    client = Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=5)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel())
        deadline = time.monotonic() + 5
        while (message := pubsub.get_message(timeout=1.0)) is None or message[
            "type"
        ] != "subscribe":
            if time.monotonic() > deadline:
                raise TimeoutError("no subscription confirmation from Redis")
        _forget_all()
        _set(True, "listening for flag and token changes on Redis pub/sub")
        check_at = time.monotonic() + CHECK_SECONDS
        while not _stopping.is_set():
            message = pubsub.get_message(timeout=CHECK_SECONDS)
            if message is not None and message["type"] == "message":
                facts = json.loads(message["data"])
                _forget(facts.pop("topic"), facts)
            if time.monotonic() >= check_at:
                # After a failure, wait longer: retries every second would push the database
                # pool's reconnection backoff further out, and slow its recovery.
                check_at = time.monotonic() + (
                    CHECK_SECONDS if _run_checks() else CHECK_BACKOFF_SECONDS
                )
    finally:
        _set(False, "notification channel lost; checking the database per request")
        pubsub.close()
        client.close()
