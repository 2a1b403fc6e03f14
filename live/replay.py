"""What a browser missed, drawn now from the database: no HTML is kept for replay."""

from live.models import Stream, StreamEvent
from live.streams import stream_spec

STALE_HTML = (
    '<span id="live-status" data-state="stale" hx-swap-oob="true">'
    'Missed too many updates: <a href="">reload</a></span>'
)


def stream_replay(*, stream: str, after: int, limit: int = 500) -> tuple[int, str] | None:
    """What a browser at sequence `after` is missing, drawn now as one frame: `(seq, html)`.

    The state as it is now covers every missed state frame; rows are drawn from their own tables.
    A browser further behind than the kept events gets the state, or is asked to reload.
    """
    kind, key = stream_spec(stream)
    head_seq = Stream.objects.filter(name=stream).values_list("last_seq", flat=True).first() or 0
    if after >= head_seq:
        return None
    missed = list(
        StreamEvent.objects.filter(stream_id=stream, seq__gt=after)
        .order_by("seq")
        .values_list("seq", "state", "refs")[: limit + 1]
    )
    complete = bool(missed) and missed[0][0] == after + 1 and len(missed) <= limit
    if not complete:
        return head_seq, kind.state(key) if kind.state else STALE_HTML
    last_seq = missed[-1][0]
    if kind.rows is None or any(state for _, state, _ in missed):
        return last_seq, kind.state(key)
    refs = list(dict.fromkeys(ref for _, _, refs in missed for ref in refs))
    return last_seq, kind.rows(key, refs)
