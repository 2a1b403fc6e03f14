"""Websocket origin check with the port: a page on localhost:9999 must not open a socket to
the app on localhost:8000 with the user's cookie. Channels' AllowedHostsOriginValidator
compares host names only."""

from typing import Any
from urllib.parse import urlparse

from django.conf import settings


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return ""


def same_origin(scope: dict[str, Any]) -> bool:
    """The Origin is the site the socket connects to (scheme-agnostic host and port, as
    Django's CSRF check compares them), or one of CSRF_TRUSTED_ORIGINS."""
    origin = _header(scope, b"origin")
    if not origin or origin == "null":
        return False
    if origin in getattr(settings, "CSRF_TRUSTED_ORIGINS", []):
        return True
    return urlparse(origin).netloc.lower() == _header(scope, b"host").lower()


class SameOriginValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not same_origin(scope):
            await send({"type": "websocket.close", "code": 4403})
            return None
        return await self.application(scope, receive, send)
