"""Flags, tokens and consumers for the OFREP tests, made through the services (the one write path)."""

from typing import Any

from accounts.services import api_token_create
from rollouts.models import Flag, FlagConsumer, Target
from rollouts.services.consumers import flag_consumer_register
from rollouts.services.flags import flag_change, flag_create
from tests.factories import UserFactory


def flag_make(key: str, **settings: Any) -> Flag:
    """A flag created off (v1), then changed to `settings` (v2) when any are given."""
    flag = flag_create(key=key, description="", kind="release", owner="web", actor=None)
    if settings:
        flag_change(flag_key=key, changes=settings, actor=None, reason="test", source="api")
    flag.refresh_from_db()
    return flag


def token_make(*scopes: str, name: str = "client") -> str:
    """The raw secret of a new token for a viewer (every role may read flags)."""
    _, raw = api_token_create(
        user=UserFactory(role="viewer"), name=name, scopes=list(scopes or ["flags:evaluate"])
    )
    return raw


def consumer_make(
    *, name: str = "checkout-eu", target: str = "eu-west"
) -> tuple[FlagConsumer, str]:
    """A registered consumer and its token's raw secret."""
    user = UserFactory(role="viewer")
    token, raw = api_token_create(user=user, name=name, scopes=["flags:evaluate"])
    target_row, _ = Target.objects.get_or_create(name=target)
    return flag_consumer_register(name=name, token=token, target=target_row, actor=None), raw
