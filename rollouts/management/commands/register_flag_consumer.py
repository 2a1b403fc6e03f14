from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiToken
from core.errors import InvalidInput
from rollouts.models import Target
from rollouts.services.consumers import flag_consumer_register


class Command(BaseCommand):
    help = "Register an OFREP client (an API token with flags:evaluate) as a flag consumer of a target."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", required=True, help="e.g. 'checkout-eu-west-1'")
        parser.add_argument("--token-id", required=True, type=int, help="see list_api_tokens")
        parser.add_argument("--target", required=True, help="an existing target (region or env)")

    def handle(self, *args, name: str, token_id: int, target: str, **options) -> None:
        token = ApiToken.objects.filter(pk=token_id).first()
        if token is None:
            raise CommandError(f"no API token with id {token_id}")
        target_row = Target.objects.filter(name=target).first()
        if target_row is None:
            known = ", ".join(Target.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"no target named {target!r}; known targets: {known}")
        try:
            consumer = flag_consumer_register(name=name, token=token, target=target_row, actor=None)
        except InvalidInput as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"flag consumer {consumer.name!r} (id {consumer.pk}) registered for {target_row.name}"
        )
