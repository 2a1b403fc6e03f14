from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.models import SCOPES
from accounts.services import TokenRefused, api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print it once. Scopes: " + ", ".join(sorted(SCOPES))

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", required=True, help="username the token acts as")
        parser.add_argument(
            "--name", required=True, help="what the token is for, e.g. 'checkout-service'"
        )
        parser.add_argument(
            "--scope", action="append", dest="scopes", required=True, help="repeatable"
        )
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(
        self, *args, user: str, name: str, scopes: list[str], expires_in_days: int | None, **options
    ) -> None:
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user named {user!r}")
        try:
            token, raw = api_token_create(
                user=owner, name=name, scopes=scopes, expires_in_days=expires_in_days
            )
        except TokenRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(
            f"token {token.name!r} (id {token.pk}) for {user}, scopes {', '.join(token.scopes)}; shown once:"
        )
        self.stdout.write(raw)
