"""OFREP load test against the production-shaped server.

PostgreSQL (its own database, created and dropped here), Redis db 12, STEPWISE_ENV=production,
`uvicorn stepwise.asgi:application --workers 2`, 20 flags with percentage rollouts, one token
registered as a flag consumer; then `wrk -t2 -c32 -d15s --latency` on three paths:

- bulk:   POST /ofrep/v1/evaluate/flags, a new targetingKey on every request (no 304 possible)
- single: POST /ofrep/v1/evaluate/flags/{key}, a new targetingKey on every request
- 304:    POST /ofrep/v1/evaluate/flags with If-None-Match of the current ETag

Usage: python bench/ofrep_bench.py [--duration 15s] [--verbose]   (or: make bench)
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from served import ROOT, free_port, manage, production_env, psql, stop_and_drop, wait_ready

REDIS = "redis://127.0.0.1:6379/12"
FLAGS = 20

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
    unexpected = int(re.search(r"unexpected-status: (\d+)", output).group(1))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", default="15s")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output too")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")

    database = f"stepwise_bench_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="ofrep-bench-"))
    env = production_env(database=database, work=work, redis_url=REDIS)
    psql(f'CREATE DATABASE "{database}"')
    process = None
    try:
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput")
        token = json.loads(manage(env, "shell", "-c", SEED % {"flags": FLAGS}).splitlines()[-1])[
            "token"
        ]

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = work / "uvicorn.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "uvicorn", "stepwise.asgi:application",
                    "--host", "127.0.0.1", "--port", str(port),
                    "--workers", args.workers, "--no-access-log", "--log-level", "warning",
                ],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
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
        print(f"{'path':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9}  problems")
        results = {}
        for name, script in scripts.items():
            result = results[name] = _wrk(base, script, args.duration)
            problems = (
                f"unexpected status {result['unexpected']}; socket errors {result['socket_errors']}"
            )
            if sample := re.search(r"unexpected-sample: (.*)", result["raw"]):
                problems += f" (e.g. {sample.group(1)[:160]})"
            print(
                f"{name:<8} {result['rps']:>9.0f} {result['p50']:>8.2f} {result['p99']:>8.2f}"
                f" {result['requests']:>9}  {problems}"
            )
            if args.verbose:
                print(result["raw"])
        bulk = results["bulk"]
        verdict = "meets" if bulk["rps"] >= 2500 and bulk["p99"] <= 40 else "misses"
        print(
            f"bulk {verdict} the target (>= 2,500 req/s, p99 <= 40 ms; Unleash: 2,372 req/s, p99 44.8 ms)"
        )
        held = manage(
            env, "shell", "-c",
            "from rollouts.models import FlagConsumer; print(FlagConsumer.objects.get(name='bench').held_revision)",
        ).strip()  # fmt: skip
        print(f"consumer 'bench' holds revision {held.splitlines()[-1]}")
    finally:
        stop_and_drop(process, database=database)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
