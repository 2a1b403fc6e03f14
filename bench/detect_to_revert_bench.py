"""Detect-to-revert latency of the verification engine, against the real served app.

`manage.py serve` in Redis mode (uvicorn, one Celery worker with --concurrency 2, beat) with
STEPWISE_ENV=production, on its own PostgreSQL database and its own Redis prefix in db 12, both
removed afterwards.

Background: 500 running manual steps (50 plans x 10) verified every `--interval` seconds on a
built-in metric (one metric name per plan), and a feeder: one healthy sample per series every
`--feed-every` seconds through the ingest API, one batch per metric name, the batches spread
over the period like independent exporters. Each batch also triggers an ingest evaluation of
every running verification whose fail condition reads that metric name, as in production.

Trials: each is a running flag_ramp step (its own flag at 5 %, its own metric; `fail: err > 0.5`
over avg 1m; on_fail set_flag_percentage 0; interval 3600 s, so only a breaching sample can act).
A trial posts one breaching sample and waits for the flags board's push of that flag at 0 % on
one connected `/ws/live/` client (session cookie, Origin, `resume` of the `flags` stream):

    t0        just before POST /api/metrics/ingest
    t_resp    when the ingest API answered (its on-commit receiver has queued the task by then)
    t_eval    Evaluation.evaluated_at of the ingest-triggered evaluation (worker, after measuring)
    t_commit  FlagVersion.created_at of the 0 % version (inside the transaction that commits it)
    t_ws      when the websocket client received the flag's row at 0 %

One machine, one clock. Setup writes rows directly and starts the steps as step_transition would
(without re-rendering plan pages 700 times); the measured path is the real one: ingest API ->
samples_ingested on commit -> verification_evaluate_task.delay -> worker -> evaluation_record
(flag_change + step_transition fail in one transaction) -> group_send on commit ->
LiveConsumer -> socket. A missed target is a result: the exit status is non-zero only when the
setup fails.

Usage: python bench/detect_to_revert_bench.py [--trials 200] [--steps 500] [--interval 30]
       [--feed-every 60] [--metrics 50] [--keep-log]                  (or: make bench)
"""

import argparse
import json
import math
import os
import queue
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from served import ROOT, free_port, manage, pct, production_env, psql, stop_and_drop, wait_ready

REDIS = "redis://127.0.0.1:6379/12"
STEPS_PER_PLAN = 10
TARGET_P99_MS = 250.0

