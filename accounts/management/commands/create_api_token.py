from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.models import SCOPES
from accounts.roles import MACHINE_ROLES
from accounts.services import TokenRefused, api_token_create, integration_token_create


class Command(BaseCommand):
    help = (
        "Create an API token and print it once: for an integration role (--role, its service "
        "user and scope are chosen for you) or for a user with the scopes given. Roles: "
        + ", ".join(MACHINE_ROLES)
        + ". Scopes: "
        + ", ".join(sorted(SCOPES))
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--role", help="integration role; the token acts as svc-<role>-<name>")
        parser.add_argument("--user", help="username the token acts as (with --scope)")
        parser.add_argument(
            "--name", required=True, help="what the token is for, e.g. 'checkout-service'"
        )
        parser.add_argument("--scope", action="append", dest="scopes", help="repeatable")
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(
        self,
        *args,
        role: str | None,
        user: str | None,
        name: str,
        scopes: list[str] | None,
        expires_in_days: int | None,
        **options,
    ) -> None:
        if (role is None) == (user is None):
            raise CommandError("give either --role (an integration) or --user with --scope")
        try:
            if role is not None:
                if scopes:
                    raise CommandError(f"--role {role} takes its role's scope; drop --scope")
                token, raw = integration_token_create(
                    role=role, name=name, expires_in_days=expires_in_days, actor=None
                )
            else:
                owner = get_user_model().objects.filter(username=user).first()
                if owner is None:
                    raise CommandError(f"no user named {user!r}")
                token, raw = api_token_create(
                    user=owner, name=name, scopes=scopes or [], expires_in_days=expires_in_days
                )
        except TokenRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(
            f"token {token.name!r} (id {token.pk}) for {token.user.get_username()}, "
            f"scopes {', '.join(token.scopes)}; shown once:"
        )
        self.stdout.write(raw)
