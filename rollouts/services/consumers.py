"""Registered OFREP consumers and which flag-config revision each has been served."""

import logging
import time

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken
from core.errors import InvalidInput
from ledger.services import ledger_append
from rollouts.models import FlagConsumer, Target
from rollouts.services.convergence import flag_consumers_converged

logger = logging.getLogger(__name__)

EVALUATE_SCOPE = "flags:evaluate"
# last_fetch_at is a liveness hint, not an audit trail: writing it on every evaluation would
# turn the hottest read path into a write path.
FETCH_WRITE_INTERVAL_SECONDS = 30.0
# A token's consumer is looked up at most this often per process; a consumer registered in the
# meantime starts being recorded at most this late.
CONSUMER_LOOKUP_TTL_SECONDS = 5.0

_held: dict[int, tuple[int, float]] = {}  # consumer id -> (revision known held, last write)
_by_token: dict[int, tuple[int | None, float]] = {}  # token id -> (consumer id, looked up at)


def consumer_caches_clear() -> None:
    """Forget this process's memo of consumers (tests; a registration in this process)."""
    _held.clear()
    _by_token.clear()


@transaction.atomic
def flag_consumer_register(
    *, name: str, token: ApiToken, target: Target, actor: AbstractBaseUser | None
) -> FlagConsumer:
    """Register an OFREP client so convergence counts it. Ledger: flag_consumer.registered."""
    name = name.strip()
    if not name:
        raise InvalidInput("a flag consumer needs a name")
    if FlagConsumer.objects.filter(name=name).exists():
        raise InvalidInput(f"a flag consumer named {name!r} already exists")
    if FlagConsumer.objects.filter(token=token).exists():
        raise InvalidInput(f"token {token.name!r} already belongs to a flag consumer")
    if not token.is_usable():
        raise InvalidInput(f"token {token.name!r} is revoked or expired")
    if not token.allows(EVALUATE_SCOPE):
        raise InvalidInput(f"token {token.name!r} lacks the {EVALUATE_SCOPE!r} scope")
    consumer = FlagConsumer.objects.create(name=name, token=token, target=target)
    ledger_append(
        action="flag_consumer.registered",
        subject=consumer,
        actor=actor,
        actor_label=None if actor else "manage.py",
        payload={"name": name, "target": target.name, "token": token.prefix},
    )
    _by_token.pop(token.pk, None)
    return consumer


def flag_consumer_id_for_token(*, token_id: int) -> int | None:
    """The consumer a token belongs to, memoized per process for a few seconds."""
    now = time.monotonic()
    cached = _by_token.get(token_id)
    if cached is not None and now - cached[1] < CONSUMER_LOOKUP_TTL_SECONDS:
        return cached[0]
    consumer_id = (
        FlagConsumer.objects.filter(token_id=token_id).values_list("pk", flat=True).first()
    )
    _by_token[token_id] = (consumer_id, now)
    return consumer_id


def flag_consumer_fetch_record(*, consumer_id: int, revision: int) -> bool:
    """Record that `consumer_id` was served flag-config `revision`; True if its held revision rose.

    held_revision only ever increases, by a conditional UPDATE (no row lock held across the
    request); last_fetch_at is written at most every FETCH_WRITE_INTERVAL_SECONDS per process.
    Side effect: when the held revision rises, rollouts.services.convergence is told.
    """
    mono = time.monotonic()
    known = _held.get(consumer_id)
    fresh = known is not None and mono - known[1] < FETCH_WRITE_INTERVAL_SECONDS
    if known is not None and revision <= known[0] and fresh:
        return False
    now = timezone.now()
    increased = bool(
        FlagConsumer.objects.filter(pk=consumer_id, held_revision__lt=revision).update(
            held_revision=revision, held_since=now, last_fetch_at=now
        )
    )
    if not increased and not fresh:
        FlagConsumer.objects.filter(pk=consumer_id).update(last_fetch_at=now)
    held = max(revision, known[0]) if known else revision
    _held[consumer_id] = (held, mono if (increased or not fresh) else known[1])
    if increased:
        _converged(consumer_id)
    return increased


def _converged(consumer_id: int) -> None:
    try:
        flag_consumers_converged(consumer_id=consumer_id)
    except Exception:
        # Serving flags must not fail because convergence bookkeeping did. held_revision is
        # stored, so the next consumer in the target to catch up re-runs the check; a person
        # can also confirm the target on the step page.
        logger.exception("convergence check failed for flag consumer %s", consumer_id)
