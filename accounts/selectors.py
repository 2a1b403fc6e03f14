from dataclasses import dataclass

from accounts.models import ApiToken
from accounts.roles import MACHINE_ROLES, ROLE_WRITES


@dataclass(frozen=True)
class TokenRow:
    token: ApiToken
    roles: list[str]  # the roles its user holds: one machine role for an integration's token


def api_token_rows(*, token_id: int | None = None) -> list[TokenRow]:
    """Every API token (or the one with `token_id`), newest first, with its user's roles."""
    tokens = ApiToken.objects.select_related("user").prefetch_related("user__groups")
    if token_id is not None:
        tokens = tokens.filter(pk=token_id)
    return [
        TokenRow(
            token=token,
            roles=[
                g.name
                for g in token.user.groups.all()
                if g.name in MACHINE_ROLES or g.name in ROLE_WRITES
            ],
        )
        for token in tokens.order_by("-created_at", "-pk")
    ]
