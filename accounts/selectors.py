from dataclasses import dataclass

from accounts.models import ApiToken
from accounts.roles import MACHINE_ROLES, ROLE_WRITES
from ledger.models import LedgerEntry


@dataclass(frozen=True)
class TokenRow:
    token: ApiToken
    roles: list[str]  # the roles its user holds: one machine role for an integration's token
    revoked_by: str = ""
    revoked_why: str = ""


def api_token_rows(*, token_id: int | None = None) -> list[TokenRow]:
    """Every API token (or the one with `token_id`), newest first, with its user's roles and,
    when revoked, who revoked it and why (from the ledger entry)."""
    found = ApiToken.objects.select_related("user").prefetch_related("user__groups")
    if token_id is not None:
        found = found.filter(pk=token_id)
    tokens = list(found.order_by("-created_at", "-pk"))
    revocations = {
        entry.subject_id: entry
        for entry in LedgerEntry.objects.filter(
            action="api_token.revoked",
            subject_type=ApiToken._meta.label_lower,
            subject_id__in=[str(t.pk) for t in tokens if t.revoked_at is not None],
        ).only("subject_id", "actor_label", "payload")
    }
    rows = []
    for token in tokens:
        revocation = revocations.get(str(token.pk))
        rows.append(
            TokenRow(
                token=token,
                roles=[
                    g.name
                    for g in token.user.groups.all()
                    if g.name in MACHINE_ROLES or g.name in ROLE_WRITES
                ],
                revoked_by=revocation.actor_label if revocation else "",
                revoked_why=revocation.payload.get("reason", "") if revocation else "",
            )
        )
    return rows
