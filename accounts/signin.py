"""Sign-in protections: failed passwords are throttled per account and per address, and a
lockout is a ledger entry. Counters live in the cache (Redis with REDIS_URL, so every web
process shares them; process memory on a laptop)."""

import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from ledger.services import ledger_append

# The password every seeded demo account has: published in the README, so never in production.
DEMO_PASSWORD = "stepwise-demo"
DEMO_USERNAMES = ("tpm", "commander", "responder", "viewer", "admin")


@dataclass(frozen=True)
class Limit:
    kind: str  # "account" or "address"
    failures: int  # within `window_seconds`, this many lock
    window_seconds: int  # how long failures are counted, and how long a lockout lasts


LIMITS = (
    Limit("account", int(getattr(settings, "LOGIN_FAILURES_PER_ACCOUNT", 5)), 15 * 60),
    Limit("address", int(getattr(settings, "LOGIN_FAILURES_PER_ADDRESS", 20)), 15 * 60),
)


def _keys(limit: Limit, value: str) -> tuple[str, str]:
    base = f"signin:{limit.kind}:{value.lower()[:200]}"
    return f"{base}:failures", f"{base}:locked_until"


def _values(username: str, address: str) -> dict[str, str]:
    return {"account": username.strip(), "address": address or "unknown"}


def signin_refusal(*, username: str, address: str) -> str | None:
    """Why this sign-in is refused before its password is even checked, or None."""
    values = _values(username, address)
    now = time.time()
    for limit in LIMITS:
        until = cache.get(_keys(limit, values[limit.kind])[1])
        if until and until > now:
            minutes = max(1, round((until - now) / 60))
            who = "this account" if limit.kind == "account" else "your address"
            return (
                f"Too many failed sign-ins for {who}: try again in {minutes} minute"
                f"{'s' if minutes != 1 else ''}, or ask an administrator to reset the password."
            )
    return None


def signin_failed(*, username: str, address: str) -> None:
    """Count one failed password; the failure that crosses a limit locks and is recorded."""
    values = _values(username, address)
    for limit in LIMITS:
        failures_key, locked_key = _keys(limit, values[limit.kind])
        cache.add(failures_key, 0, timeout=limit.window_seconds)
        try:
            failures = cache.incr(failures_key)
        except ValueError:  # expired between add and incr
            cache.set(failures_key, 1, timeout=limit.window_seconds)
            failures = 1
        if failures == limit.failures:
            until = time.time() + limit.window_seconds
            cache.set(locked_key, until, timeout=limit.window_seconds)
            _record_lockout(limit, values, failures)


def _record_lockout(limit: Limit, values: dict[str, str], failures: int) -> None:
    with transaction.atomic():
        ledger_append(
            action="auth.locked_out",
            subject_type=limit.kind,
            subject_id=values[limit.kind][:200],
            actor_label="stepwise",
            payload={
                "kind": limit.kind,
                "username": values["account"][:150],
                "address": values["address"],
                "failures": failures,
                "window_seconds": limit.window_seconds,
            },
        )


def signin_succeeded(*, username: str) -> None:
    cache.delete(_keys(LIMITS[0], _values(username, "")["account"])[0])
