"""The one way any app pushes an update to browsers: persisted with the change, sent after commit."""

import logging
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.template.loader import render_to_string

from live.models import Stream, StreamEvent
from live.streams import stream_dom_id, stream_group, stream_kind

logger = logging.getLogger(__name__)


@transaction.atomic
def stream_publish(
    *, stream: str, event: str, template: str, context: dict[str, Any]
) -> StreamEvent:
    """Number and store the rendered partial inside the caller's transaction; group_send on commit.

    The stream row lock makes sequence order equal commit order for one stream. The partial is
    rendered once for every viewer and without a request, so a form in it carries
    `<input type="hidden" name="csrfmiddlewaretoken" value="{{ csrf_token }}">`, not
    `{% csrf_token %}` (which warns on every such render): empty when pushed, where htmx sends
    the page's token from `<body hx-headers>`, and filled when a view renders the same partial.
    """
    stream_kind(stream)
    Stream.objects.get_or_create(name=stream)
    head = Stream.objects.select_for_update().get(name=stream)
    head.last_seq += 1
    head.save(update_fields=["last_seq"])
    html = render_to_string(template, context)
    stored = StreamEvent.objects.create(stream=head, seq=head.last_seq, event=event, html=html)
    transaction.on_commit(partial(_send, stream=stream, seq=stored.seq, html=html))
    return stored


def _send(*, stream: str, seq: int, html: str) -> None:
    # A lost group message is not a lost update: consumers fill gaps from StreamEvent.
    try:
        async_to_sync(get_channel_layer().group_send)(
            stream_group(stream),
            {"type": "stream.event", "stream": stream, "seq": seq, "html": html},
        )
    except Exception:
        logger.exception(
            "live push failed; browsers will catch up from the database",
            extra={"stream": stream, "seq": seq},
        )


def live_streams(*names: str) -> list[dict[str, Any]]:
    """Cursors a page renders with: the browser resumes each stream after the sequence it was drawn at."""
    heads = dict(Stream.objects.filter(name__in=names).values_list("name", "last_seq"))
    return [{"stream": n, "seq": heads.get(n, 0), "dom_id": stream_dom_id(n)} for n in names]


def stream_events_after(*, stream: str, seq: int, limit: int = 500) -> list[tuple[int, str]]:
    return list(
        StreamEvent.objects.filter(stream_id=stream, seq__gt=seq)
        .order_by("seq")
        .values_list("seq", "html")[:limit]
    )
