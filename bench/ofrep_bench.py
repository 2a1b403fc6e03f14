"""OFREP load test against the production-shaped server.

PostgreSQL (its own database, created and dropped here), Redis db 12, STEPWISE_ENV=production,
`uvicorn stepwise.asgi:application --workers 2`, 20 flags with percentage rollouts, one token
registered as a flag consumer; then `wrk -t2 -c32 -d15s --latency` on three paths:

- bulk:   POST /ofrep/v1/evaluate/flags, a new targetingKey on every request (no 304 possible)
- single: POST /ofrep/v1/evaluate/flags/{key}, a new targetingKey on every request
- 304:    POST /ofrep/v1/evaluate/flags with If-None-Match of the current ETag

Then the peer a team would pick instead, in the same run: Unleash 8 started by
`../shared/peers/unleash/start` (its own PostgreSQL database, 20 flags at 25 %), `/api/frontend`
(every flag evaluated for a new userId) and Stepwise's bulk path under the same wrk settings,
interleaved (peer, Stepwise, peer, Stepwise). Nothing of the peer is typed in here: if it cannot
start, the bench says so and measures Stepwise alone.

Then freshness across processes: a second server (one uvicorn worker) beside the first, and
bench/freshness_probe.py times, for 100 flag changes and 12 token revocations, the commit to the
first answer that carries it on each server (target p99 <= 50 ms and <= 1 s). Then scale: 180
more flags (200 in all, at 25 %) and the bulk path again (target >= 0.50x the 20-flag rate). A
Celery worker records consumer fetches, as in production; the last line checks it did.

Usage: python bench/ofrep_bench.py [--duration 15s] [--rounds 2] [--verbose]   (or: make bench)
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from served import ROOT, free_port, manage, production_env, psql, stop_and_drop, wait_ready

REDIS = "redis://127.0.0.1:6379/12"
FLAGS = 20
SCALE_FLAGS = 200
PEER = Path(os.environ.get("STEPWISE_UNLEASH_PEER", ROOT.parent / "shared" / "peers" / "unleash"))

MORE_FLAGS = """
from rollouts.services.flags import flag_change, flag_create
for i in range(%(start)d, %(end)d):
    key = f"bench-flag-{i:03d}"
    flag_create(key=key, description="bench", kind="release", owner="bench", actor=None)
    flag_change(flag_key=key, changes={"enabled": True, "rollout_percentage": 25}, actor=None,
                reason="bench", source="api")
"""

SEED = """
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from accounts.roles import roles_sync
from accounts.services import api_token_create
from rollouts.models import Target
from rollouts.services.consumers import flag_consumer_register
from rollouts.services.flags import flag_change, flag_create

for i in range(%(flags)d):
    key = f"bench-flag-{i:02d}"
    flag_create(key=key, description="bench", kind="release", owner="bench", actor=None)
    changes = {"enabled": True, "rollout_percentage": 5 * (i + 1) - 0.5}
    if i %% 4 == 0:
        changes["rules"] = [{"attribute": "country", "op": "in", "values": ["BE"], "variant": "on"}]
    flag_change(flag_key=key, changes=changes, actor=None, reason="bench", source="api")
# Not seed_demo: its demo flags would change how many flags a bulk answer carries.
roles_sync()
user = get_user_model().objects.create_user(username="bench")
user.groups.set([Group.objects.get(name="viewer")])
token, raw = api_token_create(user=user, name="bench", scopes=["flags:evaluate"])
target, _ = Target.objects.get_or_create(name="bench")  # no Target service exists yet
flag_consumer_register(name="bench", token=token, target=target, actor=None)
print(json.dumps({"token": raw}))
"""

LUA_COMMON = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local threads = {}
local counter = 0
unexpected = 0
last_bad = ""
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function response(status, headers, body)
  if status ~= %(expect)d then
    unexpected = unexpected + 1
    last_bad = status .. " " .. string.sub(body or "", 1, 200)
  end
end
function done(summary, latency, requests)
  local bad = 0
  local sample = ""
  for _, t in ipairs(threads) do
    bad = bad + t:get("unexpected")
    if t:get("last_bad") ~= "" then sample = t:get("last_bad") end
  end
  io.write(string.format("unexpected-status: %%d\\n", bad))
  if bad > 0 then io.write("unexpected-sample: " .. sample .. "\\n") end
end
"""

LUA_BULK = """
request = function()
  counter = counter + 1
  local body = string.format('{"context":{"targetingKey":"user-%%d-%%d","country":"NL"}}', tid, counter)
  return wrk.format(nil, "/ofrep/v1/evaluate/flags", nil, body)
end
"""

