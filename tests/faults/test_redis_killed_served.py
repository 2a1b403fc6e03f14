"""Redis (a redis-server of the test's own, on its own port) killed with `kill -9` in the middle
of an incident's narration and started again: two consoles, reconnecting and resuming as the
page's script does, each end with every entry exactly once, in order."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from tests.serving import ROOT, served

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
ENTRIES = 30
KILL_AFTER = 12
SETUP = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from accounts.services import api_token_create
from incidents.services import incident_declare
from live.broadcast import live_streams
User = get_user_model()
commander = User.objects.get(username="commander")
incident = incident_declare(title="Redis fault test", severity=3, actor=commander)
_, token = api_token_create(user=commander, name="redis-fault", scopes=["incidents:write"])
sessions = []
for _ in range(2):
    client = Client()
    client.force_login(User.objects.get(username="viewer"))
    sessions.append(client.cookies["sessionid"].value)
print(json.dumps({
    "incident": incident.pk,
    "entries": incident.last_seq,
    "cursor": live_streams(incident.stream)[0]["seq"],
    "token": token,
    "sessions": sessions,
}))
"""


class Console(threading.Thread):
    """A console's socket: resume from the stream's cursor it last saw, reconnect after a drop,
    as static/js/live.js does; `seen` is every timeline entry received, in order."""

    def __init__(self, base: str, session: str, stream: str, seq: int) -> None:
        super().__init__(daemon=True)
        self.url = base.replace("http://", "ws://") + "/ws/live/"
        self.headers = {"Cookie": f"sessionid={session}", "Origin": base}
        self.stream, self.cursor = stream, seq
        self.seen: list[int] = []
        self.reconnects = 0
        self.stop = threading.Event()

    def run(self) -> None:
        entry = re.compile(r'data-live-key="timeline-\d+-(\d+)"')
        cursor = re.compile(rf'data-live-stream="{re.escape(self.stream)}" data-live-seq="(\d+)"')
        while not self.stop.is_set():
            try:
                with connect(self.url, additional_headers=self.headers, open_timeout=5) as socket:
                    socket.send(
                        json.dumps({"type": "resume", "cursors": {self.stream: self.cursor}})
                    )
                    while not self.stop.is_set():
                        try:
                            message = socket.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        self.seen.extend(map(int, entry.findall(message)))
                        for seq in map(int, cursor.findall(message)):
                            self.cursor = max(self.cursor, seq)
            except (OSError, WebSocketException):
                pass
            self.reconnects += 1
            time.sleep(0.5)


def _narrate(base: str, token: str, incident: int, text: str) -> int:
    request = urllib.request.Request(
        f"{base}/api/incidents/{incident}/narration",
        data=json.dumps({"text": text}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(240)
def test_redis_killed_mid_narration__every_console_ends_with_every_entry_once_in_order(
    tmp_path, own_redis, suite_report
):
    with served(tmp_path) as server:
        made = subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", SETUP],
                cwd=ROOT, env=server.env, capture_output=True, text=True, check=True,
            )  # fmt: skip
        setup = json.loads(made.stdout.strip().splitlines()[-1])
        stream = f"incident:{setup['incident']}"
        consoles = [Console(server.base, s, stream, setup["cursor"]) for s in setup["sessions"]]
        for console in consoles:
            console.start()
        time.sleep(2)
        statuses = []
        for n in range(ENTRIES):
            if n == KILL_AFTER:
                own_redis.process.send_signal(signal.SIGKILL)
                own_redis.process.wait(timeout=10)
            if n == KILL_AFTER + 8:
                own_redis.start()
            statuses.append(_narrate(server.base, setup["token"], setup["incident"], f"entry {n}"))
            time.sleep(0.2)
        expected = list(range(setup["entries"] + 1, setup["entries"] + 1 + ENTRIES))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            sorted(set(c.seen)) != expected for c in consoles
        ):
            time.sleep(0.5)
        for console in consoles:
            console.stop.set()
    answers = {status: statuses.count(status) for status in sorted(set(statuses))}
    suite_report(
        f"Redis killed after {KILL_AFTER} of {ENTRIES} narrations, back 8 later: narration "
        f"answers {answers}; consoles "
        + "; ".join(f"{len(c.seen)} entries received, {c.reconnects} reconnects" for c in consoles)
    )
    assert statuses.count(201) == ENTRIES, statuses
    for console in consoles:
        assert console.seen == expected, console.seen
