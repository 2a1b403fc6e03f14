"""The per-process hub: frames in sequence order where it can, one replay for many sockets."""

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from live import hub as hub_module
from live.hub import REORDER_SECONDS, Hub

# In the database group: pytest-django runs tests without one last, after the browser tests,
# while Playwright's session-wide loop still runs in this thread.
pytestmark = [pytest.mark.asyncio, pytest.mark.django_db]


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[tuple[str, int, str]] = []

    async def deliver(self, stream: str, seq: int, frame: str) -> None:
        self.frames.append((stream, seq, frame))

    async def resync(self) -> None:
        pass


async def _hub_with_socket(settings) -> tuple[Hub, FakeSocket]:
    settings.REDIS_URL = ""
    hub = Hub(asyncio.get_running_loop())
    socket = FakeSocket()
    hub.watch("ledger", socket)
    return hub, socket


async def test_hub__frames_published_out_of_order__delivered_in_sequence(settings):
    hub, socket = await _hub_with_socket(settings)
    await hub.receive("ledger", 1, "<p>one</p>")
    await hub.receive("ledger", 3, "<p>three</p>")  # two processes published 2 and 3 crosswise
    await hub.receive("ledger", 2, "<p>two</p>")
    assert [seq for _, seq, _ in socket.frames] == [1, 2, 3]
    assert 'data-live-seq="2"' in socket.frames[1][2]  # the cursor travels with the frame


async def test_hub__a_frame_never_arrives__the_next_goes_out_after_the_wait(settings):
    hub, socket = await _hub_with_socket(settings)
    await hub.receive("ledger", 1, "<p>one</p>")
    await hub.receive("ledger", 3, "<p>three</p>")
    assert [seq for _, seq, _ in socket.frames] == [1]
    await asyncio.sleep(REORDER_SECONDS + 0.1)
    assert [seq for _, seq, _ in socket.frames] == [1, 3]  # the socket replays the gap itself


async def test_hub__many_sockets_at_one_cursor__the_replay_is_drawn_once(settings, monkeypatch):
    hub, _ = await _hub_with_socket(settings)
    drawn: list[tuple[str, int]] = []

    def replay(*, stream: str, after: int) -> tuple[int, str]:
        drawn.append((stream, after))
        return after + 5, "<p>missed</p>"

    monkeypatch.setattr(hub_module, "stream_replay", replay)
    answers = await asyncio.gather(*(hub.replay("ledger", 10) for _ in range(200)))
    assert set(answers) == {(15, "<p>missed</p>")}
    assert drawn == [("ledger", 10)]
    await hub.replay("ledger", 12)  # another cursor is drawn for itself
    assert drawn == [("ledger", 10), ("ledger", 12)]


async def test_hub__frame_written_to_a_socket__its_push_latency_observed(settings):
    hub, socket = await _hub_with_socket(settings)
    count = REGISTRY.get_sample_value("stepwise_live_push_latency_seconds_count")
    within = REGISTRY.get_sample_value("stepwise_live_push_latency_seconds_bucket", {"le": "0.1"})

    await hub.receive("ledger", 1, "<p>one</p>", time.time() - 0.2)

    assert len(socket.frames) == 1
    assert REGISTRY.get_sample_value("stepwise_live_push_latency_seconds_count") == count + 1
    # sent 0.2 s before it was written: not within 0.1 s
    assert (
        REGISTRY.get_sample_value("stepwise_live_push_latency_seconds_bucket", {"le": "0.1"})
        == within
    )