LUA_SINGLE = """
request = function()
  counter = counter + 1
  local body = string.format('{"context":{"targetingKey":"user-%%d-%%d"}}', tid, counter)
  return wrk.format(nil, "/ofrep/v1/evaluate/flags/bench-flag-07", nil, body)
end
"""

LUA_304 = """
wrk.headers["If-None-Match"] = '%(etag)s'
wrk.body = '%(body)s'
wrk.path = "/ofrep/v1/evaluate/flags"
"""

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _post(base: str, path: str, token: str, body: dict, etag: str | None = None):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            **({"If-None-Match": etag} if etag else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * UNITS[unit]


def _parse(output: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    errors = re.search(r"Socket errors: (.*)", output)
    # The peer's script counts no statuses; wrk itself reports non-2xx/3xx answers.
    counted = re.search(r"unexpected-status: (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    unexpected = int(counted.group(1)) if counted else int(non_2xx.group(1)) if non_2xx else 0
    total = int(re.search(r"(\d+) requests in", output).group(1))
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "requests": total,
        "unexpected": unexpected,
        "socket_errors": errors.group(1) if errors else "none",
    }


def _wrk(base: str, script: Path, duration: str) -> dict:
    done = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}", "--latency", "-s", str(script), base],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"wrk failed:\n{done.stderr}")
    return {**_parse(done.stdout), "raw": done.stdout}


def _peer_start() -> tuple[str, str] | None:
    """(pid, url) of a running Unleash, or None after saying why it could not start."""
    start = PEER / "start"
    if not start.exists():
        print(f"peer: not measured: {start} does not exist (set STEPWISE_UNLEASH_PEER)")
        return None
    done = subprocess.run([str(start)], capture_output=True, text=True, timeout=600)
    found = re.search(r"UNLEASH_PID=(\d+) UNLEASH_URL=(\S+)", done.stdout)
    if done.returncode != 0 or not found:
        why = (done.stderr or done.stdout).strip().splitlines()[-3:]
        print(f"peer: not measured: Unleash did not start ({' / '.join(why)})")
        return None
    return found.group(1), found.group(2)


def _peer_stop(pid: str) -> None:
    subprocess.run([str(PEER / "stop"), pid], capture_output=True, timeout=60)


def _row(name: str, result: dict) -> str:
    problems = f"unexpected status {result['unexpected']}; socket errors {result['socket_errors']}"
    problems += f"; load {os.getloadavg()[0]:.1f}"
    if sample := re.search(r"unexpected-sample: (.*)", result["raw"]):
        problems += f" (e.g. {sample.group(1)[:160]})"
    return (
        f"{name:<14} {result['rps']:>9.0f} {result['p50']:>8.2f} {result['p99']:>8.2f}"
        f" {result['requests']:>9}  {problems}"
    )


def _side_by_side(base: str, bulk: Path, duration: str, rounds: int) -> list[dict]:
    """Stepwise's bulk runs, interleaved with Unleash's when the peer starts."""
    peer = _peer_start()
    if peer is None:
        return [_wrk(base, bulk, duration) for _ in range(rounds)]
    pid, url = peer
    try:
        _wrk(url, PEER / "frontend.lua", "3s")  # warm-up, as Stepwise had
        print(f"\nside by side, interleaved, {rounds} rounds of wrk -t2 -c32 -d{duration}:")
        print(f"{'server':<14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9}  problems")
        ours, theirs = [], []
        for _ in range(rounds):
            theirs.append(_wrk(url, PEER / "frontend.lua", duration))
            print(_row("unleash", theirs[-1]))
            ours.append(_wrk(base, bulk, duration))
            print(_row("ofrep bulk", ours[-1]))
    finally:
        _peer_stop(pid)

    def mean(results: list[dict], key: str) -> float:
        return sum(r[key] for r in results) / len(results)

    throughput = mean(ours, "rps") / mean(theirs, "rps")
    tail = mean(ours, "p99") / mean(theirs, "p99")
    print(f"OFREP bulk vs Unleash: throughput {throughput:.2f}x, p99 {tail:.2f}x")
    return ours


def _uvicorn(env: dict, port: int, workers: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "stepwise.asgi:application",
                "--host", "127.0.0.1", "--port", str(port),
                "--workers", workers, "--no-access-log", "--log-level", "warning",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _freshness(env: dict, servers: list[str], token: str) -> None:
    """Commit to first answer carrying it, on each server (bench/freshness_probe.py)."""
    probe = (ROOT / "bench" / "freshness_probe.py").read_text()
    out = manage(
        {**env, "PROBE_SERVERS": ",".join(servers), "PROBE_TOKEN": token},
        "shell", "-c", probe,
    )  # fmt: skip
    measured = json.loads(out.strip().splitlines()[-1])
    for name, target in (("flag change", 50.0), ("token revoked", 1000.0)):
        per_server = measured["flag_ms" if name == "flag change" else "revoke_ms"]
        for server, values in per_server.items():
            missed = sum(v is None for v in values)
            seen = [v for v in values if v is not None]
            print(
                f"freshness, {name:<13} at {server}: {len(values)} trials, p50 "
                f"{_percentile(seen, 0.5):.1f} ms, p99 {_percentile(seen, 0.99):.1f} ms, max "
                f"{max(seen):.1f} ms, not seen within 5 s: {missed} (target p99 <= {target:.0f} ms)"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", default="15s")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved peer/Stepwise rounds")
    parser.add_argument("--no-peer", action="store_true", help="measure Stepwise alone")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output too")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")

    database = f"stepwise_bench_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="ofrep-bench-"))
    env = production_env(database=database, work=work, redis_url=REDIS)
    psql(f'CREATE DATABASE "{database}"')
    process = worker = None
    try:
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput")
        token = json.loads(manage(env, "shell", "-c", SEED % {"flags": FLAGS}).splitlines()[-1])[
            "token"
        ]

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = work / "uvicorn.log"
        process = _uvicorn(env, port, args.workers, log)
        # Consumer bookkeeping is a worker task (once a second per serving process).
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "stepwise", "worker", "--pool", "solo",
             "--loglevel", "warning"],
            cwd=ROOT, env=env, stdout=(work / "worker.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_ready(base, process, log, path="/healthz", timeout=60)

        context = {"context": {"targetingKey": "steady-user", "country": "NL"}}
        status, headers, body = _post(base, "/ofrep/v1/evaluate/flags", token, context)
        flags = json.loads(body)["flags"]
        if status != 200 or len(flags) != FLAGS or any("errorCode" in f for f in flags):
            sys.exit(f"bulk sanity check failed: {status} {body[:500]!r}")
        etag = headers["ETag"]
        if _post(base, "/ofrep/v1/evaluate/flags", token, context, etag)[0] != 304:
            sys.exit("304 sanity check failed")

        scripts = {}
        for name, lua, expect in (
            ("bulk", LUA_BULK, 200),
            ("single", LUA_SINGLE, 200),
            ("304", LUA_304, 304),
        ):
            script = work / f"{name}.lua"
            script.write_text(
                LUA_COMMON % {"token": token, "expect": expect}
                + lua % {"etag": etag, "body": json.dumps(context)}
            )
            scripts[name] = script

        _wrk(base, scripts["bulk"], "3s")  # warm-up: connections, compiled config
        print(
            f"OFREP bench: {FLAGS} flags, {args.workers} uvicorn workers, wrk -t2 -c32 -d{args.duration}"
        )
        print(f"{'path':<14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9}  problems")
        for name, script in scripts.items():
            result = _wrk(base, script, args.duration)
            print(_row(name, result))
            if args.verbose:
                print(result["raw"])
        if args.no_peer:
            bulk20 = [_wrk(base, scripts["bulk"], args.duration)]
        else:
            bulk20 = _side_by_side(base, scripts["bulk"], args.duration, args.rounds)

        port2 = free_port()
        second = _uvicorn(env, port2, "1", work / "uvicorn-2.log")
        try:
            wait_ready(f"http://127.0.0.1:{port2}", second, work / "uvicorn-2.log", path="/healthz")
            _freshness(env, [f"127.0.0.1:{port}", f"127.0.0.1:{port2}"], token)
        finally:
            second.terminate()
            second.wait(timeout=30)

        manage(env, "shell", "-c", MORE_FLAGS % {"start": FLAGS, "end": SCALE_FLAGS})
        _wrk(base, scripts["bulk"], "3s")
        bulk200 = _wrk(base, scripts["bulk"], args.duration)
        print(_row(f"bulk {SCALE_FLAGS} flags", bulk200))
        rps20 = sum(r["rps"] for r in bulk20) / len(bulk20)
        print(
            f"OFREP bulk, {SCALE_FLAGS} flags vs {FLAGS}: throughput "
            f"{bulk200['rps'] / rps20:.2f}x (target >= 0.50x)"
        )
        time.sleep(2 * 1.0 + 1)  # a flush (every second) and its task
        held = manage(
            env, "shell", "-c",
            "from rollouts.models import FlagConfigRevision as R, FlagConsumer as C;"
            "print(C.objects.get(name='bench').held_revision, R.objects.get(pk=1).revision)",
        ).split()  # fmt: skip
        print(f"consumer 'bench' holds revision {held[-2]} of {held[-1]} (recorded by the worker)")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        stop_and_drop(process, database=database)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
