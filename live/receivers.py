import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpRequest

from live.streams import session_group

logger = logging.getLogger(__name__)


def close_sockets_at_logout(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """An open page stops streaming when its session logs out (in this tab or another)."""
    session = getattr(request, "session", None)
    if session is None or not session.session_key:
        return
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(
            session_group(session.session_key), {"type": "session.ended"}
        )
