"""SLO overview render time over 28 days of built-in-store data, on PostgreSQL.

A fresh PostgreSQL database (created and dropped here), `manage.py migrate` and `collectstatic`
with STEPWISE_ENV=production, then everything else in this process (Django set up on that
database):

1. `--slos` ratio SLOs saved with `slo_save`: objective 99.9 %, 28d rolling, each over its own two
   cumulative counters in the built-in store (`bench_requests_total` / `bench_errors_total` with
   label `slo=s00..s49`). Error ratios vary per SLO (healthy, burning, exhausted) and a few SLOs
   get an error burst in the last hours, so burn-rate alerts open.
2. `--days` of samples at one per 10 s per series, generated server-side with
   `INSERT ... SELECT ... FROM generate_series(...)`, one statement per day for all series in
   scrape order (interleaved by time, as exporters write). The two sample indexes are dropped for
   the load and rebuilt after it (a bulk load), then VACUUM ANALYZE.
3. The real rollup (`slo_rollup`, then `slo_alerts_evaluate`) of every SLO at the end of the data:
   the one-time cost of a new SLO over existing data. Then `--ticks` steady-state ticks: one more
   minute of samples for every series, then rollup + alert evaluation of every SLO.
4. The render: `django.test.Client`, logged in as a viewer, GET /slos/ (warm-up, then
   `--renders` timed), SQL queries per render, `slo_overview()` alone, and one SLO page.

Server time = the in-process time of `Client.get` (middleware, view, queries, template), no
network. A missed target is a result: the exit status is non-zero only when the setup fails.

Usage: python bench/slo_overview_bench.py [--slos 50] [--days 28] [--renders 50] [--ticks 3]
       (or: make bench)
"""

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from served import PG_ADMIN, ROOT, manage, pct, production_env, psql

TARGET_P95_MS = 300.0
STEP_SECONDS = 10
PER_DAY = 86400 // STEP_SECONDS
REQUESTS, ERRORS = "bench_requests_total", "bench_errors_total"
# Base error ratios, cycled over the SLOs: 99.9 % allows 0.1 %, so the last two overspend.
BASE_RATIOS = (0.00002, 0.0001, 0.0002, 0.0003, 0.0005, 0.0006, 0.0008, 0.0009, 0.0012, 0.002)
# (SLO index, error ratio, minutes before the end): bursts that open burn-rate alerts.
BURSTS = ((3, 0.02, 120), (17, 0.02, 120), (31, 0.05, 20), (44, 0.008, 360))
WARMUP = 5


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _series(slos: int) -> list[dict]:
    """Each SLO's counters: requests per second, base error ratio, and its burst if any."""
    bursts = {index: (ratio, minutes) for index, ratio, minutes in BURSTS}
    series = []
    for i in range(slos):
        base = BASE_RATIOS[i % len(BASE_RATIOS)]
        burst, minutes = bursts.get(i, (base, 0))
        series.append(
            {"slo": f"s{i:02d}", "rps": 5 + (i * 7) % 40, "base": base, "burst": burst,
             "burst_minutes": minutes}
        )  # fmt: skip
    return series


# Cumulative counters in closed form, so PostgreSQL generates them without a running sum: at step
# k the requests counter is rps*10*(k+1); errors add base*requests plus the burst's extra errors
# since the burst began. Rows come out in scrape order (time, then series).
GENERATE = """
INSERT INTO signals_sample (name, labels, label_key, "timestamp", value)
SELECT m.name, s.labels, s.label_key, %(start)s::timestamptz + k * interval '10 seconds',
       CASE WHEN m.errors
            THEN floor(s.rps * 10 * (k + 1) * s.base
                       + s.rps * 10 * (s.burst - s.base) * greatest(0, k + 1 - s.burst_from))
            ELSE floor(s.rps * 10 * (k + 1)) END
FROM generate_series(%(k0)s::bigint, %(k1)s::bigint - 1) AS k
CROSS JOIN bench_series AS s
CROSS JOIN (VALUES (%(requests)s, false), (%(errors)s, true)) AS m(name, errors)
ORDER BY k, s.slo, m.name
"""


