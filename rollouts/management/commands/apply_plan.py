"""manage.py apply_plan FILE [--dry-run] [--yes]: show what a plan file changes, then apply it.

Exit codes: 0 applied, no changes, or dry run; 1 the file is invalid, unreadable or refused by
the plan's state; 2 not applied because nobody confirmed (non-interactive without --yes, or "no")."""

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from rollouts.plan_spec import PlanSpecInvalid
from rollouts.services.plan_apply import PlanApplyRefused, PlanApplyResult, plan_apply

NOT_CONFIRMED = 2


class Command(BaseCommand):
    help = "Apply a YAML plan file: print the diff, confirm, then write it in one transaction."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("file", help="path of the plan file, or - for standard input")
        parser.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
        parser.add_argument("--yes", action="store_true", help="apply without asking")
        parser.add_argument(
            "--as", dest="username", default="", help="user recorded in the ledger as the actor"
        )

    def handle(
        self, *args: Any, file: str, dry_run: bool, yes: bool, username: str, **options: Any
    ) -> None:
        text = self._read(file)
        actor = self._actor(username)
        label = None if actor else "manage.py apply_plan"
        preview = self._run(text=text, actor=actor, label=label, dry_run=True, file=file)
        self._print(preview)
        if not preview.changed or dry_run:
            return
        if not yes:
            if not sys.stdin.isatty():
                raise CommandError(
                    "not applied: standard input is not a terminal; pass --yes to apply",
                    returncode=NOT_CONFIRMED,
                )
            answer = input(f"Apply these changes to plan {preview.spec.key}? [y/N] ")
            if answer.strip().lower() not in {"y", "yes"}:
                raise CommandError("not applied", returncode=NOT_CONFIRMED)
        result = self._run(
            text=text,
            actor=actor,
            label=label,
            dry_run=False,
            file=file,
            base_digest=preview.base_digest,
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"applied plan {result.spec.key}" if result.applied else "no changes"
            )
        )

    def _read(self, file: str) -> str:
        try:
            raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
            return raw.decode("utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc

    def _actor(self, username: str) -> Any:
        if not username:
            return None
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if not user.has_perm("rollouts.manage_plan"):
            raise CommandError(f"{username} may not apply plans (needs rollouts.manage_plan)")
        return user

    def _run(
        self,
        *,
        text: str,
        actor: Any,
        label: str | None,
        dry_run: bool,
        file: str,
        base_digest: str | None = None,
    ) -> PlanApplyResult:
        try:
            return plan_apply(
                text=text,
                actor=actor,
                dry_run=dry_run,
                actor_label=label,
                base_digest=base_digest,
            )
        except PlanSpecInvalid as exc:
            for error in exc.errors:
                self.stderr.write(f"{file}: {error}")
            count = len(exc.errors)
            raise CommandError(
                f"{file} has {count} problem{'s' if count != 1 else ''}; nothing applied"
            ) from exc
        except PlanApplyRefused as exc:
            for reason in exc.reasons:
                self.stderr.write(f"refused: {reason}")
            raise CommandError("nothing applied") from exc

    def _print(self, result: PlanApplyResult) -> None:
        for warning in result.warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        for line in result.diff.lines():
            self.stdout.write(line)
