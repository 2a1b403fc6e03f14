"""The one way any app pushes an update to browsers.

A service *marks* what it changed (`stream_touch`) inside its transaction and renders nothing.
After commit, each touched stream is drawn once by the renderer its app registered, outside every
domain lock, numbered under the stream's own row lock, and sent. A rolled-back transaction sends
nothing; six touches of one plan in one transaction make one frame.
"""

import hashlib
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction

from live.hub import frame_send
from live.models import Stream, StreamEvent
from live.streams import stream_dom_id, stream_spec

logger = logging.getLogger(__name__)

PRUNE_EVERY = 100

_local = threading.local()

Touch = tuple[str, str | None]


class _Batch:
    """The streams one transaction touched, in the order it touched them."""

    def __init__(self) -> None:
        self.touches: dict[str, list[Touch]] = {}
        self.callback: Callable[[], None] = self.flush
        self.flushed = False

    def pending_on(self, connection: Any) -> bool:
        return (
            not self.flushed
            and connection.in_atomic_block
            and any(entry[1] is self.callback for entry in connection.run_on_commit)
        )

    def flush(self) -> None:
        """Runs at the first of its after-commit callbacks; the rest find it done."""
        if self.flushed:
            return
        self.flushed = True
        if getattr(_local, "batch", None) is self:
            _local.batch = None
        for stream, touches in self.touches.items():
            _push_committed(stream, touches)


def _push_committed(stream: str, touches: list[Touch]) -> None:
    try:
        frame_push(stream=stream, touches=touches)
    except Exception:
        # The change is committed and must not be answered with an error; pages show it at the
        # stream's next frame, or when reloaded.
        logger.exception("live render failed", extra={"stream": stream})


def stream_touch(*, stream: str, event: str, ref: int | str | None = None) -> None:
    """Mark `stream` changed by `event` (and, for a row, which one). Drawn and sent after commit."""
    kind, _ = stream_spec(stream)
    if ref is None and kind.state is None:
        raise ValueError(f"stream {stream!r} is drawn row by row: say which row changed")
    touch = (event, None if ref is None or kind.rows is None else str(ref))
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        _push_committed(stream, [touch])
        return
    batch = getattr(_local, "batch", None)
    if batch is None or not batch.pending_on(connection):
        batch = _local.batch = _Batch()
    batch.touches.setdefault(stream, []).append(touch)
    # One callback per touch, so the batch flushes when the savepoint of *any* touch commits,
    # yet draws each stream once: the first callback flushes, the others find it done.
    transaction.on_commit(batch.callback)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def frame_push(*, stream: str, touches: list[Touch]) -> StreamEvent | None:
    """Draw one frame from committed data, number it and send it once this numbering commits.

    Rendering under the stream's row lock keeps a later number from carrying an older state. A
    state that draws the same as the last one pushed is not pushed again.
    """
    kind, key = stream_spec(stream)
    refs = _unique([ref for _, ref in touches if ref is not None])
    state = kind.rows is None or any(ref is None for _, ref in touches)
    with transaction.atomic():
        Stream.objects.get_or_create(name=stream)
        head = Stream.objects.select_for_update().get(name=stream)
        if state:
            html = kind.state(key)
            digest = hashlib.sha256(html.encode()).hexdigest()
            if digest == head.state_digest:
                return None
            head.state_digest = digest
        else:
            html = kind.rows(key, refs)
            if not html.strip():
                return None
            head.state_digest = ""
        head.last_seq += 1
        head.save(update_fields=["last_seq", "state_digest"])
        stored = StreamEvent.objects.create(
            stream=head,
            seq=head.last_seq,
            event=",".join(_unique([event for event, _ in touches]))[:200],
            state=state,
            refs=[] if state else refs,
        )
        if stored.seq % PRUNE_EVERY == 0:
            StreamEvent.objects.filter(
                stream=head, seq__lte=stored.seq - settings.LIVE_EVENTS_KEPT
            ).delete()
        transaction.on_commit(partial(_send, stream=stream, seq=stored.seq, html=html))
    return stored


def _send(*, stream: str, seq: int, html: str) -> None:
    # A lost frame is not a lost update: sockets fill gaps by replay.
    try:
        frame_send(stream=stream, seq=seq, html=html)
    except Exception:
        logger.exception(
            "live push failed; browsers will catch up from the database",
            extra={"stream": stream, "seq": seq},
        )


def live_streams(*names: str) -> list[dict[str, Any]]:
    """Cursors a page renders with: the browser resumes each stream after the sequence it was drawn at."""
    heads = dict(Stream.objects.filter(name__in=names).values_list("name", "last_seq"))
    return [{"stream": n, "seq": heads.get(n, 0), "dom_id": stream_dom_id(n)} for n in names]