def _series_table(conn, series: list[dict], *, steps: int) -> None:
    from signals.services import label_key_for

    conn.execute(
        "CREATE TEMP TABLE bench_series (slo text, labels jsonb, label_key text, rps float8, "
        "base float8, burst float8, burst_from bigint)"
    )
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO bench_series VALUES (%s, %s::jsonb, %s, %s, %s, %s, %s)",
            [
                (s["slo"], label_key_for({"slo": s["slo"]}), label_key_for({"slo": s["slo"]}),
                 s["rps"], s["base"], s["burst"], steps - s["burst_minutes"] * 6)
                for s in series
            ],
        )  # fmt: skip


def _generate(conn, *, start: datetime, k0: int, k1: int) -> None:
    conn.execute(
        GENERATE,
        {"start": start, "k0": k0, "k1": k1, "requests": REQUESTS, "errors": ERRORS},
    )


def _load(database: str, series: list[dict], *, start: datetime, days: int) -> None:
    """Generate the samples server-side, a day per statement; rebuild the sample indexes after."""
    import psycopg

    steps = days * PER_DAY
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{database}"
    with psycopg.connect(url, autocommit=True) as conn:
        _series_table(conn, series, steps=steps)
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'signals_sample' "
            "AND indexname <> 'signals_sample_pkey'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        started = time.monotonic()
        for day in range(days):
            _generate(conn, start=start, k0=day * PER_DAY, k1=(day + 1) * PER_DAY)
            if day % 7 == 6 or day == days - 1:
                print(f"  day {day + 1:>2}/{days}: {time.monotonic() - started:6.1f} s", flush=True)
        inserted = time.monotonic() - started
        started = time.monotonic()
        conn.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            conn.execute(definition)
        indexed = time.monotonic() - started
        started = time.monotonic()
        conn.execute("VACUUM ANALYZE signals_sample")
        vacuumed = time.monotonic() - started
        rows = conn.execute("SELECT count(*) FROM signals_sample").fetchone()[0]
        size = conn.execute("SELECT pg_total_relation_size('signals_sample')").fetchone()[0]
    print(
        f"generated {rows:,} samples ({len(series) * 2} series x {steps:,}) in {inserted:.1f} s"
        f" ({rows / inserted:,.0f} rows/s); indexes {[n for n, _ in indexes]} rebuilt in"
        f" {indexed:.1f} s; VACUUM ANALYZE {vacuumed:.1f} s; table + indexes"
        f" {size / 2**30:.2f} GiB"
    )


def _django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "stepwise.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.urls import get_resolver

    # Import every view now: the code measured at the end is the code that was there at the start,
    # and an import error shows before half an hour of rollup, not after.
    get_resolver().url_patterns  # noqa: B018


def _save_slos(series: list[dict]) -> list:
    from signals.services import slo_save
    from signals.slo_spec import MetricRef, SLISpec, SLOSpec

    slos = []
    for s in series:
        matchers = {"slo": s["slo"]}
        spec = SLOSpec(
            name=f"bench-{s['slo']}",
            service=f"svc-{s['slo']}",
            owner="bench",
            indicator=SLISpec(
                kind="ratio",
                bad=MetricRef(metric=ERRORS, matchers=matchers),
                total=MetricRef(metric=REQUESTS, matchers=matchers),
                counter=True,
            ),
            objective=0.999,
            window_seconds=28 * 86400,
            window_text="28d",
        )
        slos.append(slo_save(spec=spec)[0])
    return slos


def _counter(s: dict, k: int, *, errors: bool) -> float:
    """The generated counter at step k (the same closed form as GENERATE)."""
    requests = s["rps"] * 10 * (k + 1)
    if not errors:
        return math.floor(requests)
    burst_from = s["steps"] - s["burst_minutes"] * 6
    extra = s["rps"] * 10 * (s["burst"] - s["base"]) * max(0, k + 1 - burst_from)
    return math.floor(requests * s["base"] + extra)


