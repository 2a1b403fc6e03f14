import pytest
from django.db import connection

from ledger.chain import GENESIS_HASH
from ledger.models import LedgerEntry
from ledger.selectors import ledger_verify
from ledger.services import LedgerError, ledger_append, ledger_record_manual
from live.models import StreamEvent

pytestmark = pytest.mark.django_db


def test_ledger_append__three_entries__each_links_to_the_previous_hash(role_user):
    actor = role_user("tpm")
    first = ledger_append(
        action="plan.created", subject_type="plan", subject_id=1, actor=actor, plan_id=1
    )
    second = ledger_append(
        action="step.started", subject_type="step", subject_id=7, plan_id=1, step_id=7
    )
    third = ledger_append(
        action="flag.changed", subject_type="flag", subject_id="new-cache", payload={"to": 25}
    )

    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert first.actor_label == actor.username and second.actor_label == "system"
    assert ledger_verify().ok and ledger_verify().checked == 3


def test_ledger_append__payload_with_nested_floats__hash_survives_the_database_round_trip():
    ledger_append(
        action="evaluation.failed",
        subject_type="step",
        subject_id=3,
        payload={
            "p99": 0.1 + 0.2,
            "labels": {"region": "eu-west", "b": [1, 2.5, None]},
            "ok": False,
        },
    )
    stored = LedgerEntry.objects.get()
    assert stored.payload["labels"]["b"] == [1, 2.5, None]
    assert ledger_verify().ok


def test_ledger_append__payload_not_json__refused_and_nothing_written():
    with pytest.raises(LedgerError, match="not plain JSON"):
        ledger_append(action="x.y", subject_type="thing", payload={"when": object()})
    with pytest.raises(LedgerError, match="not plain JSON"):
        ledger_append(action="x.y", subject_type="thing", payload={"p99": float("nan")})
    assert not LedgerEntry.objects.exists()


def test_ledger_append__missing_action_or_subject__refused():
    with pytest.raises(LedgerError, match="action"):
        ledger_append(action="", subject_type="plan")
    with pytest.raises(LedgerError, match="subject"):
        ledger_append(action="plan.created")


def test_ledger_append__committed__entry_drawn_and_sent_after_commit(pushes):
    with pushes.commit():
        entry = ledger_append(action="plan.created", subject_type="plan", subject_id=1)
        assert not StreamEvent.objects.exists() and not pushes.frames  # nothing before commit
    event = StreamEvent.objects.get(stream_id="ledger")
    assert event.seq == 1 and event.event == "ledger.appended" and event.refs == [str(entry.seq)]
    html = pushes.last_html("ledger")
    assert f'id="ledger-entry-{entry.seq}"' in html and "hx-swap-oob" in html


def test_ledger_record_manual__blank_summary__refused_with_reason(role_user):
    with pytest.raises(LedgerError, match="say what happened"):
        ledger_record_manual(
            actor=role_user("responder"), kind="note", subject="svc", summary="   "
        )
    with pytest.raises(LedgerError, match="unknown entry kind"):
        ledger_record_manual(
            actor=role_user("responder"), kind="gossip", subject="svc", summary="x"
        )
    assert not LedgerEntry.objects.exists()


def test_ledger_append__sqlite_or_postgres__runs_on_the_configured_vendor():
    # Guards against the suite silently running on SQLite in CI when DATABASE_URL is set.
    import os

    expected = (
        "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    )
    assert connection.vendor == expected
