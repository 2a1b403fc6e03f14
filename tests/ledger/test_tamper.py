"""Thirteen ways to tamper with the ledger from inside the database, each as an operator with
full access to the table would do it (the append-only trigger bypassed where it would refuse):
`verify_ledger` detects every one (issue 13 item 5: it missed 5 of 13).

What makes the difference for the hard ones: each entry's MAC and the signed chain head kept
outside the table (ledger/anchor.py), with a key the database does not hold."""

import json
from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from ledger.anchor import anchor_record
from ledger.chain import entry_digest
from ledger.models import LedgerEntry
from ledger.selectors import ledger_verify
from ledger.services import ledger_append

pytestmark = pytest.mark.django_db
ENTRIES = 6


def _settle_deferred(cursor) -> None:
    # The test's own transaction still holds deferred foreign-key checks, which PostgreSQL
    # refuses to TRUNCATE or ALTER under; an operator's session would have none.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


@contextmanager
def behind_the_apps_back():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _settle_deferred(cursor)
            cursor.execute("SET session_replication_role = replica")  # triggers off (superuser)
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")


@pytest.fixture
def chain(django_capture_on_commit_callbacks):
    """Six committed entries: their on-commit anchors run, as they would in production."""
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(ENTRIES):
            ledger_append(
                action="flag.changed", subject_type="flag", subject_id="checkout", payload={"to": i}
            )
    assert ledger_verify().ok
    return list(LedgerEntry.objects.order_by("seq"))


def _rehash_from(cursor, first_seq: int) -> None:
    """What an attacker who knows the (public) algorithm does after an edit: recompute every
    link and hash from `first_seq` on, so the chain is consistent again."""
    rows = list(LedgerEntry.objects.order_by("seq"))
    previous = next((r.hash for r in rows if r.seq == first_seq - 1), "0" * 64)
    for row in rows:
        if row.seq < first_seq:
            continue
        fields = {
            "seq": row.seq,
            "created_at": row.created_at,
            "actor_id": row.actor_id,
            "actor_label": row.actor_label,
            "action": row.action,
            "subject_type": row.subject_type,
            "subject_id": row.subject_id,
            "plan_id": row.plan_id,
            "step_id": row.step_id,
            "incident_id": row.incident_id,
            "payload": row.payload,
            "prev_hash": previous,
        }
        digest = entry_digest(**fields)
        cursor.execute(
            "UPDATE ledger_ledgerentry SET prev_hash = %s, hash = %s WHERE id = %s",
            [previous, digest, row.pk],
        )
        previous = digest


def _edit_payload(cursor, chain):
    cursor.execute("UPDATE ledger_ledgerentry SET payload = %s WHERE seq = 3", ['{"to": 100}'])


def _edit_actor(cursor, chain):
    cursor.execute("UPDATE ledger_ledgerentry SET actor_label = 'mallory' WHERE seq = 2")


def _edit_link(cursor, chain):
    cursor.execute("UPDATE ledger_ledgerentry SET prev_hash = %s WHERE seq = 4", ["a" * 64])


def _overwrite_hash(cursor, chain):
    cursor.execute("UPDATE ledger_ledgerentry SET hash = %s WHERE seq = 2", ["f" * 64])


def _delete_middle(cursor, chain):
    cursor.execute("DELETE FROM ledger_ledgerentry WHERE seq = 3")


def _swap_two(cursor, chain):
    cursor.execute("UPDATE ledger_ledgerentry SET seq = 1000 WHERE seq = 2")
    cursor.execute("UPDATE ledger_ledgerentry SET seq = 2 WHERE seq = 3")
    cursor.execute("UPDATE ledger_ledgerentry SET seq = 3 WHERE seq = 1000")


def _cut_the_tail(cursor, chain):
    cursor.execute("DELETE FROM ledger_ledgerentry WHERE seq > 4")


def _empty_it(cursor, chain):
    if connection.vendor == "postgresql":
        cursor.execute("TRUNCATE ledger_ledgerentry")
    else:
        cursor.execute("DELETE FROM ledger_ledgerentry")


def _edit_and_rehash(cursor, chain):
    cursor.execute("UPDATE ledger_ledgerentry SET payload = %s WHERE seq = 2", ['{"to": 0}'])
    _rehash_from(cursor, 2)


def _delete_renumber_rehash(cursor, chain):
    cursor.execute("DELETE FROM ledger_ledgerentry WHERE seq = 3")
    for seq in range(4, ENTRIES + 1):
        cursor.execute("UPDATE ledger_ledgerentry SET seq = %s WHERE seq = %s", [seq - 1, seq])
    _rehash_from(cursor, 3)


