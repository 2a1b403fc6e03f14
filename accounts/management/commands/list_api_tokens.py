from django.core.management.base import BaseCommand

from accounts.models import ApiToken


class Command(BaseCommand):
    help = "List API tokens (never their secrets)."

    def handle(self, *args, **options) -> None:
        for t in ApiToken.objects.select_related("user").order_by("pk"):
            used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
            self.stdout.write(
                f"{t.pk:>4}  {t.prefix}…  {t.user.get_username():<12} {t.name:<24} {t.state():<8} used {used}  {','.join(t.scopes)}"
            )
