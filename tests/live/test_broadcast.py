"""The one broadcast path: services mark, `live` draws each touched stream once after commit."""

import pytest
from django.db import transaction

from ledger.services import ledger_append
from live.broadcast import stream_touch
from live.models import Stream, StreamEvent
from live.replay import STALE_HTML, stream_replay
from rollouts.models import Plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def plan() -> Plan:
    return Plan.objects.create(key="p", name="P", owner="platform", status="active")


@pytest.fixture
def plan_renders(monkeypatch) -> list[int]:
    """Each drawing of a plan's live state, counted where the push reads it."""
    from rollouts import streams

    drawn: list[int] = []
    real = streams.plan_live_context

    def counted(*, plan_id: int):
        drawn.append(plan_id)
        return real(plan_id=plan_id)

    monkeypatch.setattr(streams, "plan_live_context", counted)
    return drawn


def test_touch__six_touches_of_one_plan_in_one_transaction__one_render_one_frame(
    plan, pushes, plan_renders
):
    events = [f"step.e{n}" for n in range(6)]
    with pushes.commit(), transaction.atomic():
        for event in events:
            stream_touch(stream=plan.stream, event=event)
        assert plan_renders == []  # nothing is drawn inside the transaction

    assert plan_renders == [plan.pk]
    [(seq, html)] = pushes.on(plan.stream)
    [stored] = StreamEvent.objects.filter(stream_id=plan.stream)
    assert (stored.seq, stored.state, stored.event) == (seq, True, ",".join(events))
    assert 'hx-swap-oob="true"' in html


def test_touch__transaction_rolled_back__nothing_drawn_stored_or_sent(plan, pushes, plan_renders):
    with pushes.commit():
        with pytest.raises(RuntimeError), transaction.atomic():
            stream_touch(stream=plan.stream, event="step.started")
            ledger_append(action="step.started", subject_type="step", subject_id=1)
            raise RuntimeError("the service refused after marking")
        assert not StreamEvent.objects.exists()

    assert plan_renders == [] and pushes.frames == []
    assert not StreamEvent.objects.exists()


def test_touch__savepoint_rolled_back__the_outer_change_still_pushed(plan, pushes):
    with pushes.commit(), transaction.atomic():
        ledger_append(action="kept", subject_type="thing")
        with pytest.raises(RuntimeError), transaction.atomic():
            ledger_append(action="undone", subject_type="thing")
            raise RuntimeError
    html = pushes.last_html("ledger")
    assert "kept" in html and "undone" not in html


def test_touch__state_unchanged__not_pushed_again(plan, pushes):
    with pushes.commit():
        stream_touch(stream=plan.stream, event="evaluation.inconclusive")
    with pushes.commit():
        stream_touch(stream=plan.stream, event="evaluation.inconclusive")
    assert len(pushes.on(plan.stream)) == 1
    assert Stream.objects.get(name=plan.stream).last_seq == 1


def test_touch__row_stream_without_a_row__refused():
    with pytest.raises(ValueError, match="say which row"):
        stream_touch(stream="ledger", event="ledger.appended")


def test_replay__full_state_stream__the_state_as_it_is_now_at_the_newest_seq(plan, pushes):
    with pushes.commit():
        stream_touch(stream=plan.stream, event="one")
    plan.name = "Renamed while offline"
    plan.status = "paused"
    plan.save()
    with pushes.commit():
        stream_touch(stream=plan.stream, event="two")

    seq, html = stream_replay(stream=plan.stream, after=0)
    assert seq == 2 and html == pushes.last_html(plan.stream)
    assert stream_replay(stream=plan.stream, after=2) is None


def test_replay__append_stream__drawn_from_the_ledger_rows_in_order(pushes):
    for action in ("a.one", "a.two", "a.three"):
        with pushes.commit():
            ledger_append(action=action, subject_type="thing")
    seq, html = stream_replay(stream="ledger", after=1)
    assert seq == 3 and "a.one" not in html
    assert html.index("a.two") < html.index("a.three")


def test_retention__each_stream_keeps_its_newest_events_and_a_browser_further_behind_reloads(
    pushes, settings
):
    settings.LIVE_EVENTS_KEPT = 150
    for n in range(320):
        with pushes.commit():
            ledger_append(action=f"n.{n}", subject_type="thing")

    kept = list(StreamEvent.objects.filter(stream_id="ledger").values_list("seq", flat=True))
    assert len(kept) <= 150 + 100 and kept[-1] == 320 and kept[0] > 1
    assert stream_replay(stream="ledger", after=0) == (320, STALE_HTML)
    seq, html = stream_replay(stream="ledger", after=310)
    assert seq == 320 and "n.310" in html and "n.309" not in html


def test_touch__renderer_fails_after_commit__the_change_stands_and_nothing_is_sent(
    plan, pushes, monkeypatch, caplog
):
    def broken(**kwargs):
        raise RuntimeError("template bug")

    monkeypatch.setattr("rollouts.streams.plan_live_context", broken)
    with pushes.commit(), transaction.atomic():
        Plan.objects.filter(pk=plan.pk).update(name="Renamed")
        stream_touch(stream=plan.stream, event="plan.renamed")
    assert Plan.objects.get(pk=plan.pk).name == "Renamed"
    assert pushes.frames == [] and not StreamEvent.objects.exists()
    assert "live render failed" in caplog.text
