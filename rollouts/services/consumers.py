"""Registered OFREP consumers and which flag-config revision each has been served.

Serving processes gather what they served in memory; a worker task records it here in batches
(rollouts.ofrep), never on the request path.
"""

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken
from core.errors import InvalidInput
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.models import Flag, FlagConsumer, Target
from rollouts.services.convergence import flag_consumers_converged
from rollouts.services.flags import FLAGS_STREAM

logger = logging.getLogger(__name__)

EVALUATE_SCOPE = "flags:evaluate"


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
    return consumer


def flag_consumers_fetched(*, fetches: dict[int, int]) -> None:
    """A serving process's batch: token id -> newest flag-config revision it was served.

    Tokens without a consumer are ignored; each consumer's last_fetch_at is touched, and its
    held revision raised (see flag_consumer_fetch_record)."""
    consumers = dict(
        FlagConsumer.objects.filter(token_id__in=fetches).values_list("token_id", "pk")
    )
    if not consumers:
        return
    FlagConsumer.objects.filter(pk__in=consumers.values()).update(last_fetch_at=timezone.now())
    for token_id, consumer_id in sorted(consumers.items()):
        flag_consumer_fetch_record(consumer_id=consumer_id, revision=fetches[token_id])


def flag_consumer_fetch_record(*, consumer_id: int, revision: int) -> bool:
    """Record that `consumer_id` was served flag-config `revision`; True if its held revision rose.

    held_revision only ever increases, by a conditional UPDATE (no row lock held). When it rises,
    rollouts.services.convergence is told.
    """
    now = timezone.now()
    held = FlagConsumer.objects.filter(pk=consumer_id).values_list("held_revision", flat=True)
    before = held.first()
    increased = bool(
        FlagConsumer.objects.filter(pk=consumer_id, held_revision__lt=revision).update(
            held_revision=revision, held_since=now, last_fetch_at=now
        )
    )
    if increased:
        _caught_up_pushed(before or 0, revision)
        _converged(consumer_id)
    return increased


def _caught_up_pushed(before: int, after: int) -> None:
    """Push the flags whose current version this consumer has just caught up with: their
    'holding' counts changed (on the board and on each flag's page). Only those, so a fetch
    does not redraw every flag."""
    flags = Flag.objects.filter(
        current__config_revision__gt=before, current__config_revision__lte=after
    ).only("pk")
    for flag in flags:
        stream_touch(stream=FLAGS_STREAM, event="flag_consumer.fetched", ref=flag.pk)
        stream_touch(stream=flag.stream, event="flag_consumer.fetched")


def _converged(consumer_id: int) -> None:
    try:
        flag_consumers_converged(consumer_id=consumer_id)
    except Exception:
        # One consumer's convergence check must not lose the rest of the batch. held_revision
        # is stored, so the next consumer in the target to catch up re-runs the check; a person
        # can also confirm the target on the step page.
        logger.exception("convergence check failed for flag consumer %s", consumer_id)
