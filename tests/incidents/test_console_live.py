"""The console's websocket: narration is stored, then pushed to every open console in order,
escaped; a reconnecting console replays what it missed; another origin is refused."""

import json

import pytest
from channels.db import database_sync_to_async as sync_to_async

from incidents.services import incident_declare, narration_post
from tests.live.test_consumers import _close_thread_connections, _connect  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def people(role_user):
    return {"commander": role_user("commander"), "viewer": role_user("viewer")}


async def test_console_stream__narration__pushed_escaped_in_sequence(people):
    incident = await sync_to_async(incident_declare)(
        title="Checkout errors", severity=1, actor=people["commander"]
    )
    stream = incident.stream
    communicator, connected, _ = await _connect(people["viewer"])
    assert connected
    head = incident.last_seq  # the declaration's entries are already on the page
    events_before = await sync_to_async(_stream_seq)(stream)
    await communicator.send_to(
        text_data=json.dumps({"type": "resume", "cursors": {stream: events_before}})
    )
    assert 'data-state="live"' in await communicator.receive_from(timeout=3)

    await sync_to_async(narration_post)(
        incident_id=incident.pk,
        text="<script>alert(1)</script> rolling back",
        actor=people["commander"],
    )
    pushed = await communicator.receive_from(timeout=3)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; rolling back" in pushed
    assert "<script>alert(1)" not in pushed
    assert f'data-seq="{head + 1}"' in pushed
    assert f'data-live-seq="{events_before + 1}"' in pushed
    await communicator.disconnect()


async def test_console_stream__offline_while_narrated__replayed_on_reconnect(people):
    incident = await sync_to_async(incident_declare)(
        title="Search slow", severity=2, actor=people["commander"]
    )
    seen = await sync_to_async(_stream_seq)(incident.stream)
    for text in ("first", "second"):
        await sync_to_async(narration_post)(
            incident_id=incident.pk, text=text, actor=people["commander"]
        )
    communicator, _, _ = await _connect(people["viewer"])
    await communicator.send_to(
        text_data=json.dumps({"type": "resume", "cursors": {incident.stream: seen}})
    )
    missed = await communicator.receive_from(timeout=3)
    assert missed.index(">first<") < missed.index(">second<")  # both, in timeline order
    await communicator.disconnect()


async def test_console_stream__another_origin__refused(people):
    _communicator, connected, _ = await _connect(
        people["viewer"], origin=(b"origin", b"https://evil.example")
    )
    assert not connected


def _stream_seq(name: str) -> int:
    from live.models import Stream

    return Stream.objects.filter(name=name).values_list("last_seq", flat=True).first() or 0
