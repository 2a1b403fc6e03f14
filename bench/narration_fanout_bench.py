"""Narration fan-out of the incident console, against the real served app.

`manage.py serve --web-workers 2` in Redis mode (uvicorn workers, one live hub each, one Celery
worker and beat) with STEPWISE_ENV=production, on its own PostgreSQL database and its own Redis
prefix in db 12, both removed afterwards. A commander and a viewer log in over HTTP; the
commander's declared incident is watched by `--clients` websocket clients (the viewer's session
cookie, an allowed Origin, `resume` of `incident:<id>` at its current sequence), all in one child
process: one asyncio (uvloop) loop, the `websockets` package's sans-I/O protocol, so the bench's
own per-message cost stays small and is measured (CPU table).

Each narration is `POST /incidents/<id>/narrate` (session + X-CSRFToken, HX-Request) whose text
carries a unique marker; the clients timestamp the frame carrying it (CLOCK_MONOTONIC, shared by
both processes):

    t0       just before the POST is written
    t_resp   when its answer arrived (the after-commit render and publish ran inside the request)
    t_client each client's receipt of the frame with the marker

(a) latency: `--posts` posts spaced at `--rate`/s, one at a time. (b) throughput: `--posters`
concurrent posters as fast as they can for `--duration` s. Then, unless --no-profile, the
latency load again for `--profile-seconds` with py-spy sampling both uvicorn workers (GIL
holders only), to say which code the workers' CPU goes to per post. A missed target is a
result: the exit status is non-zero only when the setup fails.

The clients offer permessage-deflate as browsers do (--no-compression: they do not).

Usage: python bench/narration_fanout_bench.py [--clients 500] [--posts 200] [--rate 20]
       [--posters 4] [--duration 15] [--web-workers 2] [--no-profile] [--no-compression]
       [--keep-log]
       (or: make bench)
"""

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter, defaultdict
from http.cookies import SimpleCookie
from pathlib import Path

from served import ROOT, free_port, manage, pct, production_env, psql, stop_and_drop, wait_ready

REDIS = "redis://127.0.0.1:6379/12"
TARGET_P99_MS = 100.0
LATE_MS = 1000.0  # slower than this is not the push path (the 15 s poll catching up)

SETUP = r"""
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from accounts.roles import roles_sync
from incidents.services import incident_declare
from live.models import Stream

P = json.loads(%(params)r)
User = get_user_model()
roles_sync()
for name, role in (("bench-commander", "commander"), ("bench-viewer", "viewer")):
    user = User.objects.create_user(username=name, password=P["password"])
    user.groups.set([Group.objects.get(name=role)])
commander = User.objects.get(username="bench-commander")
incident = incident_declare(title="Narration fan-out bench", severity=2, actor=commander,
                            services=["bench"])
print(json.dumps({"incident": incident.pk, "stream": incident.stream,
                  "seq": Stream.objects.get(name=incident.stream).last_seq}))
"""

MARK = re.compile(rb"nfmark-(\d+)-")
CURSOR = re.compile(rb'data-live-seq="(\d+)"')
STATUS = re.compile(rb'id="live-status" data-state="(\w+)"')


# --- HTTP: a logged-in browser, one keep-alive connection per poster ---------------------------


