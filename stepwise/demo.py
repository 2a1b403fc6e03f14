"""Synthetic metrics for the demo plan, so its verifications have real numbers to judge.

Healthy everywhere except one story: the new login is broken for users who get the new variant
(`login_error_ratio{variant="on"}` is 3 %), so starting the `login-5` ramp fails its verification
at the first breaching sample and the flag is set back to 0 %. The backfill has finished in
us-east and eu-west but not in ap-south, which the convergence predicate shows per region.
"""

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from signals.services import samples_ingest

REGIONS = ("us-east", "eu-west", "ap-south")
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _sample(name: str, value: float, at: datetime, **labels: str) -> dict[str, Any]:
    return {"name": name, "labels": labels, "timestamp": at.isoformat(), "value": value}


def _counter(per_second: float, at: datetime) -> float:
    """A counter that has grown steadily since the epoch: its rate is `per_second`."""
    return round(per_second * (at - _EPOCH).total_seconds(), 3)


def demo_samples(at: datetime) -> list[dict[str, Any]]:
    """One scrape of every demo metric at `at`. Canary and baseline draw the same values (the
    change is healthy), so a verification over them cannot fail by chance."""
    seed = int(at.timestamp())
    rng = random.Random(seed)
    s = []
    s.append(_sample("idp_role_grants_missing", 0, at))
    s.append(_sample("idp_token_issue_errors_total", 7, at))
    s.append(_sample("migration_errors", 0, at, db="accounts"))
    s.append(_sample("db_lock_wait_ms", rng.uniform(5, 40), at, db="accounts"))
    s.append(_sample("dual_write_mismatches", 0, at))
    s.append(_sample("db_replication_lag_s", rng.uniform(0.5, 3), at))
    s.append(_sample("backfill_remaining_rows", 0, at))
    s.append(_sample("legacy_session_reads_total", 1_204, at))
    for region in REGIONS:
        s.append(_sample("backfill_done", 0 if region == "ap-south" else 1, at, region=region))
    for track in ("canary", "stable"):
        rng = random.Random(seed)
        for _ in range(5):
            s.append(_sample("db_query_ms", rng.gauss(12, 2), at, db="accounts", track=track))
            s.append(
                _sample(
                    "http_request_duration_ms",
                    rng.lognormvariate(math.log(80), 0.25),
                    at,
                    service="accounts-api",
                    track=track,
                )
            )
        s.append(
            _sample(
                "http_requests_total", _counter(200, at), at, service="accounts-api", track=track
            )
        )
        s.append(
            _sample(
                "http_request_errors_total",
                _counter(0.4, at),
                at,
                service="accounts-api",
                track=track,
            )
        )
        s.append(
            _sample(
                "gateway_responses_total",
                _counter(900, at),
                at,
                service="edge-gateway",
                track=track,
            )
        )
        s.append(
            _sample(
                "gateway_responses_5xx_total",
                _counter(0.3, at),
                at,
                service="edge-gateway",
                track=track,
            )
        )
        s.append(
            _sample(
                "gateway_auth_rejection_ratio",
                rng.uniform(0.009, 0.011),
                at,
                service="edge-gateway",
                track=track,
            )
        )
    for variant in ("on", "off"):
        rng = random.Random(seed)
        s.append(
            _sample("login_error_ratio", 0.03 if variant == "on" else 0.004, at, variant=variant)
        )
        for _ in range(5):
            s.append(
                _sample(
                    "login_duration_ms",
                    rng.lognormvariate(math.log(140), 0.2),
                    at,
                    variant=variant,
                )
            )
        s.append(_sample("checkout_conversion", rng.uniform(0.031, 0.033), at, variant=variant))
        s.append(
            _sample("payment_auth_failure_ratio", rng.uniform(0.01, 0.012), at, variant=variant)
        )
    return s


def demo_traffic_emit(*, at: datetime | None = None, history_seconds: int = 0) -> int:
    """Ingest one scrape now, or every scrape of the last `history_seconds`. Returns samples."""
    at = at or timezone.now()
    times = [
        at - timedelta(seconds=back)
        for back in range(history_seconds, -1, -settings.DEMO_TRAFFIC_SECONDS)
    ]
    samples = [sample for when in times for sample in demo_samples(when)]
    written = 0
    for start in range(0, len(samples), 5_000):
        written += samples_ingest(payload={"samples": samples[start : start + 5_000]})
    return written