def _forge_at_the_head(cursor, chain):
    """An INSERT needs no bypass: the append-only trigger allows it."""
    head = chain[-1]
    fields = {
        "seq": head.seq + 1,
        "created_at": head.created_at,
        "actor_id": None,
        "actor_label": "system",
        "action": "flag.changed",
        "subject_type": "flag",
        "subject_id": "checkout",
        "plan_id": None,
        "step_id": None,
        "incident_id": None,
        "payload": {"to": 100},
        "prev_hash": head.hash,
    }
    LedgerEntry.objects.create(**fields, hash=entry_digest(**fields), mac="0" * 64)


def _cut_and_replace_the_anchor(cursor, chain, settings):
    cursor.execute("DELETE FROM ledger_ledgerentry WHERE seq > 4")
    head = LedgerEntry.objects.get(seq=4)
    settings.LEDGER_ANCHOR_FILE.write_text(
        json.dumps({"seq": 4, "hash": head.hash, "mac": "0" * 64})
    )


ATTEMPTS = {
    "payload edited": (_edit_payload, r"seq 3 .*content was altered"),
    "actor edited": (_edit_actor, r"seq 2 .*content was altered"),
    "link edited": (_edit_link, r"seq 4 .*prev_hash"),
    "hash overwritten": (_overwrite_hash, r"seq 2 "),
    "middle entry deleted": (_delete_middle, r"sequence gap: expected seq 3"),
    "two entries swapped": (_swap_two, r"seq 2 "),
    "newest entries deleted": (_cut_the_tail, r"ends at seq 4 but was anchored at seq 6"),
    "emptied (TRUNCATE)": (_empty_it, r"empty but was anchored at seq 6"),
    "edited, rest re-hashed": (_edit_and_rehash, r"seq 2 .*MAC does not match"),
    "deleted, renumbered, re-hashed": (_delete_renumber_rehash, r"seq 3 .*MAC does not match"),
    "forged at the head": (_forge_at_the_head, r"seq 7 .*MAC does not match"),
}


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
def test_tampering__detected_naming_where(chain, attempt):
    tamper, expected = ATTEMPTS[attempt]
    with behind_the_apps_back() as cursor:
        tamper(cursor, chain)
    assert not ledger_verify().ok
    with pytest.raises(CommandError, match=expected):
        call_command("verify_ledger")


def test_tampering__tail_cut_and_the_file_anchor_replaced__the_forged_anchor_is_refused(
    chain, settings
):
    with behind_the_apps_back() as cursor:
        _cut_and_replace_the_anchor(cursor, chain, settings)
    with pytest.raises(CommandError, match=r"file anchor is not signed with the ledger key"):
        call_command("verify_ledger")


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("ALTER TABLE ledger_ledgerentry DISABLE TRIGGER ledger_append_only", "is disabled"),
        ("DROP TRIGGER ledger_append_only ON ledger_ledgerentry", "is missing"),
    ],
    ids=["trigger disabled", "trigger dropped"],
)
def test_tampering__append_only_trigger_disabled_or_dropped__detected(chain, sql, expected):
    with connection.cursor() as cursor:
        _settle_deferred(cursor)
        cursor.execute(sql)
    with pytest.raises(CommandError, match=f"ledger_append_only {expected}"):
        call_command("verify_ledger")


@pytest.mark.postgres
def test_production__truncate_refused_by_its_trigger_and_its_absence_reported(chain, settings):
    from importlib import import_module

    guard = import_module("ledger.migrations.0003_entry_mac_and_truncate_guard").TRUNCATE_GUARD
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="ledger_no_truncate is missing"):
        call_command("verify_ledger")
    with connection.cursor() as cursor:
        _settle_deferred(cursor)
        cursor.execute(guard)
    call_command("verify_ledger")
    with (
        pytest.raises(DatabaseError, match="TRUNCATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE ledger_ledgerentry")
    assert LedgerEntry.objects.count() == ENTRIES


def test_anchor__a_lower_head_never_replaces_a_higher_one(chain, settings):
    before = settings.LEDGER_ANCHOR_FILE.read_text()
    anchor_record(seq=2, entry_hash=chain[1].hash)
    assert settings.LEDGER_ANCHOR_FILE.read_text() == before
    assert json.loads(before)["seq"] == ENTRIES


def test_verify__an_entry_committed_while_it_reads__not_mistaken_for_a_cut(
    chain, django_capture_on_commit_callbacks, monkeypatch
):
    """An append that commits (and anchors) right after verify walked the chain is growth, not a
    cut: verify reads the anchors before the chain, never after."""
    from ledger import selectors

    real_verify = selectors.chain_verify

    def walk_then_append(*args, **kwargs):
        report = real_verify(*args, **kwargs)
        with django_capture_on_commit_callbacks(execute=True):
            ledger_append(action="flag.changed", subject_type="flag", subject_id="checkout")
        return report

    monkeypatch.setattr(selectors, "chain_verify", walk_then_append)
    assert ledger_verify().ok