class Session:
    """Cookies by hand: in production they are Secure, which a cookie jar would not send over
    plain HTTP; Django itself does not care on a non-HTTPS request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def clone(self) -> "Session":
        other = Session(self.port)
        other.cookies = dict(self.cookies)
        return other

    def request(
        self, method: str, path: str, form: dict | None = None, headers: dict | None = None
    ) -> tuple[int, dict, bytes]:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        sent = {
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            **({"Content-Type": "application/x-www-form-urlencoded"} if body else {}),
            **(headers or {}),
        }
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            try:
                self.conn.request(method, path, body=body, headers=sent)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                if attempt == 2:
                    raise
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response.status, dict(response.headers), data

    def login(self, username: str, password: str) -> None:
        self.request("GET", "/login/")
        status, _, body = self.request(
            "POST",
            "/login/",
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": self.cookies.get("csrftoken", ""),
            },
        )
        if status != 302 or "sessionid" not in self.cookies:
            sys.exit(f"login as {username} failed: {status} {body[:300]!r}")

    def narrate(self, incident: int, text: str) -> int:
        status, _, _ = self.request(
            "POST",
            f"/incidents/{incident}/narrate",
            {"text": text},
            {"X-CSRFToken": self.cookies["csrftoken"], "HX-Request": "true"},
        )
        return status


# --- the websocket clients, in their own process -----------------------------------------------


class LiveSocket(asyncio.Protocol):
    """One console tab: the websockets sans-I/O protocol on a plain asyncio transport, so no task
    per connection; every frame is timestamped when its bytes are handed to the loop."""

    def __init__(
        self, uri, origin: str, cookie: str, cursors: dict[str, int], deflate: bool
    ) -> None:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
        from websockets.typing import Origin

        # Browsers offer "permessage-deflate; client_max_window_bits", and uvicorn accepts it:
        # the server then compresses every message once per connection.
        extensions = (
            [ClientPerMessageDeflateFactory(client_max_window_bits=True)] if deflate else []
        )
        self.ws = ClientProtocol(uri, origin=Origin(origin), extensions=extensions, max_size=None)
        self.cookie, self.cursors = cookie, cursors
        self.received: dict[int, float] = {}
        self.duplicates = self.seq_gaps = 0
        self.last_seq = next(iter(cursors.values()))
        self.statuses: list[str] = []
        self.live = asyncio.get_running_loop().create_future()
        self.closed = False
        self.partial: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        request = self.ws.connect()
        request.headers["Cookie"] = self.cookie
        self.ws.send_request(request)
        self._flush()

    def _flush(self) -> None:
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        at = time.monotonic()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    self._fail(f"handshake: {self.ws.handshake_exc}")
                    continue
                self.ws.send_text(json.dumps({"type": "resume", "cursors": self.cursors}).encode())
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.CONT):
                self.partial.append(event.data)
                if event.fin:
                    message, self.partial = b"".join(self.partial), []
                    self._message(at, message)
        self._flush()

    def _message(self, at: float, message: bytes) -> None:
        if status := STATUS.search(message):
            self.statuses.append(status[1].decode())
            if status[1] == b"live" and not self.live.done():
                self.live.set_result(True)
            elif status[1] == b"error" and not self.live.done():
                self._fail(message.decode(errors="replace")[:300])
        if cursor := CURSOR.search(message):
            seq = int(cursor[1])
            if seq != self.last_seq + 1:
                self.seq_gaps += 1
            self.last_seq = max(self.last_seq, seq)
        for mark in MARK.finditer(message):  # a replay after a gap carries several posts
            post = int(mark[1])
            if post in self.received:
                self.duplicates += 1
            else:
                self.received[post] = at

    def _fail(self, reason: str) -> None:
        if not self.live.done():
            self.live.set_exception(RuntimeError(reason))

    def eof_received(self) -> None:
        self.ws.receive_eof()
        self._flush()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._fail(f"connection lost: {exc}")

    def close(self) -> None:
        if not self.closed:
            self.ws.send_close(1000)
            self._flush()


def _rusage_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _clients_main(conn, p: dict) -> None:
    from websockets.uri import parse_uri

    loop = asyncio.get_running_loop()
    uri = parse_uri(p["url"])
    sockets: list[LiveSocket] = []
    gate = asyncio.Semaphore(p["connect_concurrency"])

    async def open_one() -> LiveSocket:
        async with gate:
            _, sock = await loop.create_connection(
                lambda: LiveSocket(
                    uri, p["origin"], p["cookie"], {p["stream"]: p["seq"]}, p["deflate"]
                ),
                "127.0.0.1",
                p["port"],
            )
            sockets.append(sock)
            await asyncio.wait_for(sock.live, 30)
            return sock

    started = time.monotonic()
    results = await asyncio.gather(
        *(open_one() for _ in range(p["clients"])), return_exceptions=True
    )
    failures = Counter(str(r)[:200] for r in results if isinstance(r, BaseException))
    conn.send(
        {
            "live": sum(1 for r in results if isinstance(r, LiveSocket)),
            "failures": dict(failures),
            "connect_seconds": time.monotonic() - started,
            "deflate": sum(1 for r in results if isinstance(r, LiveSocket) and r.ws.extensions),
        }
    )
    live = [r for r in results if isinstance(r, LiveSocket)]
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command[0] == "cpu":
            conn.send(_rusage_cpu())
        elif command[0] == "collect":
            _, posts, wait = command
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not all(
                all(post in s.received for post in posts) for s in live
            ):
                await asyncio.sleep(0.05)
            conn.send(
                {
                    "times": [[s.received.get(post) for post in posts] for s in live],
                    "duplicates": sum(s.duplicates for s in live),
                    "seq_gaps": sum(s.seq_gaps for s in live),
                    "closed": sum(s.closed for s in live),
                    "not_live": Counter(
                        st for s in live for st in s.statuses if st != "live"
                    ).most_common(),
                }
            )
        elif command[0] == "close":
            for sock in sockets:
                sock.close()
            await asyncio.sleep(0.5)
            for sock in sockets:
                sock.transport.close()
            conn.send("closed")
            return


def _clients_process(conn, params: dict) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = params["clients"] + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    try:
        import uvloop

        uvloop.run(_clients_main(conn, params))
    except ImportError:
        asyncio.run(_clients_main(conn, params))


# --- CPU per process group, from /proc ---------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[str, int, float] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _machine_busy() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICKS, sum(values[:8]) / TICKS


class CpuMeter:
    """CPU seconds per group of processes between two snapshots; 'rest of machine' is everybody
    else on the box (other people's test runs included)."""

    def __init__(self, serve_pid: int, clients_pid: int) -> None:
        self.serve_pid, self.clients_pid = serve_pid, clients_pid

    def groups(self) -> dict[int, str]:
        stats = {
            int(d): s for d in os.listdir("/proc") if d.isdigit() and (s := _proc_stat(int(d)))
        }
        parent = {pid: s[1] for pid, s in stats.items()}

        def under(pid: int, root: int) -> bool:
            while pid > 1:
                if pid == root:
                    return True
                pid = parent.get(pid, 0)
            return False

        named: dict[int, str] = {}
        for pid, (comm, _, _) in stats.items():
            if pid == os.getpid():
                named[pid] = "bench poster (this process)"
            elif pid == self.clients_pid:
                named[pid] = "bench websocket clients"
            elif comm == "redis-server":
                named[pid] = "redis-server"
            elif comm.startswith("postgres"):
                named[pid] = "postgres (all databases)"
            elif under(pid, self.serve_pid):
                cmd = _cmdline(pid)
                if "celery" in cmd:
                    named[pid] = "celery worker + beat (idle)"
                elif "spawn_main" in cmd and "uvicorn" in _cmdline(parent.get(pid, 0)):
                    named[pid] = f"uvicorn worker pid {pid}"
                else:
                    named[pid] = "serve + uvicorn supervisor"
        return named

    def snapshot(self) -> dict:
        named = self.groups()
        cpu = {pid: s[2] for pid in named if (s := _proc_stat(pid))}
        return {"at": time.monotonic(), "named": named, "cpu": cpu, "machine": _machine_busy()}

    @staticmethod
    def diff(a: dict, b: dict) -> tuple[float, dict[str, float], float]:
        wall = b["at"] - a["at"]
        used: dict[str, float] = defaultdict(float)
        for pid, name in b["named"].items():
            if pid in b["cpu"]:
                used[name] += b["cpu"][pid] - a["cpu"].get(pid, 0.0)
        busy = b["machine"][0] - a["machine"][0]
        rest = busy - sum(used.values())
        return wall, dict(used), rest


def _uvicorn_workers(meter: CpuMeter) -> list[int]:
    return sorted(pid for pid, name in meter.groups().items() if name.startswith("uvicorn worker"))


def _connections_per_pid(port: int) -> dict[int, int]:
    done = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
    )
    return dict(Counter(int(m) for m in re.findall(r"pid=(\d+)", done.stdout)))


