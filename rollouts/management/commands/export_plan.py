"""manage.py export_plan KEY: print a stored plan as a YAML plan file."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from rollouts.models import Plan
from rollouts.plan_spec import plan_export


class Command(BaseCommand):
    help = "Print a plan as YAML; applying the output to the same plan changes nothing."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("key", help="the plan's key")

    def handle(self, *args: Any, key: str, **options: Any) -> None:
        plan = Plan.objects.filter(key=key).first()
        if plan is None:
            raise CommandError(f"no plan with key {key!r}")
        self.stdout.write(plan_export(plan), ending="")
