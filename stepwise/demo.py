"""Synthetic metrics for the demo plan, so its verifications and SLOs have real numbers.

Healthy everywhere except three stories:
- The new login is broken: half of the sign-ins that get the new variant fail
  (`login_error_ratio{variant="on"}` is 0.5). Starting the `login-5` ramp fails its
  verification at the first breaching sample and the flag is set back to 0 %. Sessions keep the
  login they started with for an hour, so sign-ins keep failing after the revert: the
  login-availability SLO visibly burns its budget and its burn-rate page opens.
- The backfill has finished in us-east and eu-west but not in ap-south, which the convergence
  predicate shows per region.
- The plan's top assumption (the new identity provider carries peak sign-in traffic) is false:
  the peak-hour replay its probe step runs fails 4 % of sign-ins, so starting `idp-peak-probe`
  falsifies it and the plan asks for a decision.
- search-api's dependency started failing 3 % of searches 40 minutes before the seed and
  recovers 50 minutes after it: its page alert is open on first start.
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


def _login_durations(rng: random.Random, at: datetime, variant: str) -> list[dict[str, Any]]:
    """Five sign-in durations (ms) around 140 ms."""
    return [
        _sample("login_duration_ms", rng.lognormvariate(math.log(140), 0.2), at, variant=variant)
        for _ in range(5)
    ]


def demo_samples(at: datetime) -> list[dict[str, Any]]:
    """One scrape of every demo metric at `at`. Canary and baseline draw the same values (the
    change is healthy), so a verification over them cannot fail by chance."""
    seed = int(at.timestamp())
    rng = random.Random(seed)
    s = []
    s.append(_sample("idp_role_grants_missing", 0, at))
    # The peak-hour replay against the new identity provider fails 4 % of sign-ins: the probe
    # falsifies the plan's top assumption.
    s.append(_sample("idp_replay_error_ratio", 0.04, at))
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
            _sample(
                "login_error_ratio",
                LOGIN_FAILURE_NEW if variant == "on" else 0.004,
                at,
                variant=variant,
            )
        )
        s += _login_durations(rng, at, variant)
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
    return _ingest(samples + _slo_samples(times))


# ------------------------------------------------------------------ SLO metrics

LOGIN_RPS, SEARCH_RPS = 20.0, 50.0
LOGIN_FAILURE_BASE, LOGIN_FAILURE_NEW = 0.0002, 0.5
# A session keeps the login variant it started with this long, so a revert helps only slowly.
SESSION_STICKINESS = timedelta(hours=1)
SEARCH_FAILURE_BASE, SEARCH_FAILURE_EPISODE = 0.0002, 0.03
# The search episode, relative to the end of the seeded history.
SEARCH_EPISODE_BEFORE, SEARCH_EPISODE_AFTER = timedelta(minutes=40), timedelta(minutes=50)
HISTORY = timedelta(days=7)
HISTORY_STEP = timedelta(minutes=5)


def new_login_exposure(at: datetime) -> float:
    """The largest share of sign-ins on the new login at any moment of the last hour."""
    from rollouts.models import FlagVersion  # the demo sits above every app; imported late

    versions = FlagVersion.objects.filter(flag__key="new-login")
    before = versions.filter(created_at__lte=at - SESSION_STICKINESS).order_by("-number").first()
    recent = versions.filter(created_at__gt=at - SESSION_STICKINESS, created_at__lte=at)
    shares = [float(v.rollout_percentage) / 100 for v in recent if v.enabled]
    if before is not None and before.enabled:
        shares.append(float(before.rollout_percentage) / 100)
    return max(shares, default=0.0)


def _login_failure_ratio(at: datetime) -> float:
    share = new_login_exposure(at)
    return LOGIN_FAILURE_BASE * (1 - share) + LOGIN_FAILURE_NEW * share


def _search_failure_ratio(at: datetime, episode_start: datetime) -> float:
    """3 % of searches fail during the episode, 0.02 % otherwise."""
    episode_end = episode_start + SEARCH_EPISODE_BEFORE + SEARCH_EPISODE_AFTER
    return SEARCH_FAILURE_EPISODE if episode_start <= at < episode_end else SEARCH_FAILURE_BASE


def _last(name: str) -> tuple[datetime, float] | None:
    from signals.models import Sample

    row = Sample.objects.filter(name=name).order_by("-timestamp").first()
    return (row.timestamp, row.value) if row else None


def _search_episode_start() -> datetime | None:
    from signals.models import Sample

    first = (
        Sample.objects.filter(name="search_requests_total")
        .order_by("timestamp")
        .values_list("timestamp", flat=True)
        .first()
    )
    return first + HISTORY - SEARCH_EPISODE_BEFORE if first else None


def _slo_samples(times: list[datetime]) -> list[dict[str, Any]]:
    """The SLO metrics at each time. Request counters grow steadily since the epoch; failure
    counters continue from their last stored value by each interval's failure ratio, which
    depends on what happened (the new login's exposure, the search episode)."""
    episode = _search_episode_start()

    def search_ratio(at: datetime) -> float:
        return SEARCH_FAILURE_BASE if episode is None else _search_failure_ratio(at, episode)

    samples = []
    for prefix, rps, ratio, labels in (
        ("login", LOGIN_RPS, _login_failure_ratio, {}),
        ("search", SEARCH_RPS, search_ratio, {"service": "search-api"}),
    ):
        # With no history the counter starts where a steady base rate would have brought it.
        start = times[0] - timedelta(seconds=settings.DEMO_TRAFFIC_SECONDS)
        failures = f"{prefix}_failures_total"
        previous, value = _last(failures) or (start, _counter(rps * ratio(start), start))
        for when in times:
            # Requests and failures are scraped together, so a minute never holds one without
            # the other.
            if when <= previous:
                continue
            value += (when - previous).total_seconds() * rps * ratio(when)
            samples.append(_sample(failures, round(value, 3), when, **labels))
            samples.append(_sample(f"{prefix}_requests_total", _counter(rps, when), when, **labels))
            previous = when
    return samples


def demo_slo_history(*, at: datetime) -> int:
    """A week of the SLO metrics, one point every five minutes (the full scrape every 10 s would
    be millions of rows), so the SLO pages have a window to draw on first start. The new login is
    off throughout; search-api's episode begins 40 minutes before `at`."""
    start = at - HISTORY
    episode = at - SEARCH_EPISODE_BEFORE
    times = [start + i * HISTORY_STEP for i in range(int(HISTORY / HISTORY_STEP))]
    login = _counter(LOGIN_RPS * LOGIN_FAILURE_BASE, start)
    search = _counter(SEARCH_RPS * SEARCH_FAILURE_BASE, start)
    seconds = HISTORY_STEP.total_seconds()
    samples = []
    for when in times:
        login += seconds * LOGIN_RPS * LOGIN_FAILURE_BASE
        search += seconds * SEARCH_RPS * _search_failure_ratio(when, episode)
        samples += [
            _sample("login_requests_total", _counter(LOGIN_RPS, when), when),
            _sample("login_failures_total", round(login, 3), when),
            _sample(
                "search_requests_total", _counter(SEARCH_RPS, when), when, service="search-api"
            ),
            _sample("search_failures_total", round(search, 3), when, service="search-api"),
        ]
        for track in ("canary", "stable"):
            labels = {"service": "accounts-api", "track": track}
            samples.append(_sample("http_requests_total", _counter(200, when), when, **labels))
            samples.append(
                _sample("http_request_errors_total", _counter(0.4, when), when, **labels)
            )
    # The latency SLO's distribution for the last six hours only: ten draws a minute.
    for back in range(6 * 3600, 0, -60):
        when = at - timedelta(seconds=back)
        rng = random.Random(int(when.timestamp()))
        for variant in ("on", "off"):
            samples += _login_durations(rng, when, variant)
    return _ingest(samples)


def _ingest(samples: list[dict[str, Any]]) -> int:
    written = 0
    for start in range(0, len(samples), 5_000):
        written += samples_ingest(payload={"samples": samples[start : start + 5_000]})
    return written