# --- py-spy: which code the workers' CPU goes to ------------------------------------------------

# First match wins, tested against the whole stack (root to leaf), most specific first.
CATEGORIES = [
    ("POST: render the timeline partial (after commit)", ("render_to_string",)),
    ("POST: publish the frame to Redis (after commit)", ("frame_send",)),
    ("POST: rest of the request (DB, ORM, middleware, view)", ("django/core/handlers",)),
    (
        "consumer: close_old_connections hop per message (channels dispatch)",
        ("aclose_old_connections", "close_old_connections"),
    ),
    ("consumer: websocket permessage-deflate, once per client", ("permessage_deflate",)),
    ("consumer: websocket send, socket write (leaf)", ("WebSocketsSansIOProtocol.send",)),
    ("consumer: deliver + websocket framing", ("deliver",)),
    ("consumer: _catch_up / _poll (DB read)", ("_catch_up", "stream_replay")),
    ("hub: pub/sub receive, decode once, fan out", ("live/hub.py",)),
    ("channels-redis: receive, unpack, fan in-process", ("channels_redis",)),
    ("channels: await_many_dispatch / dispatch", ("channels/utils.py", "channels/consumer.py")),
    ("uvicorn websocket protocol / frames", ("websockets", "uvicorn/protocols/websockets")),
    ("asgiref thread hops (sync_to_async)", ("asgiref",)),
    ("asyncio / uvloop event loop", ("asyncio", "uvloop")),
]