def _expected_error_ratio(s: dict, *, start: datetime, at: datetime, since: datetime) -> float:
    """Bad / total events in (since, at] as the rollup counts them: each minute's increase from
    the previous minute's last sample, so the first minute of data only sets the baseline."""
    last = int((at - start).total_seconds()) // STEP_SECONDS - 1
    first = max(int((since - start).total_seconds()) // STEP_SECONDS - 1, 60 // STEP_SECONDS - 1)
    bad = _counter(s, last, errors=True) - _counter(s, first, errors=True)
    total = _counter(s, last, errors=False) - _counter(s, first, errors=False)
    return bad / total


def _refresh_all(
    slos: list, now: datetime, *, progress: bool = False
) -> tuple[list[float], list[float], int, int]:
    from signals.slos import slo_alerts_evaluate, slo_rollup

    rollups, evaluations, minutes, opened = [], [], 0, 0
    for n, slo in enumerate(slos):
        if progress and n and n % 10 == 0:
            print(f"  {n}/{len(slos)} SLOs rolled up: {sum(rollups):6.1f} s", flush=True)
        started = time.monotonic()
        minutes += slo_rollup(slo_id=slo.pk, now=now)
        rollups.append(time.monotonic() - started)
        started = time.monotonic()
        opened += len(slo_alerts_evaluate(slo_id=slo.pk))
        evaluations.append(time.monotonic() - started)
    return rollups, evaluations, minutes, opened


def _timed(call, n: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def _summary(times: list[float]) -> str:
    return (
        f"p50 {_ms(pct(times, 50))} ms, p95 {_ms(pct(times, 95))} ms, max {_ms(max(times))} ms"
        f" (n={len(times)})"
    )


def _queries(client, path: str) -> list[tuple[float, str, object]]:
    """(seconds, SQL, parameters) of each query of one GET, timed around the driver call."""
    from django.db import connection

    queries = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries.append((time.perf_counter() - started, sql, params))

    with connection.execute_wrapper(timed):
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return queries


def _print_queries(label: str, queries: list[tuple[float, str, object]], top: int = 4) -> None:
    total = sum(seconds for seconds, *_ in queries)
    print(f"{label}: {len(queries)} SQL queries, {_ms(total)} ms in all; slowest:")
    for seconds, sql, _ in sorted(queries, key=lambda q: -q[0])[:top]:
        sql = " ".join(sql.split())
        print(f"    {_ms(seconds):>7} ms  {sql[:140]}{'…' if len(sql) > 140 else ''}")


def _explain(sql: str, params: object) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        for (line,) in cursor.fetchall():
            print("    " + line)


def run(args: argparse.Namespace, env: dict[str, str], database: str) -> None:
    _django(env)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test import Client

    from accounts.roles import roles_sync
    from leadership.selectors import slo_overview
    from signals.models import SLIBucket, SLOAlert

    series = _series(args.slos)
    slos = _save_slos(series)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    print(
        f"{len(slos)} ratio SLOs (99.9 %, 28d rolling), {args.days} days of data ending"
        f" {end:%Y-%m-%d %H:%M} UTC, one sample per {STEP_SECONDS} s per series"
    )
    _load(database, series, start=start, days=args.days)

    # The one-time rollup of existing data, at the end of the data (SETTLE after the last minute).
    started = time.monotonic()
    rollups, evaluations, minutes, opened = _refresh_all(
        slos, end + timedelta(seconds=30), progress=True
    )
    elapsed = time.monotonic() - started
    print(
        f"initial rollup: {minutes:,} SLI minutes of {len(slos)} SLOs in {elapsed:.1f} s"
        f" (slo_rollup {sum(rollups):.1f} s: per SLO mean {statistics.mean(rollups):.2f} s,"
        f" min {min(rollups):.2f} s, max {max(rollups):.2f} s; slo_alerts_evaluate"
        f" {_ms(sum(evaluations))} ms in all); {opened} burn-rate alerts opened"
    )
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE signals_slibucket")
    print(f"ANALYZE signals_slibucket (as autovacuum would): {time.monotonic() - started:.1f} s")

    # Steady state: one more minute of samples for every series, then a tick of every SLO.
    import psycopg

    steps = args.days * PER_DAY
    with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{database}", autocommit=True) as conn:
        _series_table(conn, series, steps=steps)
        for tick in range(args.ticks):
            k0 = steps + tick * 6
            _generate(conn, start=start, k0=k0, k1=k0 + 6)
            started = time.monotonic()
            now = end + timedelta(minutes=tick + 1, seconds=30)
            rollups, evaluations, minutes, _ = _refresh_all(slos, now)
            elapsed = time.monotonic() - started
            print(
                f"tick {tick + 1}: {len(series) * 12} new samples, {minutes} SLI minutes, all"
                f" {len(slos)} SLOs rolled up and evaluated in {_ms(elapsed)} ms (slo_rollup"
                f" p50 {_ms(statistics.median(rollups))} ms per SLO, slo_alerts_evaluate p50"
                f" {_ms(statistics.median(evaluations))} ms per SLO)"
            )

    buckets = SLIBucket.objects.count()
    alerts = SLOAlert.objects.filter(resolved_at__isnull=True).count()
    statuses = slo_overview()
    states, worst = {}, 0.0
    by_name = {f"bench-{s['slo']}": s | {"steps": steps} for s in series}
    for status in statuses:
        states[status.state] = states.get(status.state, 0) + 1
        if status.sli is None:
            continue
        expected = _expected_error_ratio(
            by_name[status.slo.name], start=start, at=status.at, since=status.window_start
        )
        worst = max(worst, abs((1 - status.sli) - expected))
    print(
        f"{buckets:,} SLIBucket rows, {alerts} open alerts; states: {states}; largest difference"
        f" between an SLO's error ratio and the generated one: {worst:.2g}"
    )

    roles_sync()
    viewer = get_user_model().objects.create_user(username="bench-viewer")
    viewer.groups.set([Group.objects.get(name="viewer")])
    client = Client()
    client.force_login(viewer)
    detail = f"/slos/{statuses[0].slo.name}/"

    def overview_page() -> None:
        response = client.get("/slos/")
        assert response.status_code == 200, response.status_code

    def detail_page() -> None:
        response = client.get(detail)
        assert response.status_code == 200, response.status_code

    print(f"load average before the renders: {os.getloadavg()[0]:.2f}")
    page = _timed(overview_page, args.renders)
    alone = _timed(slo_overview, args.renders)
    one = _timed(detail_page, max(args.renders // 2, 10))
    body = client.get("/slos/").content
    rows = body.count(b'data-testid="slo-row"')
    print(f"GET /slos/ ({rows} rows, {len(body) / 1024:.0f} KiB): {_summary(page)}")
    print(f"slo_overview() alone: {_summary(alone)}")
    print(f"GET {detail}: {_summary(one)}; load average after: {os.getloadavg()[0]:.2f}")
    overview_queries = _queries(client, "/slos/")
    _print_queries("GET /slos/", overview_queries)
    _print_queries(f"GET {detail}", _queries(client, detail))

    p95 = pct(page, 95)
    verdict = "PASS" if p95 < TARGET_P95_MS / 1000 else "FAIL"
    print(f"{verdict}: /slos/ p95 {_ms(p95)} ms against the {TARGET_P95_MS:.0f} ms target")
    if verdict == "FAIL":
        print("EXPLAIN ANALYZE of the slowest query of the render:")
        _, sql, params = max(overview_queries, key=lambda q: q[0])
        _explain(sql, params)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slos", type=int, default=50)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--renders", type=int, default=50)
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.slos <= 100:
        sys.exit("--slos must be between 1 and 100")

    try:
        psql("SELECT 1")
    except Exception as exc:
        sys.exit(f"PostgreSQL is not reachable at {PG_ADMIN} (user postgres, trust auth): {exc}")

    database = f"stepwise_bench_slo_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="slo-bench-"))
    env = production_env(database=database, work=work, redis_url="")
    env["DJANGO_ALLOWED_HOSTS"] = "testserver"
    psql(f'CREATE DATABASE "{database}"')
    try:
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput")
        run(args, env, database)
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django may not be set up yet
            pass
        psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
