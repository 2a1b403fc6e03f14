import json
import os
import signal
import subprocess
import time
import urllib.request

from tests.serving import served, stop


def _process_table() -> list[tuple[int, int, int, str]]:
    out = subprocess.run(
        ["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True, text=True
    ).stdout
    rows = []
    for line in out.splitlines():
        pid, ppid, pgid, args = line.split(None, 3)
        rows.append((int(pid), int(ppid), int(pgid), args))
    return rows


def test_serve__ready_worker_killed_then_ctrl_c__restarted_said_so_and_every_child_stopped(
    tmp_path,
):
    """One served stack (building one costs tens of seconds): ready with its worker; a worker
    killed (OOM, kill -9) is restarted rather than taking the web server down, so breaches are
    acted on again once it is back; Ctrl-C then stops every child."""
    with served(tmp_path) as server:
        with urllib.request.urlopen(server.base + "/readyz") as response:
            checks = json.load(response)["checks"]
        assert all(check["ok"] for check in checks.values()), checks
        log = server.log.read_text()
        assert server.base in log and "Demo logins" in log

        def workers() -> list[int]:
            # Embedded: one worker with beat inside; with Redis: a worker and a separate beat.
            return [
                pid
                for pid, ppid, _, args in _process_table()
                if ppid == server.process.pid and "celery" in args and " worker" in args
            ]

        [worker] = workers()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "restarted it" not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "exited with -9; restarted it" in server.log.read_text()
        assert server.process.poll() is None
        assert len(workers()) == 1 and workers() != [worker]
        with urllib.request.urlopen(server.base + "/healthz") as response:
            assert response.status == 200

        # serve puts each child (uvicorn, celery) in its own process group; all of them must go.
        children = {
            pid: args for pid, ppid, _, args in _process_table() if ppid == server.process.pid
        }
        assert any("uvicorn" in a for a in children.values()) and any(
            "celery" in a for a in children.values()
        )
        assert stop(server) == 0
    # A "<defunct>" entry has exited already; in a container without an init it is never reaped.
    survivors = [
        a for _, _, pgid, a in _process_table() if pgid in children and "<defunct>" not in a
    ]
    assert survivors == []