def _categorize(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1]
    for name, needles in CATEGORIES:
        where = leaf if "(leaf)" in name else stack
        if any(n in where for n in needles):
            return name
    return "other"


def _leaf(stack: str) -> str:
    frame = stack.rsplit(";", 1)[-1]
    return re.sub(r"\(/.*?site-packages/", "(", frame).replace(str(ROOT) + "/", "")


def _pyspy_start(pids: list[int], seconds: float, work: Path) -> list[tuple]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    runs = []
    for pid in pids:
        out = work / f"pyspy-{pid}.txt"
        command = [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
                   "--duration", str(math.ceil(seconds)), "--rate", "250", "--gil",
                   "--nonblocking"]  # fmt: skip
        spied = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        runs.append((spied, out))
    return runs


def _pyspy_report(runs, rate: float, seconds: float, posts: int) -> None:
    totals: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    per_worker = []
    for process, out in runs:
        _, err = process.communicate(timeout=seconds + 60)
        if not out.exists():
            print(f"  py-spy produced nothing: {err.strip()[-300:]}")
            return
        samples = 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            samples += n
            totals[_categorize(stack)] += n
            leaves[_leaf(stack)] += n
        per_worker.append(samples)
    if not per_worker or not sum(per_worker):
        print("  py-spy recorded no samples")
        return
    busy = ", ".join(f"{s / (rate * seconds) * 100:.0f} %" for s in per_worker)
    print(
        f"  GIL held (Python running) in the uvicorn workers: {busy} of the time; "
        f"ms of GIL time per post, both workers together ({posts} posts):"
    )
    all_samples = sum(totals.values())
    for name, n in totals.most_common():
        print(f"    {name:<68} {n / rate / posts * 1000:>7.2f} ms  {n / all_samples * 100:>5.1f} %")
    print("  hottest leaf functions:")
    for frame, n in leaves.most_common(12):
        print(f"    {n / all_samples * 100:>5.1f} %  {frame[:150]}")


# --- the two loads ------------------------------------------------------------------------------


class Poster:
    def __init__(self, session: Session, incident: int, run: str) -> None:
        self.session, self.incident, self.run = session, incident, run
        self.counter = iter(range(10**9))
        self.lock = threading.Lock()
        self.posts: dict[int, dict] = {}

    def post(self, session: Session) -> int:
        with self.lock:
            post = next(self.counter)
        text = f"nfmark-{post}-{self.run} status update {post}: error rate still elevated"
        t0 = time.monotonic()
        status = session.narrate(self.incident, text)
        self.posts[post] = {"t0": t0, "t_resp": time.monotonic(), "status": status}
        return post


def _paced(poster: Poster, count: int, rate: float) -> list[int]:
    ids, start = [], time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        ids.append(poster.post(poster.session))
    return ids


