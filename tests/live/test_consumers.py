import json

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from prometheus_client import REGISTRY

from ledger.services import ledger_append
from stepwise.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]
ORIGIN = (b"origin", b"http://localhost")


async def _cookie_for(user) -> bytes:
    client = Client()
    await sync_to_async(client.force_login)(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


HOST = (b"host", b"localhost")


async def _connect(
    user=None, origin=ORIGIN, host=HOST
) -> tuple[WebsocketCommunicator, bool, int | None]:
    headers = [h for h in (origin, host) if h]
    if user is not None:
        headers.append((b"cookie", await _cookie_for(user)))
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
    connected, code = await communicator.connect(timeout=3)
    return communicator, connected, code


def _append(action: str) -> None:
    ledger_append(action=action, subject_type="plan", subject_id=1)


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    """The consumer's database calls share one executor thread; close its connection after each
    test so PostgreSQL can drop the test database at the end."""
    yield
    from asgiref.sync import sync_to_async as plain_sync_to_async
    from django.db import connections

    await plain_sync_to_async(connections.close_all)()


@pytest.fixture
def viewer(role_user):
    return role_user("viewer")


async def test_live__anonymous__refused_4401():
    _communicator, connected, code = await _connect(user=None)
    assert not connected and code == 4401


async def test_live__socket_opened_then_closed__open_websockets_gauge_up_then_back(viewer):
    def open_sockets() -> float:
        return REGISTRY.get_sample_value("stepwise_live_websockets")

    before = open_sockets()
    refused, _, _ = await _connect(user=None)
    communicator, connected, _ = await _connect(viewer)
    assert connected and open_sockets() == before + 1

    await communicator.disconnect()
    await refused.disconnect()

    assert open_sockets() == before


async def test_live__forged_origin__handshake_refused(viewer):
    _communicator, connected, _ = await _connect(
        user=viewer, origin=(b"origin", b"https://evil.example")
    )
    assert not connected


async def test_live__page_on_another_port_of_the_same_host__refused(viewer):
    """A page on localhost:9999 opening a socket to the app on localhost:8000 with the user's
    cookie: the host name matches ALLOWED_HOSTS, the port does not match the site."""
    _communicator, connected, _ = await _connect(
        user=viewer,
        origin=(b"origin", b"http://localhost:9999"),
        host=(b"host", b"localhost:8000"),
    )
    assert not connected
    communicator, connected, _ = await _connect(
        user=viewer, origin=(b"origin", b"http://localhost:8000"), host=(b"host", b"localhost:8000")
    )
    assert connected
    await communicator.disconnect()


async def test_live__session_logs_out__its_open_socket_is_closed(viewer):
    client = Client()
    await sync_to_async(client.force_login)(viewer)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, HOST, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect(timeout=3)
    assert connected

    await sync_to_async(client.post)("/logout/")

    status = await communicator.receive_from(timeout=3)
    assert "Signed out" in status
    closed = await communicator.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_live__replay_after_cursor__sends_only_missed_events_in_one_frame(viewer):
    for action in ("a.one", "a.two", "a.three"):
        await sync_to_async(_append)(action)
    communicator, connected, _ = await _connect(viewer)
    assert connected
    await communicator.send_to(text_data=json.dumps({"type": "resume", "cursors": {"ledger": 1}}))
    missed = await communicator.receive_from(timeout=3)
    status = await communicator.receive_from(timeout=3)
    assert "a.one" not in missed and 'data-live-seq="3"' in missed
    assert missed.index("a.two") < missed.index("a.three")  # drawn in ledger order
    assert 'data-state="live"' in status
    await communicator.disconnect()


async def test_live__event_committed_after_subscribe__pushed_without_polling(viewer, settings):
    settings.LIVE_POLL_SECONDS = 3600
    communicator, _, _ = await _connect(viewer)
    await communicator.send_to(text_data=json.dumps({"type": "resume", "cursors": {"ledger": 0}}))
    assert 'data-state="live"' in await communicator.receive_from(timeout=3)
    await sync_to_async(_append)("step.started")
    pushed = await communicator.receive_from(timeout=3)
    assert "step.started" in pushed and 'data-live-seq="1"' in pushed
    await communicator.disconnect()


async def test_live__group_message_skips_ahead__gap_filled_from_database(
    viewer, settings, monkeypatch
):
    settings.LIVE_POLL_SECONDS = 3600
    communicator, _, _ = await _connect(viewer)
    await communicator.send_to(text_data=json.dumps({"type": "resume", "cursors": {"ledger": 0}}))
    await communicator.receive_from(timeout=3)

    def publish_then_commit_one_without_sending() -> None:
        _append("sent.normally")
        # A committed frame whose group message never arrived (a Redis blip, a crashed sender).
        with monkeypatch.context() as patch:
            patch.setattr("live.broadcast._send", lambda **frame: None)
            _append("written.not.sent")

    await sync_to_async(publish_then_commit_one_without_sending)()
    first = await communicator.receive_from(timeout=3)
    assert "sent.normally" in first
    await sync_to_async(_append)("after.the.gap")
    filled = await communicator.receive_from(timeout=3)
    assert filled.index("written.not.sent") < filled.index("after.the.gap")
    assert 'data-live-seq="3"' in filled
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "not JSON"),
        (json.dumps({"type": "subscribe"}), "expected"),
        (json.dumps({"type": "resume", "cursors": {"ledger": -1}}), "non-negative"),
        (json.dumps({"type": "resume", "cursors": {"ledger": "12"}}), "non-negative"),
        (json.dumps({"type": "resume", "cursors": {"secrets": 0}}), "unknown stream"),
        (json.dumps({"type": "resume", "cursors": {}}), "cursors must map"),
    ],
)
async def test_live__malformed_replay_request__closed_4400_with_reason(viewer, message, reason):
    communicator, _, _ = await _connect(viewer)
    await communicator.send_to(text_data=message)
    refusal = await communicator.receive_from(timeout=3)
    assert reason in refusal and 'data-state="error"' in refusal
    assert (await communicator.receive_output(timeout=3)) == {
        "type": "websocket.close",
        "code": 4400,
    }


async def test_live__user_without_role__watching_ledger_refused_4403(role_user):
    nobody = await sync_to_async(role_user)(None)
    communicator, connected, _ = await _connect(nobody)
    assert connected
    await communicator.send_to(text_data=json.dumps({"type": "resume", "cursors": {"ledger": 0}}))
    assert "may not watch ledger" in await communicator.receive_from(timeout=3)
    assert (await communicator.receive_output(timeout=3)) == {
        "type": "websocket.close",
        "code": 4403,
    }
