"""One websocket per page. The browser says which streams it shows and the last sequence it has;
the consumer replays from the database, then forwards live events, filling any gap from the
database again. Consumers only read: user actions arrive over HTTP."""

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.html import escape

from core.http import BadBody, json_parse
from core.metrics import LIVE_WEBSOCKETS
from live.hub import process_hub
from live.streams import (
    StreamNameInvalid,
    cursor_html,
    session_group,
    stream_permission,
)

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
MAX_STREAMS = 20


class RefusedRequest(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _status_html(state: str, text: str) -> str:
    return f'<span id="live-status" data-state="{state}" hx-swap-oob="true">{escape(text)}</span>'


def _parse_resume(text: str | None) -> dict[str, int]:
    try:
        message = json_parse(text or "", max_depth=3)
    except BadBody as exc:
        raise RefusedRequest(CLOSE_BAD_REQUEST, f"replay request refused: {exc}") from exc
    if not isinstance(message, dict) or message.get("type") != "resume":
        raise RefusedRequest(
            CLOSE_BAD_REQUEST, 'expected {"type": "resume", "cursors": {stream: seq}}'
        )
    cursors = message.get("cursors")
    if not isinstance(cursors, dict) or not cursors or len(cursors) > MAX_STREAMS:
        raise RefusedRequest(
            CLOSE_BAD_REQUEST,
            f"cursors must map 1 to {MAX_STREAMS} stream names to sequence numbers",
        )
    parsed: dict[str, int] = {}
    for stream, seq in cursors.items():
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise RefusedRequest(
                CLOSE_BAD_REQUEST, f"cursor for {stream!r} must be a non-negative integer"
            )
        try:
            stream_permission(stream)
        except StreamNameInvalid as exc:
            raise RefusedRequest(CLOSE_BAD_REQUEST, str(exc)) from exc
        parsed[stream] = seq
    return parsed


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.cursors: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self.poller: asyncio.Task | None = None
        self.session_group = ""
        self.counted = False
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.accept()
        LIVE_WEBSOCKETS.inc()
        self.counted = True
        session = self.scope.get("session")
        if session is not None and session.session_key:
            self.session_group = session_group(session.session_key)
            await self.channel_layer.group_add(self.session_group, self.channel_name)

    async def session_ended(self, message: dict) -> None:
        """The user logged out in some tab: this socket was opened with that session."""
        await self.send(text_data=_status_html("error", "Signed out: live updates stopped"))
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            LIVE_WEBSOCKETS.dec()
            self.counted = False
        if self.poller:
            self.poller.cancel()
        if self.session_group:
            await self.channel_layer.group_discard(self.session_group, self.channel_name)
        process_hub().forget(self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            cursors = _parse_resume(text_data)
            user = self.scope["user"]
            for stream in cursors:
                if not await database_sync_to_async(user.has_perm)(stream_permission(stream)):
                    raise RefusedRequest(CLOSE_FORBIDDEN, f"you may not watch {stream}")
        except RefusedRequest as refused:
            logger.info(
                "live request refused",
                extra={"reason": refused.reason, "user": str(self.scope["user"])},
            )
            await self.send(
                text_data=_status_html("error", f"Live updates refused: {refused.reason}")
            )
            await self.close(code=refused.code)
            return
        hub = process_hub()
        async with self.lock:
            for stream, seq in cursors.items():
                hub.watch(stream, self)
                self.cursors[stream] = max(seq, self.cursors.get(stream, 0))
        # Catch up only once frames reach this process: what commits after the read is pushed.
        await hub.ready()
        for stream in cursors:
            await self._catch_up(stream)
        await self.send(text_data=_status_html("live", "Live"))
        if self.poller is None:
            self.poller = asyncio.create_task(self._poll())

    async def deliver(self, stream: str, seq: int, frame: str) -> None:
        """The process hub hands over a frame: sent if it is the next one, else the gap is filled
        from the database."""
        async with self.lock:
            cursor = self.cursors.get(stream)
            if cursor is None or seq <= cursor:
                return
            if seq == cursor + 1:
                self.cursors[stream] = seq
                await self.send(text_data=frame)
                return
        await self._catch_up(stream)

    async def resync(self) -> None:
        """Frames may have been lost (the hub lost Redis): catch up every stream."""
        for stream in list(self.cursors):
            await self._catch_up(stream)

    async def _catch_up(self, stream: str) -> None:
        async with self.lock:
            missed = await process_hub().replay(stream, self.cursors[stream])
            if missed is not None:
                seq, html = missed
                self.cursors[stream] = seq
                await self.send(text_data=html + cursor_html(stream, seq))

    async def _poll(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(settings.LIVE_POLL_SECONDS)
                for stream in list(self.cursors):
                    await self._catch_up(stream)