def _flood(poster: Poster, posters: int, seconds: float) -> tuple[list[int], float]:
    ids: list[int] = []
    end = time.monotonic() + seconds

    def run(session: Session) -> None:
        while time.monotonic() < end:
            ids.append(poster.post(session))

    threads = [threading.Thread(target=run, args=(poster.session.clone(),)) for _ in range(posters)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(ids), time.monotonic() - started


def _row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<46} {'no data':>8}"
    return (
        f"  {label:<46} {pct(values, 50):>8.1f} {pct(values, 95):>8.1f} {pct(values, 99):>8.1f}"
        f" {max(values):>8.1f} {statistics.fmean(values):>8.1f} {len(values):>7}"
    )


def _report(title: str, poster: Poster, ids: list[int], got: dict) -> dict:
    accepted = [i for i in ids if poster.posts[i]["status"] == 200]
    refused = Counter(poster.posts[i]["status"] for i in ids if poster.posts[i]["status"] != 200)
    index = {post: k for k, post in enumerate(ids)}
    resp, first, allc, spread, per_client = [], [], [], [], []
    complete, missing, late = 0, 0, 0
    for post in accepted:
        p = poster.posts[post]
        resp.append((p["t_resp"] - p["t0"]) * 1000)
        times = [row[index[post]] for row in got["times"]]
        seen = [(t - p["t0"]) * 1000 for t in times if t is not None]
        missing += len(times) - len(seen)
        late += sum(1 for d in seen if d > LATE_MS)
        per_client.extend(seen)
        if seen:
            first.append(min(seen))
        if len(seen) == len(times):
            complete += 1
            allc.append(max(seen))
            spread.append(max(seen) - min(seen))
    print(f"\n{title}")
    print(f"  {'ms from t0 (before the POST)':<46} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}"
          f" {'mean':>8} {'n':>7}")  # fmt: skip
    print(_row("POST answered (t_resp)", resp))
    print(_row("first client received", first))
    print(_row(f"all {len(got['times'])} clients received (max per post)", allc))
    print(_row("per client (each client x post)", per_client))
    print(_row("spread: last - first client, per post", spread))
    print(
        f"  posts accepted {len(accepted)}/{len(ids)}"
        + (f" (refused: {dict(refused)})" if refused else "")
        + f"; received by every client {complete}/{len(accepted)}; messages missing "
        f"{missing} of {len(accepted) * len(got['times'])}; later than {LATE_MS:.0f} ms {late}; "
        f"duplicates {got['duplicates']}; sequence gaps seen {got['seq_gaps']}; "
        f"sockets closed {got['closed']}"
        + (f"; non-live statuses {got['not_live']}" if got["not_live"] else "")
    )
    return {"all": allc, "per_client": per_client, "complete": complete, "accepted": len(accepted),
            "missing": missing}  # fmt: skip


