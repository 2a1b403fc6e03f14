"""Drive an ASGI application from a synchronous test, inside the test's database transaction.

`async_to_sync` runs the application on its own event loop while `sync_to_async` calls made by
the application come back to this (the test's) thread, so they see the test's uncommitted rows.
"""

import json
from typing import Any

from asgiref.sync import async_to_sync
from django.utils.datastructures import CaseInsensitiveMapping


class AsgiResponse:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.headers = CaseInsensitiveMapping({k.decode(): v.decode() for k, v in headers})
        self.content = body

    def json(self) -> Any:
        return json.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


class AsgiClient:
    """The subset of django.test.Client's post()/get() the API tests use (HTTP_* headers)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def post(
        self,
        path: str,
        data: bytes | str = b"",
        content_type: str | None = "application/json",
        **extra: str,
    ) -> AsgiResponse:
        body = data.encode() if isinstance(data, str) else data
        return self.request("POST", path, body, content_type, extra)

    def get(self, path: str, **extra: str) -> AsgiResponse:
        return self.request("GET", path, b"", None, extra)

    def request(
        self, method: str, path: str, body: bytes, content_type: str | None, extra: dict
    ) -> AsgiResponse:
        headers = [(b"host", b"testserver")]
        if content_type:
            headers.append((b"content-type", content_type.encode()))
        for name, value in extra.items():
            if name.startswith("HTTP_"):
                headers.append((name[5:].lower().replace("_", "-").encode(), value.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        sent: list[dict] = []

        async def run() -> None:
            pending = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict:
                return pending.pop(0) if pending else {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append(message)

            await self.app(scope, receive, send)

        async_to_sync(run)()
        start = next(m for m in sent if m["type"] == "http.response.start")
        body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return AsgiResponse(start["status"], start.get("headers", []), body_out)
