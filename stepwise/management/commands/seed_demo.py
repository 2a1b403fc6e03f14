from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.roles import ROLES, roles_sync
from ledger.models import LedgerEntry
from ledger.services import ledger_record_manual

DEMO_PASSWORD = "stepwise-demo"
DEMO_USERS = {
    "tpm": ("Tara", "Program manager"),
    "commander": ("Cora", "Incident commander"),
    "responder": ("Remy", "Responder"),
    "viewer": ("Vic", "Leadership (read-only)"),
}


class Command(BaseCommand):
    help = "Create the role groups, one demo user per role, an admin, and a few ledger entries. Idempotent."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        roles_sync()
        User = get_user_model()
        users = {}
        for role in ROLES:
            first_name, last_name = DEMO_USERS[role]
            user, created = User.objects.get_or_create(
                username=role, defaults={"first_name": first_name, "last_name": last_name}
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            user.groups.set([Group.objects.get(name=role)])
            users[role] = user
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.invalid", DEMO_PASSWORD)
        if not LedgerEntry.objects.exists():
            ledger_record_manual(
                actor=users["tpm"],
                kind="note",
                subject="program:identity-migration",
                summary="Program kickoff: identity provider migration across all regions",
            )
            ledger_record_manual(
                actor=users["commander"],
                kind="out_of_band_change",
                subject="service:gateway",
                summary="Gateway pool resized by hand in eu-west during load test",
            )
            ledger_record_manual(
                actor=users["tpm"],
                kind="acknowledgement",
                subject="team:payments",
                summary="Payments team acknowledged the cut-over window",
            )
        self.stdout.write(
            self.style.SUCCESS(
                "demo data ready: users "
                + ", ".join([*ROLES, "admin"])
                + f" / password {DEMO_PASSWORD}"
            )
        )