def _cpu_table(rows: list[tuple[str, tuple[float, dict[str, float], float], int]]) -> None:
    names = sorted({n for _, (_, used, _), _ in rows for n in used}, key=lambda n: (n[:7], n))
    print(f"\nCPU, % of one core (2 cores = 200 %)  {'  '.join(f'{t:>12}' for t, _, _ in rows)}")
    for name in [*names, "rest of machine (not this bench)", "machine total"]:
        cells = []
        for _, (wall, used, rest), _ in rows:
            value = (
                rest if name.startswith("rest") else
                sum(used.values()) + rest if name == "machine total" else used.get(name, 0.0)
            )  # fmt: skip
            cells.append(f"{value / wall * 100:>11.0f}%")
        print(f"  {name:<36} {'  '.join(cells)}")
    cells = []
    for _, (_, used, _), posts in rows:
        worker = sum(v for n, v in used.items() if n.startswith("uvicorn worker"))
        cells.append(f"{worker / max(posts, 1) * 1000:>9.1f} ms")
    print(f"  {'uvicorn workers: CPU per post':<36} {'  '.join(cells)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--posts", type=int, default=200, help="latency phase: posts")
    parser.add_argument("--rate", type=float, default=20, help="latency phase: posts/s")
    parser.add_argument("--posters", type=int, default=4, help="throughput phase: concurrent")
    parser.add_argument("--duration", type=float, default=15, help="throughput phase: s")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--grace", type=float, default=20, help="s to wait for stragglers")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy phase")
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="clients do not offer permessage-deflate (browsers do)",
    )
    parser.add_argument("--profile-seconds", type=float, default=8)
    parser.add_argument("--keep-log", action="store_true", help="keep serve's log and say where")
    args = parser.parse_args()
    try:
        import websockets  # noqa: F401  (installed with uvicorn[standard])
    except ImportError:
        sys.exit("the websockets package is missing: pip install 'uvicorn[standard]'")

    database = f"stepwise_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    password = uuid.uuid4().hex
    env = production_env(database=database, work=work, redis_url=REDIS, prefix=prefix)
    psql(f'CREATE DATABASE "{database}"')
    process, clients, log, keep = None, None, work / "serve.log", False
    parent_conn = None
    try:
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput")
        setup = json.loads(
            manage(env, "shell", "-c", SETUP % {"params": json.dumps({"password": password})})
            .strip()
            .splitlines()[-1]
        )
        incident, stream = setup["incident"], setup["stream"]

        port = free_port()
        base = f"http://127.0.0.1:{port}"

        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--web-workers", str(args.web_workers), "--celery-concurrency", "1"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_ready(base, process, log)
        commander, viewer = Session(port), Session(port)
        commander.login("bench-commander", password)
        viewer.login("bench-viewer", password)
        # One warm-up narration: the first request of a worker compiles templates and URLconfs.
        if (status := commander.narrate(incident, "warm-up")) != 200:
            sys.exit(f"warm-up narration refused: {status}")
        seq = json.loads(
            manage(
                env, "shell", "-c",
                f"from live.models import Stream; print(Stream.objects.get(name={stream!r}).last_seq)",
            ).strip().splitlines()[-1]
        )  # fmt: skip

        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        clients = ctx.Process(
            target=_clients_process,
            args=(
                child_conn,
                {
                    "url": f"ws://127.0.0.1:{port}/ws/live/",
                    "origin": base,
                    "port": port,
                    "cookie": f"sessionid={viewer.cookies['sessionid']}",
                    "stream": stream,
                    "seq": seq,
                    "clients": args.clients,
                    "connect_concurrency": 50,
                    "deflate": not args.no_compression,
                },
            ),
            daemon=True,
        )
        clients.start()
        if not parent_conn.poll(120):
            sys.exit("websocket clients did not report within 120 s")
        ready = parent_conn.recv()
        if ready["live"] != args.clients:
            sys.exit(f"only {ready['live']} of {args.clients} clients live: {ready['failures']}")
        per_pid = _connections_per_pid(port)
        meter = CpuMeter(process.pid, clients.pid)
        workers = _uvicorn_workers(meter)
        load = os.getloadavg()
        print(
            f"narration fan-out bench: {args.clients} websocket clients on {stream} "
            f"(live after {ready['connect_seconds']:.1f} s; TCP connections per uvicorn "
            f"worker, the poster's included: "
            f"{sorted(per_pid.values(), reverse=True)}), manage.py serve --web-workers "
            f"{args.web_workers} (uvicorn, one live hub per worker on Redis db 12 pub/sub, Celery worker "
            f"concurrency 1 + beat, idle), PostgreSQL, STEPWISE_ENV=production; clients "
            + (
                "without compression"
                if args.no_compression
                else f"with permessage-deflate (negotiated by {ready['deflate']})"
            ),
            flush=True,
        )
        print(
            f"machine: {os.cpu_count()} cores shared by all of it, the bench's clients process "
            f"and poster, and anything else running; load average {load[0]:.1f} / {load[1]:.1f}"
            f" / {load[2]:.1f} at the start",
            flush=True,
        )

        run = uuid.uuid4().hex[:6]
        poster = Poster(commander, incident, run)
        cpu_rows = []

        def phase(label: str, load) -> tuple[list[int], dict, float]:
            parent_conn.send(("cpu",))
            client_cpu0 = parent_conn.recv()
            before = meter.snapshot()
            ids, seconds = load()
            after = meter.snapshot()
            parent_conn.send(("cpu",))
            client_cpu1 = parent_conn.recv()
            drain_start = time.monotonic()
            parent_conn.send(("collect", ids, args.grace))
            got = parent_conn.recv()
            got["drain"] = time.monotonic() - drain_start
            got["client_cpu"] = client_cpu1 - client_cpu0
            cpu_rows.append((label, CpuMeter.diff(before, after), len(ids)))
            return ids, got, seconds

        def paced() -> tuple[list[int], float]:
            started = time.monotonic()
            ids = _paced(poster, args.posts, args.rate)
            return ids, time.monotonic() - started

        ids, got, seconds = phase("(a) latency", paced)
        a = _report(
            f"(a) latency: {len(ids)} narrations, one at a time, paced to {args.rate:g}/s "
            f"(achieved {len(ids) / seconds:.1f}/s over {seconds:.1f} s)",
            poster, ids, got,
        )  # fmt: skip
        messages = sum(1 for row in got["times"] for t in row if t is not None)
        print(
            f"  bench clients' own CPU: {got['client_cpu'] / max(messages, 1) * 1e6:.0f} µs per "
            f"received message ({got['client_cpu'] / seconds * 100:.0f} % of a core)"
        )

        ids, got, seconds = phase(
            "(b) throughput", lambda: _flood(poster, args.posters, args.duration)
        )
        b = _report(
            f"(b) throughput: {args.posters} concurrent posters for {seconds:.1f} s",
            poster, ids, got,
        )  # fmt: skip
        messages = sum(1 for row in got["times"] for t in row if t is not None)
        last_receipt = max((t for row in got["times"] for t in row if t is not None), default=0)
        first_t0 = min(poster.posts[i]["t0"] for i in ids)
        last_resp = max(poster.posts[i]["t_resp"] for i in ids)
        print(
            f"  posts accepted {b['accepted'] / seconds:.1f}/s; websocket messages delivered "
            f"{messages} = {messages / (last_receipt - first_t0):.0f}/s, the last "
            f"{(last_receipt - last_resp) * 1000:.0f} ms after the last POST was answered; "
            f"every client got every post: {'yes' if b['missing'] == 0 else 'NO'}"
        )
        print(
            f"  bench clients' own CPU: {got['client_cpu'] / max(messages, 1) * 1e6:.0f} µs per "
            f"received message ({got['client_cpu'] / seconds * 100:.0f} % of a core)"
        )
        _cpu_table(cpu_rows)

        if not args.no_profile:
            print(
                f"\nwhere the workers' time goes: py-spy (--gil, 250 Hz, nonblocking) on uvicorn "
                f"workers {workers} for {args.profile_seconds:g} s of the latency load "
                f"({args.rate:g} posts/s); numbers not comparable with (a)",
                flush=True,
            )
            runs = _pyspy_start(workers, args.profile_seconds, work)
            time.sleep(1.0)  # py-spy attaches
            ids = _paced(poster, int(args.profile_seconds * args.rate), args.rate)
            _pyspy_report(runs, 250, math.ceil(args.profile_seconds), len(ids))
            parent_conn.send(("collect", ids, args.grace))
            parent_conn.recv()

        p99 = pct(a["all"], 99) if a["all"] else math.inf
        verdict = "meets" if p99 <= TARGET_P99_MS and a["missing"] == 0 else "misses"
        print(
            f"\nall-clients delay p99 at {args.rate:g} posts/s: {p99:.0f} ms: {verdict} the target "
            f"(p99 <= {TARGET_P99_MS:.0f} ms with {args.clients} clients)"
        )
        keep = args.keep_log
    finally:
        if parent_conn is not None and clients is not None and clients.is_alive():
            with contextlib.suppress(Exception):
                parent_conn.send(("close",))
                parent_conn.poll(5)
        if clients is not None:
            clients.join(timeout=5)
            if clients.is_alive():
                clients.kill()
        stop_and_drop(process, database=database, redis_url=REDIS, prefix=prefix)
        if keep:
            print(f"serve log kept: {log}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
