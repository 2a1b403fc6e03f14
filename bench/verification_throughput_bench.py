"""Verification throughput of one worker process, on the built-in metric store.

A fresh PostgreSQL database (production settings, Redis db 12 with its own prefix, both removed
afterwards) holds `--steps` running manual steps, each verified on its own built-in series that
stays healthy, so no evaluation concludes or acts: this is the routine load a worker carries
between decisions. One process then evaluates them round-robin for `--seconds` through the same
service call the Celery task makes (measure, then record in one transaction; pushes after
commit), and prints evaluations per second, and how many frames those evaluations pushed: a
routine evaluation (same outcome as the last, run not concluded) pushes nothing.

Usage: python bench/verification_throughput_bench.py [--steps 500] [--seconds 20]
       (or: make bench)
"""

import argparse
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from served import manage, production_env, psql, stop_and_drop

REDIS = "redis://127.0.0.1:6379/12"
TARGET_PER_SECOND = 300

RUN = r"""
import json, time
from django.db import transaction
from django.utils import timezone
from live.models import Stream, StreamEvent
from rollouts.models import Evaluation, Plan, Step
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.verification import verification_begin
from signals.services import samples_ingest

P = json.loads(%(params)r)
steps = []
for p in range(P["steps"] // 10):
    plan = Plan.objects.create(key=f"bg-{p:03d}", name=f"Background {p}", owner="bench",
                               status="active")
    for k in range(10):
        steps.append(Step.objects.create(
            plan=plan, key=f"s{k}", title=f"s{k}", owner_team="bench", kind="manual",
            position=k + 1, pass_condition="err < 0.5", fail_condition="err > 0.5",
            on_fail="pause_plan",
            measurements={"err": {"metric": "bench_err", "aggregation": "avg",
                                  "matchers": {"series": f"{p}-{k}"}, "window": "5m"}},
            verify_interval_seconds=60, verify_count=1_000_000,
            consecutive_error_limit=1_000_000, inconclusive_limit=1_000_000,
        ))
samples_ingest(payload={"samples": [
    {"name": "bench_err", "labels": {"series": f"{p}-{k}"}, "timestamp": time.time(),
     "value": 0.01}
    for p in range(P["steps"] // 10) for k in range(10)
]})
verifications = []
for step in steps:
    with transaction.atomic():
        Step.objects.filter(pk=step.pk).update(status="running", started_at=timezone.now())
        verifications.append(verification_begin(step).pk)
# One evaluation of each first: the step page's first frame shows the run has begun.
for v in verifications:
    verification_evaluate(verification_id=v, trigger="interval")
frames_before = sum(Stream.objects.filter(name__startswith="step:").values_list("last_seq", flat=True))
count, started = 0, time.perf_counter()
deadline = started + P["seconds"]
while time.perf_counter() < deadline:
    for v in verifications:
        verification_evaluate(verification_id=v, trigger="interval")
        count += 1
        if time.perf_counter() >= deadline:
            break
elapsed = time.perf_counter() - started
frames = sum(Stream.objects.filter(name__startswith="step:").values_list("last_seq", flat=True))
print(json.dumps({
    "evaluations": count, "seconds": elapsed, "frames": frames - frames_before,
    "outcomes": sorted(set(Evaluation.objects.values_list("outcome", flat=True))),
    "stream_events": StreamEvent.objects.count(),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    database = f"stepwise_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="verification-bench-"))
    env = production_env(database=database, work=work, redis_url=REDIS, prefix=prefix)
    psql(f'CREATE DATABASE "{database}"')
    try:
        manage(env, "migrate", "--noinput")
        params = json.dumps({"steps": args.steps, "seconds": args.seconds})
        out = manage(env, "shell", "-c", RUN % {"params": params})
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        stop_and_drop(None, database=database, redis_url=REDIS, prefix=prefix)
        shutil.rmtree(work, ignore_errors=True)
    rate = result["evaluations"] / result["seconds"]
    load = os.getloadavg()
    print(
        f"\nVerification throughput, one process, {args.steps} running steps on the built-in store"
    )
    print(
        f"  evaluations: {result['evaluations']} in {result['seconds']:.1f} s = {rate:.0f}/s "
        f"(target >= {TARGET_PER_SECOND}/s: {'met' if rate >= TARGET_PER_SECOND else 'MISSED'})"
    )
    print(f"  outcomes seen: {', '.join(result['outcomes'])}")
    print(
        f"  frames pushed by those evaluations: {result['frames']} "
        f"({result['frames'] / max(result['evaluations'], 1):.3f} per evaluation)"
    )
    print(f"  live StreamEvent rows after the run: {result['stream_events']}")
    print(
        f"  machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )


if __name__ == "__main__":
    main()
