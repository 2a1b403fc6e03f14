import itertools
import os
import subprocess
import sys
import threading

import pytest
from django.db import connection, connections

from ledger.models import LedgerEntry
from ledger.selectors import ledger_verify
from ledger.services import ledger_append

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_ledger_append__eight_threads_at_once__one_unbroken_chain():
    threads, per_thread, errors = 8, 25, []
    start = threading.Barrier(threads)

    def append_many(worker: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                ledger_append(
                    action="load.appended",
                    subject_type="worker",
                    subject_id=worker,
                    payload={"i": i},
                )
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        finally:
            connections.close_all()

    pool = [threading.Thread(target=append_many, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert errors == []
    assert list(LedgerEntry.objects.order_by("seq").values_list("seq", flat=True)) == list(
        range(1, threads * per_thread + 1)
    )
    report = ledger_verify()
    assert report.ok and report.checked == threads * per_thread


APPEND_SCRIPT = """
import time
from ledger.services import ledger_append
time.sleep(max(0.0, {start_at} - time.time()))  # start together, so the appends really interleave
for i in range({n}):
    ledger_append(action="load.appended", subject_type="process", subject_id="{name}", payload={{"i": i}})
"""


def test_ledger_append__four_processes_at_once__one_unbroken_chain(settings):
    import time

    db = connection.settings_dict
    env = {
        # The processes anchor the head in this test's file, which keeps the highest they write.
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "STEPWISE_LEDGER_ANCHOR_FILE": str(settings.LEDGER_ANCHOR_FILE),
    }
    start_at = time.time() + 4
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                APPEND_SCRIPT.format(n=50, name=f"p{k}", start_at=start_at),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outcomes

    order = list(LedgerEntry.objects.order_by("seq").values_list("subject_id", flat=True))
    assert len(order) == 200
    assert sum(a != b for a, b in itertools.pairwise(order)) > 3, "processes did not overlap"
    assert sorted(
        LedgerEntry.objects.order_by("subject_id").values_list("subject_id", flat=True).distinct()
    ) == ["p0", "p1", "p2", "p3"]
    report = ledger_verify()
    assert report.ok and report.checked == 200
    assert '"seq": 200' in settings.LEDGER_ANCHOR_FILE.read_text()
