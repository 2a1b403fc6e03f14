"""Liveness and readiness: what an orchestrator or an operator asks before sending traffic."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.invalidation import invalidation_status
from stepwise.models import WorkerHeartbeat


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def worker_heartbeat_record(*, hostname: str) -> None:
    """Operational bookkeeping, not domain state: no ledger entry, no broadcast."""
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"seen_at": timezone.now()}
    )


def _check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check("database", True, f"{connection.vendor} reachable")
    except Exception as exc:
        return Check("database", False, f"{connection.vendor} unreachable: {exc}")


def _check_redis() -> Check:
    if not settings.REDIS_URL:
        return Check(
            "redis", True, "not configured: embedded in-memory channel layer and filesystem broker"
        )
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
        return Check("redis", True, "reachable")
    except Exception as exc:
        return Check("redis", False, f"unreachable: {exc}")


def _check_worker() -> Check:
    max_age = settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS
    try:
        latest = WorkerHeartbeat.objects.order_by("-seen_at").first()
    except Exception as exc:
        return Check("worker", False, f"heartbeat unreadable: {exc}")
    if latest is None:
        return Check("worker", False, "no Celery worker has reported a heartbeat yet")
    age = timezone.now() - latest.seen_at
    if age > timedelta(seconds=max_age):
        return Check(
            "worker",
            False,
            f"last heartbeat from {latest.hostname} {int(age.total_seconds())}s ago (limit {max_age}s)",
        )
    return Check("worker", True, f"{latest.hostname} seen {int(age.total_seconds())}s ago")


def _check_serving_caches() -> Check:
    # Never not-ready: without the channel a process answers from the database, correct but slower.
    live, detail = invalidation_status()
    return Check("flag_cache", True, ("answering from memory: " if live else "") + detail)


def readiness_checks() -> list[Check]:
    return [_check_database(), _check_redis(), _check_worker(), _check_serving_caches()]
