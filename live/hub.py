"""One hub per ASGI process: it receives each frame once and writes it to this process's sockets.

With Redis, every process holds one pub/sub subscription on one channel; without it (one process,
embedded mode), a frame committed in this process is handed to the hub's event loop directly.
Pub/sub delivers at most once: a socket that sees a gap in its sequence numbers, or a hub that
lost its subscription, catches up from the database, so nothing is lost.
"""

import asyncio
import contextlib
import contextvars
import json
import logging
import threading
import time
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from core.metrics import LIVE_PUSH_SECONDS
from core.redis import redis_client
from live.replay import stream_replay
from live.streams import cursor_html

logger = logging.getLogger(__name__)

RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0)
# Two processes commit frames N and N+1 and publish them independently: N+1 may arrive first.
# It waits this long for N before it goes out anyway (and the sockets fill the gap by replay).
REORDER_SECONDS = 0.1
# A replay drawn for one socket serves every socket of this process at the same cursor for this
# long: after a gap, hundreds of sockets ask for the same thing at once.
REPLAY_SHARED_SECONDS = 0.5


class Socket(Protocol):
    async def deliver(self, stream: str, seq: int, frame: str) -> None: ...

    async def resync(self) -> None: ...


def pubsub_channel() -> str:
    """Frames of one deployment only: pub/sub channels are shared by every database of a Redis,
    so the channel names the deployment's Redis prefix and its database."""
    return f"{settings.REDIS_PREFIX}:live:{settings.DATABASES['default']['NAME']}"


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sockets: dict[str, set[Socket]] = {}
        self.connected = asyncio.Event()
        self.listener: asyncio.Task | None = None
        self.delivered = 0
        self.expected: dict[str, int] = {}
        self.held: dict[str, dict[int, tuple[str, float | None]]] = {}
        self.replays: dict[tuple[str, int], tuple[float, asyncio.Future]] = {}

    def watch(self, stream: str, socket: Socket) -> None:
        self.sockets.setdefault(stream, set()).add(socket)
        if settings.REDIS_URL and self.listener is None:
            self.listener = self.loop.create_task(self._listen())
        elif not settings.REDIS_URL:
            self.connected.set()

    def forget(self, socket: Socket) -> None:
        for stream in list(self.sockets):
            watchers = self.sockets[stream]
            watchers.discard(socket)
            if not watchers:
                del self.sockets[stream]

    async def ready(self, timeout: float = 5.0) -> bool:
        """Whether frames reach this process now (the subscription is live)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout)
        return self.connected.is_set()

    async def dispatch(
        self, stream: str, seq: int, html: str, sent_at: float | None = None
    ) -> None:
        """Write the frame to this process's sockets; `sent_at` is when it was sent after its
        commit (time.time(), in whichever process committed it)."""
        watchers = list(self.sockets.get(stream, ()))
        frame = html + cursor_html(stream, seq)  # encoded once for every socket
        for socket in watchers:
            try:
                await socket.deliver(stream, seq, frame)
            except Exception:
                logger.exception("live delivery to one socket failed", extra={"stream": stream})
        self.delivered += len(watchers)
        if watchers and sent_at is not None:
            LIVE_PUSH_SECONDS.observe(max(0.0, time.time() - sent_at))

    async def receive(self, stream: str, seq: int, html: str, sent_at: float | None = None) -> None:
        """A frame from Redis (or this process): dispatched in sequence order where it can be."""
        expected = self.expected.get(stream)
        if expected is not None and seq > expected:
            held = self.held.setdefault(stream, {})
            held[seq] = (html, sent_at)
            if len(held) == 1:
                self.loop.call_later(REORDER_SECONDS, self._release_later, stream)
            return
        await self.dispatch(stream, seq, html, sent_at)
        self.expected[stream] = max(seq + 1, expected or 0)
        held = self.held.get(stream, {})
        while self.expected[stream] in held:
            next_seq = self.expected[stream]
            await self.dispatch(stream, next_seq, *held.pop(next_seq))
            self.expected[stream] = next_seq + 1

    def _release_later(self, stream: str) -> None:
        self.loop.create_task(self._release(stream))

    async def _release(self, stream: str) -> None:
        """The frame before these never came: send them anyway; the sockets replay the gap."""
        held = self.held.pop(stream, {})
        for seq in sorted(held):
            await self.dispatch(stream, seq, *held[seq])
            self.expected[stream] = max(seq + 1, self.expected.get(stream, 0))

    async def replay(self, stream: str, after: int) -> tuple[int, str] | None:
        """What a socket at `after` missed on `stream`, drawn once for every socket that asks."""
        now = self.loop.time()
        if len(self.replays) > 1000:
            self.replays = {
                key: entry
                for key, entry in self.replays.items()
                if now - entry[0] < REPLAY_SHARED_SECONDS
            }
        entry = self.replays.get((stream, after))
        if entry is None or (entry[1].done() and now - entry[0] >= REPLAY_SHARED_SECONDS):
            drawing = self.loop.create_task(
                database_sync_to_async(stream_replay)(stream=stream, after=after)
            )
            entry = self.replays[(stream, after)] = (now, drawing)
        return await asyncio.shield(entry[1])

    def schedule(self, stream: str, seq: int, html: str, sent_at: float | None = None) -> None:
        self.loop.create_task(self.receive(stream, seq, html, sent_at))

    async def _listen(self) -> None:
        from redis.asyncio import Redis

        attempt = 0
        while True:
            client = Redis.from_url(settings.REDIS_URL)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(pubsub_channel())
                resubscribed = attempt > 0
                attempt = 0
                self.connected.set()
                if resubscribed:  # frames sent while we were away are in the database
                    await self._resync_all()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    frame = json.loads(message["data"])
                    await self.receive(
                        frame["stream"], frame["seq"], frame["html"], frame.get("sent_at")
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                delay = RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)]
                attempt += 1
                logger.warning("live hub lost Redis (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()

    async def _resync_all(self) -> None:
        sockets = {s for watchers in self.sockets.values() for s in watchers}
        for socket in sockets:
            with contextlib.suppress(Exception):
                await socket.resync()


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}
_hubs_lock = threading.Lock()


def process_hub() -> Hub:
    """The hub of the running event loop (one per ASGI process; tests run a loop each)."""
    loop = asyncio.get_running_loop()
    with _hubs_lock:
        for stale in [other for other in _hubs if other.is_closed()]:
            del _hubs[stale]
        hub = _hubs.get(loop)
        if hub is None:
            hub = _hubs[loop] = Hub(loop)
    return hub


def frame_send(*, stream: str, seq: int, html: str) -> None:
    """Send a committed frame to every process's sockets (called from synchronous code)."""
    sent_at = time.time()
    if settings.REDIS_URL:
        redis_client().publish(
            pubsub_channel(),
            json.dumps({"stream": stream, "seq": seq, "html": html, "sent_at": sent_at}),
        )
        return
    with _hubs_lock:
        hubs = [hub for loop, hub in _hubs.items() if not loop.is_closed()]
    for hub in hubs:
        # A fresh context: the caller's (a sync_to_async thread) must not follow the delivery,
        # or its database reads would queue behind the very call that sent the frame.
        hub.loop.call_soon_threadsafe(
            hub.schedule, stream, seq, html, sent_at, context=contextvars.Context()
        )
