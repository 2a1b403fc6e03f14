from django.core.management.base import BaseCommand, CommandError

from ledger.selectors import ledger_verify


class Command(BaseCommand):
    help = "Walk the ledger's hash chain; exit non-zero naming the first broken entry."

    def handle(self, *args, **options) -> None:
        report = ledger_verify()
        if not report.ok:
            raise CommandError(
                f"ledger chain broken at {report.first_break} ({report.checked} entries before it verified)"
            )
        self.stdout.write(f"ledger chain intact: {report.checked} entries verified")
