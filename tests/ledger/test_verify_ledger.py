from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from ledger.models import LedgerEntry
from ledger.services import ledger_append

pytestmark = pytest.mark.django_db


@contextmanager
def behind_the_apps_back():
    """Raw SQL as an operator with database access would run it. On PostgreSQL the trigger has to
    be bypassed first (superuser only), which is exactly what verify_ledger must still catch."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")


def _seed(n: int = 5) -> None:
    for i in range(n):
        ledger_append(
            action="flag.changed",
            subject_type="flag",
            subject_id="checkout",
            payload={"to": i * 10},
        )


def test_verify_ledger__intact_chain__exits_zero_with_count(capsys):
    _seed()
    call_command("verify_ledger")
    assert "5 entries verified" in capsys.readouterr().out


def test_verify_ledger__payload_edited_in_sql__names_the_edited_entry():
    _seed()
    with behind_the_apps_back() as cursor:
        cursor.execute("UPDATE ledger_ledgerentry SET payload = %s WHERE seq = 3", ['{"to": 100}'])
    with pytest.raises(CommandError, match=r"seq 3 .*content was altered"):
        call_command("verify_ledger")


def test_verify_ledger__row_deleted_in_sql__reports_the_gap():
    _seed()
    with behind_the_apps_back() as cursor:
        cursor.execute("DELETE FROM ledger_ledgerentry WHERE seq = 2")
    with pytest.raises(CommandError, match=r"sequence gap: expected seq 2, found 3"):
        call_command("verify_ledger")


def test_verify_ledger__entry_rehashed_after_edit__next_link_breaks():
    _seed()
    entry = LedgerEntry.objects.get(seq=2)
    with behind_the_apps_back() as cursor:
        cursor.execute("UPDATE ledger_ledgerentry SET hash = %s WHERE seq = 2", ["f" * 64])
    with pytest.raises(CommandError, match=r"seq 2 "):
        call_command("verify_ledger")
    assert entry.hash != "f" * 64


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_verify_ledger__run_as_a_process__exit_status_non_zero_naming_the_entry(settings):
    """Scripts and cron jobs look at the exit status of a real process, not at an exception."""
    import os
    import subprocess
    import sys

    _seed(3)
    with behind_the_apps_back() as cursor:
        cursor.execute("UPDATE ledger_ledgerentry SET actor_label = 'mallory' WHERE seq = 2")
    db = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},  # this test's anchor: a file
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "STEPWISE_LEDGER_ANCHOR_FILE": str(settings.LEDGER_ANCHOR_FILE),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "verify_ledger"], capture_output=True, text=True, env=env
    )
    assert result.returncode != 0
    assert "seq 2" in result.stderr and "content was altered" in result.stderr


@pytest.mark.postgres
def test_ledger_trigger__update_or_delete_on_postgres__refused_and_row_unchanged():
    _seed(2)
    before = list(LedgerEntry.objects.order_by("seq").values_list("action", "hash"))
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(seq=1).update(action="flag.deleted")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(seq=2).delete()
    assert list(LedgerEntry.objects.order_by("seq").values_list("action", "hash")) == before
    call_command("verify_ledger")
