"""The one synchronous Redis client of a process, for publishing after a commit."""

from typing import Any

from django.conf import settings

_client: Any = None


def redis_client() -> Any:
    """A client with short timeouts: what publishes after a commit runs inside the request, and
    with Redis down the request must not wait for it (readers catch up by their own means)."""
    global _client
    if _client is None:
        from redis import Redis

        _client = Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=0.5,
            socket_timeout=1,
            health_check_interval=30,
        )
    return _client
