from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from leadership.services import slos_import
from signals.slo_spec import SLOInvalid


class Command(BaseCommand):
    help = "Create or update SLOs from an OpenSLO v1 YAML file (kinds SLO, SLI, DataSource)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options) -> None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from None
        try:
            imported = slos_import(text=text, actor=None, origin=f"import_openslo {file.name}")
        except SLOInvalid as exc:
            lines = "\n".join(f"  {path}: {reason}" for path, reason in exc.problems)
            raise CommandError(f"{file} was not imported; nothing changed:\n{lines}") from None
        for source, outcome in imported.sources:
            self.stdout.write(f"{outcome:9} metric source {source.name} ({source.url})")
        for slo, outcome in imported.slos:
            self.stdout.write(f"{outcome:9} {slo.name} ({slo.service}, {slo.objective * 100:g}%)")
        for path, reason in imported.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {path}: {reason}"))
