"""Freshness across serving processes: commit a flag change (or revoke a token), and time until
each server first answers with it. Run inside Django by bench/ofrep_bench.py:

    PROBE_SERVERS=127.0.0.1:8001,127.0.0.1:8002 PROBE_TOKEN=sw_... manage.py shell -c "<this file>"

Several poller processes per server keep asking (keep-alive connections, one POST after the
other), each answer stamped when it arrived (CLOCK_MONOTONIC is one clock for all processes);
the commit is stamped by the first on-commit callback, before Stepwise's own. Prints one JSON line: milliseconds from commit to first answer, per server.
"""

import http.client
import json
import multiprocessing
import os
import random
import time

from django.contrib.auth import get_user_model
from django.db import connections, transaction

from accounts.services import api_token_create, api_token_revoke
from rollouts.models import FlagConfigRevision
from rollouts.services.flags import flag_change

SERVERS = os.environ["PROBE_SERVERS"].split(",")
TRIALS = int(os.environ.get("PROBE_TRIALS", "100"))
POLLERS = int(os.environ.get("PROBE_POLLERS", "1"))
FLAG = "bench-flag-00"
PATH = f"/ofrep/v1/evaluate/flags/{FLAG}"
BODY = json.dumps({"context": {"targetingKey": "freshness-probe"}})


def _poll(server: str, shared: dict) -> None:
    """A poller process: POST one after the other; stamp the first answer that carries what the
    main process waits for. Processes, not threads: the main process's commit and on-commit
    work must not delay the stamps."""
    host, port = server.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    while not shared["stop"].value:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {shared['token'].value.decode()}",
        }
        connection.request("POST", PATH, BODY, headers)
        response = connection.getresponse()
        body = response.read()
        arrived = time.monotonic()
        status = response.status
        revision = json.loads(body)["metadata"]["revision"] if status == 200 else -1
        want = shared["want"].value
        carries = (
            (want >= 0 and revision >= want)
            or (want == WANT_REFUSED and status == 401)
            or (want == WANT_SERVED and status == 200)
        )
        first = shared["first"][server]
        if carries:
            with first.get_lock():
                if first.value == 0:
                    first.value = arrived


WANT_REFUSED, WANT_SERVED, WANT_NOTHING = -1, -2, -3


def _committed(change) -> tuple[float, object]:
    stamp: list[float] = []
    with transaction.atomic():
        transaction.on_commit(lambda: stamp.append(time.monotonic()))
        result = change()
    return stamp[0], result


def _wait(shared: dict, want: int, change=None) -> tuple[float, dict[str, float | None]]:
    """Arm the pollers for `want`, make the change, and time each server's first answer."""
    shared["want"].value = WANT_NOTHING
    time.sleep(0.05)  # answers in flight were judged against the last want
    for first in shared["first"].values():
        first.value = 0.0
    shared["want"].value = want
    committed, _ = _committed(change) if change else (time.monotonic(), None)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(f.value == 0 for f in shared["first"].values()):
        time.sleep(0.002)
    return committed, {
        server: (first.value - committed) * 1000 if first.value else None
        for server, first in shared["first"].items()
    }


def main() -> dict:
    context = multiprocessing.get_context("fork")
    shared = {
        "stop": context.Value("b", 0),
        "want": context.Value("q", WANT_SERVED),
        "token": context.Array("c", 200),
        "first": {server: context.Value("d", 0.0) for server in SERVERS},
    }
    shared["token"].value = os.environ["PROBE_TOKEN"].encode()
    # The pollers must not share the parent's database connection.
    connections.close_all()
    pollers = [
        context.Process(target=_poll, args=(server, shared), daemon=True)
        for server in SERVERS
        for _ in range(POLLERS)
    ]
    for poller in pollers:
        poller.start()
    _wait(shared, WANT_SERVED)
    flag_ms: dict[str, list[float | None]] = {server: [] for server in SERVERS}
    revoke_ms: dict[str, list[float | None]] = {server: [] for server in SERVERS}
    for trial in range(TRIALS + 1):
        head = FlagConfigRevision.objects.get(pk=1).revision
        pct = 40 + trial % 2 * 10
        _, took = _wait(
            shared,
            head + 1,  # the revision the change below commits at
            lambda pct=pct: flag_change(
                flag_key=FLAG,
                changes={"rollout_percentage": pct},
                actor=None,
                reason="freshness probe",
                source="api",
            ),
        )
        if trial == 0:
            continue  # warm-up: the first change after the pollers connected
        for server, ms in took.items():
            flag_ms[server].append(ms)
        time.sleep(random.uniform(0.05, 0.15))
    user = get_user_model().objects.get(username="bench")
    for trial in range(max(3, TRIALS // 8)):
        token, raw = api_token_create(user=user, name=f"probe-{trial}", scopes=["flags:evaluate"])
        shared["token"].value = raw.encode()
        _wait(shared, WANT_SERVED)
        _, took = _wait(
            shared, WANT_REFUSED, lambda token=token: api_token_revoke(token_id=token.pk)
        )
        for server, ms in took.items():
            revoke_ms[server].append(ms)
    shared["stop"].value = 1
    for poller in pollers:
        poller.join(timeout=5)
    return {"flag_ms": flag_ms, "revoke_ms": revoke_ms}


print(json.dumps(main()))