SETUP = r"""
import json, time
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.test import Client
from django.utils import timezone
from accounts.roles import roles_sync
from accounts.services import api_token_create
from live.models import Stream
from rollouts.models import Plan, Step
from rollouts.services.flags import flag_change, flag_create
from rollouts.services.verification import verification_begin
from signals.services import samples_ingest

P = json.loads(%(params)r)
User = get_user_model()
roles_sync()
watcher = User.objects.create_user(username="bench-watcher")
watcher.groups.set([Group.objects.get(name="viewer")])
client = Client()
client.force_login(watcher)
exporter = User.objects.create_user(username="bench-exporter")
exporter.user_permissions.add(
    Permission.objects.get(content_type__app_label="signals", codename="add_sample")
)
_, token = api_token_create(user=exporter, name="bench", scopes=["metrics:write"])

started = time.monotonic()
background = []
for p in range(P["bg_plans"]):
    plan = Plan.objects.create(key=f"bg-{p:02d}", name=f"Background {p}", owner="bench", status="active")
    for k in range(P["per_plan"]):
        n = p * P["per_plan"] + k
        background.append(Step.objects.create(
            plan=plan, key=f"s{k:02d}", title=f"background {n}", owner_team="bench",
            kind="manual", position=k + 1,
            pass_condition="err < 0.5", fail_condition="err > 0.5", on_fail="pause_plan",
            measurements={"err": {"metric": P["bg_series"][n][0], "aggregation": "avg",
                                  "matchers": {"series": P["bg_series"][n][1]},
                                  "window": P["bg_window"]}},
            verify_interval_seconds=P["interval"], verify_count=100000,
            # Spread the first evaluations over one interval, so beat claims a steady share.
            verify_initial_delay_seconds=n %% P["interval"],
            consecutive_error_limit=100000, inconclusive_limit=100000,
        ))
# Healthy data before the verifications start (nothing watches the metric yet).
now = time.time()
samples_ingest(payload={"samples": [
    {"name": metric, "labels": {"series": label}, "timestamp": now, "value": 0.01}
    for metric, label in P["bg_series"]
]})
trials = []
for t in range(P["trials"]):
    if t %% P["per_plan"] == 0:
        plan = Plan.objects.create(key=f"trial-{t // P['per_plan']:02d}", name=f"Trials {t}",
                                   owner="bench", status="active")
    flag = flag_create(key=f"bench-trial-{t:03d}", description="bench", kind="release",
                       owner="bench", actor=None)
    metric = P["trial_metric"] %% t
    step = Step.objects.create(
        plan=plan, key=f"ramp-{t:03d}", title=f"trial {t}", owner_team="bench",
        kind="flag_ramp", position=t %% P["per_plan"] + 1, flag=flag, flag_percentage=5,
        pass_condition="err < 0.5", fail_condition="err > 0.5",
        on_fail="set_flag_percentage", on_fail_percentage=0,
        measurements={"err": {"metric": metric, "aggregation": "avg",
                              "matchers": {"trial": str(t)}, "window": "1m"}},
        # Only a breaching sample can evaluate it within the run.
        verify_interval_seconds=3600, verify_initial_delay_seconds=3600, verify_count=3,
    )
    trials.append({"n": t, "flag": flag.key, "metric": metric, "step": step.pk})
# Started as step_transition would, without re-rendering a plan page 700 times: ready ->
# running, a verification run with its watches, and (flag ramps) the flag at 5 %% for the step.
for step in [*background, *Step.objects.filter(pk__in=[t["step"] for t in trials])]:
    with transaction.atomic():
        Step.objects.filter(pk=step.pk).update(status="running", started_at=timezone.now())
        verification_begin(step)
        if step.flag_id:
            flag_change(flag_key=step.flag.key, changes={"enabled": True, "rollout_percentage": 5},
                        actor=None, reason=f"{step.plan.key}/{step.key}: ramp to 5%%",
                        source="plan", step=step)
print(json.dumps({
    "token": token,
    "session": client.cookies["sessionid"].value,
    "flags_seq": Stream.objects.get(name="flags").last_seq,
    "trials": trials,
    "setup_seconds": round(time.monotonic() - started, 1),
}))
"""

RESULTS = r"""
import json
from datetime import datetime, UTC
from django.db.models import Count
from rollouts.models import Evaluation, FlagVersion, Step, Verification

P = json.loads(%(params)r)
start = datetime.fromtimestamp(P["start"], tz=UTC)
end = datetime.fromtimestamp(P["end"], tz=UTC)
flags = [t["flag"] for t in P["trials"]]
commits = {
    key: at.timestamp()
    for key, at in FlagVersion.objects.filter(
        flag__key__in=flags, enabled=True, rollout_percentage=0
    ).values_list("flag__key", "created_at")
}
evaluated = {
    key: at.timestamp()
    for key, at in Evaluation.objects.filter(
        verification__step__flag__key__in=flags, trigger="ingest", outcome="fail"
    ).values_list("verification__step__flag__key", "evaluated_at")
}
steps = dict(Step.objects.filter(flag__key__in=flags).values_list("flag__key", "status"))
window = Evaluation.objects.filter(
    evaluated_at__gte=start, evaluated_at__lt=end, verification__step__plan__key__startswith="bg-"
)
by_kind = {f"{r['trigger']}/{r['outcome']}": r["n"]
           for r in window.values("trigger", "outcome").annotate(n=Count("id"))}
bg = Verification.objects.filter(step__plan__key__startswith="bg-")
print(json.dumps({
    "commits": commits, "evaluated": evaluated, "steps": steps, "bg_evaluations": by_kind,
    "bg_status": dict(bg.values_list("status").annotate(n=Count("id"))),
}))
"""

TASK_DONE = re.compile(
    r"Task rollouts\.tasks\.verification_evaluate\[[^\]]+\] succeeded in ([\d.]+)s"
)


def _shell_json(env: dict[str, str], code: str) -> dict:
    return json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])


