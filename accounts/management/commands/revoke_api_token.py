from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiToken
from accounts.services import api_token_revoke


class Command(BaseCommand):
    help = "Revoke an API token by id or by its prefix (as shown by list_api_tokens)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("token", help="token id or prefix, e.g. 12 or sw_AbCdEfG")
        parser.add_argument("--reason", default="", help="recorded in the ledger entry")

    def handle(self, *args, token: str, reason: str, **options) -> None:
        matches = (
            ApiToken.objects.filter(pk=int(token))
            if token.isdigit()
            else ApiToken.objects.filter(prefix=token)
        )
        if matches.count() != 1:
            raise CommandError(f"{token!r} matches {matches.count()} tokens; give the id")
        revoked = api_token_revoke(token_id=matches.get().pk, reason=reason)
        self.stdout.write(
            f"revoked {revoked.name!r} ({revoked.prefix}…) at {revoked.revoked_at:%Y-%m-%d %H:%M:%S}Z"
        )