def _ingest(base: str, token: str, samples: list[dict]) -> int:
    request = urllib.request.Request(
        base + "/api/metrics/ingest",
        data=json.dumps({"samples": samples}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # the server went away: counted as a refused post, not a crash
        return 0


class LiveClient(threading.Thread):
    """One browser tab on the flags board: timestamps every pushed flag row as it arrives."""

    ROW = re.compile(
        r'<tr id="flag-(?P<key>[\w-]+)".*?data-testid="flag-state">(?P<state>.*?)</td>', re.S
    )

    def __init__(self, url: str, origin: str, session: str, flags_seq: int) -> None:
        super().__init__(daemon=True)
        from websockets.sync.client import connect

        self.socket = connect(
            url,
            origin=origin,
            additional_headers={"Cookie": f"sessionid={session}"},
            proxy=None,
            compression=None,
            max_size=None,
            legacy=True,  # a plain connection object, closed with the process
        )
        self.socket.send(json.dumps({"type": "resume", "cursors": {"flags": flags_seq}}))
        self.rows: queue.Queue[tuple[float, str, str]] = queue.Queue()
        self.statuses: list[str] = []

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.socket:
                at = time.time()
                for match in self.ROW.finditer(message):
                    state = re.sub(r"<[^>]+>", "", match["state"]).strip()
                    self.rows.put((at, match["key"], state))
                if 'id="live-status"' in message:
                    self.statuses.append(re.sub(r"<[^>]+>", "", message).strip())
        except ConnectionClosed:
            pass

    def wait_for(self, key: str, state: str, deadline: float) -> float | None:
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, got_key, got_state = self.rows.get(timeout=left)
            except queue.Empty:
                return None
            if got_key == key and got_state == state:
                return at
        return None


class Feeder(threading.Thread):
    """The background services' exporters: per metric name, one batch with a healthy sample of
    each of its series every `every` seconds; the batches of different names are spread evenly
    over the period, as independent exporters would be. Also samples the task queue's depth."""

    def __init__(
        self, base: str, token: str, series: list[list[str]], every: float, queue: list[str]
    ) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.every, self.queue = base, token, every, queue
        self.batches: dict[str, list[str]] = {}
        for metric, label in series:
            self.batches.setdefault(metric, []).append(label)
        self.stop = threading.Event()
        self.posts, self.failed, self.post_ms, self.queue_depths = 0, 0, [], []

    def _post(self, metric: str, labels: list[str]) -> None:
        now = time.time()
        samples = [
            {"name": metric, "labels": {"series": label}, "timestamp": now, "value": 0.01}
            for label in labels
        ]
        started = time.monotonic()
        if _ingest(self.base, self.token, samples) == 200:
            self.posts += 1
        else:
            self.failed += 1
        self.post_ms.append((time.monotonic() - started) * 1000)

    def run(self) -> None:
        import redis

        broker = redis.Redis.from_url(REDIS)
        batches = list(self.batches.items())
        gap = self.every / len(batches) if self.every > 0 else math.inf
        next_post = time.monotonic() if self.every > 0 else math.inf
        next_depth, turn = time.monotonic(), 0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_post:
                self._post(*batches[turn % len(batches)])
                turn, next_post = turn + 1, next_post + gap
            if now >= next_depth:
                self.queue_depths.append(_depth(broker, self.queue))
                next_depth = now + 0.5
            self.stop.wait(max(0.0, min(next_post, next_depth) - time.monotonic()))


def _depth(broker, keys: list[str]) -> int:
    pipe = broker.pipeline()
    for key in keys:
        pipe.llen(key)
    return sum(pipe.execute())


def _row(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<44} {'no data':>8}"
    return (
        f"{label:<44} {pct(values, 50):>8.1f} {pct(values, 95):>8.1f} {pct(values, 99):>8.1f}"
        f" {max(values):>8.1f} {statistics.fmean(values):>8.1f} {len(values):>5}"
    )


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b - a) * 1000


ROWS = {
    "end to end": {
        "flag version created (t_commit - t0)": ("t0", "t_commit"),
        # A trial that timed out counts as the timeout: then these are lower bounds.
        "websocket received (t_ws - t0)": ("t0", "t_ws_or_timeout"),
    },
    "stages": {
        "ingest API answered (t_resp - t0)": ("t0", "t_resp"),
        "queue, pickup, measure (t_eval - t_resp)": ("t_resp", "t_eval"),
        "verdict to 0 % version (t_commit - t_eval)": ("t_eval", "t_commit"),
        "rest of txn, commit, push (t_ws - t_commit)": ("t_commit", "t_ws"),
    },
}


def _table(title: str, trials: list[dict]) -> None:
    print(f"\n{title:<44} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'mean':>8} {'n':>5}")
    for group, rows in ROWS.items():
        print(group)
        for label, (a, b) in rows.items():
            values = [v for t in trials if (v := _ms(t[a], t[b])) is not None]
            print(_row("  " + label, values))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--steps", type=int, default=500, help="background running steps")
    parser.add_argument("--interval", type=int, default=30, help="background verify interval, s")
    parser.add_argument(
        "--feed-every", type=float, default=60, help="s between a series' samples (0: no feeder)"
    )
    parser.add_argument(
        "--metrics",
        type=int,
        default=50,
        help="metric names the background reads (default one per plan; 1: every background "
        "fail condition watches the same name, so each batch triggers all of them at once)",
    )
    parser.add_argument("--warmup", type=float, default=8, help="s of load before the trials")
    parser.add_argument("--timeout", type=float, default=20, help="s a trial waits for its push")
    parser.add_argument(
        "--budget", type=float, default=220, help="s of trials at most (keeps a run under 5 min)"
    )
    parser.add_argument("--celery-concurrency", default="2")
    parser.add_argument("--keep-log", action="store_true", help="keep serve's log and say where")
    args = parser.parse_args()
    try:
        import websockets  # noqa: F401  (installed with uvicorn[standard])
    except ImportError:
        sys.exit("the websockets package is missing: pip install 'uvicorn[standard]'")

    database = f"stepwise_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="detect-bench-"))
    env = production_env(database=database, work=work, redis_url=REDIS, prefix=prefix)
    bg_plans = math.ceil(args.steps / STEPS_PER_PLAN)
    bg_steps = bg_plans * STEPS_PER_PLAN
    params = {
        "bg_plans": bg_plans,
        "per_plan": STEPS_PER_PLAN,
        "interval": args.interval,
        "bg_series": [
            [f"bench_bg_{(n // STEPS_PER_PLAN) % args.metrics:02d}_error_ratio", f"bg-{n}"]
            for n in range(bg_steps)
        ],
        # Four batches per window when fed; without a feeder the seeded batch must last the run.
        "bg_window": f"{round(4 * args.feed_every)}s" if args.feed_every > 0 else "1h",
        "trials": args.trials,
        "trial_metric": "bench_trial_%03d_error_ratio",
    }
    psql(f'CREATE DATABASE "{database}"')
    process, log, keep = None, work / "serve.log", False
    try:
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput")
        setup = _shell_json(env, SETUP % {"params": json.dumps(params)})
        token, trials = setup["token"], setup["trials"]

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--celery-concurrency", args.celery_concurrency],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_ready(base, process, log)
        live = LiveClient(
            f"ws://127.0.0.1:{port}/ws/live/", base, setup["session"], setup["flags_seq"]
        )
        live.start()
        # kombu's lists for the default queue (one per priority step), under our prefix
        queue = [f"{prefix}:celery"] + [f"{prefix}:celery\x06\x16{p}" for p in (3, 6, 9)]
        feeder = Feeder(base, token, params["bg_series"], args.feed_every, queue)
        feeder.start()
        print(
            f"detect-to-revert bench: {bg_steps} background steps verified every {args.interval} s"
            f" ({bg_steps / args.interval:.1f} evaluations/s), "
            + (
                f"a healthy sample per series every {args.feed_every:g} s in "
                f"{len(feeder.batches)} batches (one per metric name, spread over the period)"
                if args.feed_every > 0
                else "no feeder"
            )
            + f"; {len(trials)} trials; celery concurrency {args.celery_concurrency}; setup "
            f"{setup['setup_seconds']} s; warming up {args.warmup:g} s",
            flush=True,
        )
        time.sleep(args.warmup)
        if not any(s.startswith("Live") for s in live.statuses):
            sys.exit(f"the websocket client is not live: {live.statuses}")

        import redis

        broker = redis.Redis.from_url(REDIS)
        log_offset = log.stat().st_size
        load_start = os.getloadavg()[0]
        run_start = time.time()
        budget_end = time.monotonic() + args.budget
        measured, timeouts, refused = [], [], []
        for trial in trials:
            if time.monotonic() > budget_end:
                break
            # Off the beat tick's phase: the background is claimed every 2 s.
            time.sleep(random.uniform(0.02, 0.2))
            sample = {"name": trial["metric"], "labels": {"trial": str(trial["n"])},
                      "timestamp": time.time(), "value": 1.0}  # fmt: skip
            depth = _depth(broker, queue)
            t0 = time.time()
            status = _ingest(base, token, [sample])
            t_resp = time.time()
            if status != 200:
                refused.append((trial["flag"], status))
                continue
            t_ws = live.wait_for(trial["flag"], "on 0%", time.monotonic() + args.timeout)
            if t_ws is None:
                timeouts.append(trial["flag"])
            measured.append(
                {
                    **trial,
                    "t0": t0,
                    "t_resp": t_resp,
                    "t_ws": t_ws,
                    "t_ws_or_timeout": t0 + args.timeout if t_ws is None else t_ws,
                    "depth": depth,
                }
            )
        run_end = time.time()
        feeder.stop.set()
        feeder.join(timeout=30)
        done = _shell_json(
            env,
            RESULTS
            % {"params": json.dumps({"start": run_start, "end": run_end, "trials": measured})},
        )
        for m in measured:
            m["t_eval"] = done["evaluated"].get(m["flag"])
            m["t_commit"] = done["commits"].get(m["flag"])
        with log.open() as handle:
            handle.seek(log_offset)
            task_seconds = [float(m) for m in TASK_DONE.findall(handle.read())]

        duration = run_end - run_start
        load_end = os.getloadavg()[0]
        _table("ms from the breaching sample: all trials", measured)
        if timeouts:
            print(f"  (websocket row: a trial that timed out counts as {args.timeout:g} s)")
        idle = [m for m in measured if m["depth"] == 0]
        _table("trials that found the task queue empty", idle)
        not_failed = sorted(m["flag"] for m in measured if done["steps"].get(m["flag"]) != "failed")
        print(
            f"\nload average {load_start:.1f} at the first trial, {load_end:.1f} at the last "
            f"(2 cores, shared with anything else running)"
        )
        print(
            f"trials {len(measured)} in {duration:.0f} s ({len(idle)} found the queue empty); "
            f"websocket timeouts ({args.timeout:g} s) {len(timeouts)}; ingest refused "
            f"{len(refused)}; steps not failed {len(not_failed)} {' '.join(not_failed[:5])}"
        )
        if len(measured) < len(trials):
            print(f"the {args.budget:g} s budget ended the trials early (--budget raises it)")
        recorded = done["bg_evaluations"]
        print(
            f"background: {sum(recorded.values())} evaluations recorded = "
            f"{sum(recorded.values()) / duration:.1f}/s (offered {bg_steps / args.interval:.1f}/s)"
            f" {json.dumps(recorded, sort_keys=True)}; verifications {done['bg_status']}"
        )
        if task_seconds:
            print(
                f"worker: {len(task_seconds)} verification_evaluate tasks = "
                f"{len(task_seconds) / duration:.1f}/s (an ingest-triggered one that finds no "
                f"breach records nothing); task time p50 {pct(task_seconds, 50) * 1000:.1f} ms, "
                f"p99 {pct(task_seconds, 99) * 1000:.1f} ms"
            )
        if depths := feeder.queue_depths:
            print(
                f"celery queue depth (every 0.5 s): mean {statistics.fmean(depths):.0f}, "
                f"max {max(depths)}"
                + (
                    f"; healthy batches {feeder.posts} posted, {feeder.failed} failed, "
                    f"POST p50 {pct(feeder.post_ms, 50):.0f} ms"
                    if feeder.post_ms
                    else ""
                )
            )
        if measured:
            p99 = pct([_ms(m["t0"], m["t_ws_or_timeout"]) for m in measured], 99)
            verdict = "meets" if p99 <= TARGET_P99_MS else "misses"
            print(
                f"ingest -> websocket p99 {'>= ' if timeouts else ''}{p99:.0f} ms over "
                f"{len(measured)} trials"
                f"{f' ({len(timeouts)} timed out, counted as {args.timeout:g} s)' if timeouts else ''}"
                f": {verdict} the target (p99 <= {TARGET_P99_MS:.0f} ms)"
            )
        keep = args.keep_log
    finally:
        stop_and_drop(process, database=database, redis_url=REDIS, prefix=prefix)
        if keep:
            print(f"serve log kept: {log}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
