from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.roles import ROLES, roles_sync
from accounts.services import api_token_create
from accounts.signin import DEMO_PASSWORD
from incidents.services import (
    break_glass_define,
    change_start,
    change_verify,
    hypothesis_state,
    incident_declare,
    incident_plan_release,
    incident_status_change,
    narration_post,
)
from leadership.services import slos_import
from ledger.models import LedgerEntry
from ledger.services import ledger_record_manual
from rollouts.models import Plan, Target
from rollouts.services.assumptions import assumption_add, assumption_status_set
from rollouts.services.consumers import flag_consumer_register
from rollouts.services.decisions import decision_record
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.flags import flag_change, flag_create
from rollouts.services.plan_apply import plan_apply
from rollouts.services.steps import plan_transition, step_target_confirm, step_transition
from signals.models import SLO
from signals.slos import slo_refresh
from stepwise.demo import demo_slo_history, demo_traffic_emit

DEMO_SLOS = (
    "login-availability.yaml",
    "login-latency.yaml",
    "accounts-api.yaml",
    "search-api.yaml",
)
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
        if settings.PRODUCTION:
            raise CommandError(
                "seed_demo creates accounts whose password is published in the README; it "
                "does not run with STEPWISE_ENV=production (create real users with "
                "`manage.py createsuperuser` and the admin)"
            )
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
        if not Plan.objects.filter(key="identity-migration").exists():
            self._seed_program(users)
        self.stdout.write(
            self.style.SUCCESS(
                "demo data ready: users "
                + ", ".join([*ROLES, "admin"])
                + f" / password {DEMO_PASSWORD}"
            )
        )

    def _seed_program(self, users: dict) -> None:
        """The identity migration mid-flight, through the same services a person would use."""
        User = get_user_model()
        tpm, commander = users["tpm"], users["commander"]
        examples = Path(settings.BASE_DIR) / "examples"
        # A week of SLO metrics and the SLOs over them, before the plan: a step's budget gate
        # names an SLO that must exist.
        demo_slo_history(at=timezone.now())
        for name in DEMO_SLOS:
            slos_import(
                text=(examples / "openslo" / name).read_text(), actor=tpm, origin="seed_demo"
            )
        plan = plan_apply(text=(examples / "identity-migration.yaml").read_text(), actor=tpm).plan
        plan_transition(plan_id=plan.pk, action="activate", actor=tpm, reason="kickoff")
        regions = ["us-east", "eu-west", "ap-south"]

        # Six minutes of metrics, so the verifications below judge real numbers.
        demo_traffic_emit(history_seconds=360)

        def converge(key: str, targets: list[str]) -> None:
            step = plan.steps.get(key=key)
            step_transition(step_id=step.pk, action="start", actor=tpm)
            # What the workers would do over the next intervals, done now: the step is verified
            # by its own evaluations and advances to converging on its own.
            for _ in range(step.verify_count):
                verification_evaluate(verification_id=step.verifications.get().pk)
            for target in targets:
                step_target_confirm(
                    step_id=step.pk,
                    target=target,
                    actor=tpm,
                    source="person",
                    reason="seeded: the demo's rollout confirmed here",
                )

        converge("idp-roles", regions)
        converge("sessions-expand", regions)
        converge("accounts-deploy", regions)
        converge("gateway-policy", ["us-east", "eu-west"])  # ap-south is lagging
        # The backfill is left to the workers: verified over the next minutes, then converged per
        # region by its convergence predicate (ap-south has not finished).
        backfill = plan.steps.get(key="sessions-backfill")
        step_transition(step_id=backfill.pk, action="start", actor=tpm)
        self._seed_assumptions(plan, tpm)

        for key, kind, owner, description, changes in (
            (
                "checkout-v2",
                "release",
                "payments",
                "New checkout flow",
                {"enabled": True, "rollout_percentage": 50},
            ),
            ("disable-retries", "kill_switch", "edge", "Stop client retries to shed load", {}),
            (
                "recs-experiment",
                "experiment",
                "discovery",
                "Recommendations ranking experiment",
                {"enabled": True, "rollout_percentage": 10},
            ),
        ):
            flag_create(key=key, description=description, kind=kind, owner=owner, actor=tpm)
            if changes:
                flag_change(
                    flag_key=key,
                    changes=changes,
                    actor=tpm,
                    reason="initial rollout",
                    source="board",
                )
        # One web frontend per region fetches flags over OFREP; convergence counts these.
        frontend, _ = User.objects.get_or_create(
            username="web-frontend", defaults={"first_name": "Web frontend"}
        )
        frontend.groups.set([Group.objects.get(name="viewer")])
        for region in regions:
            token, raw = api_token_create(
                user=frontend, name=f"web-{region}", scopes=["flags:evaluate"], actor=tpm
            )
            flag_consumer_register(
                name=f"web-{region}", token=token, target=Target.objects.get(name=region), actor=tpm
            )
            self.stdout.write(f"OFREP consumer web-{region}: Authorization: Bearer {raw}")
        break_glass_define(
            flag_key="disable-retries",
            label="Stop client retries (shed load)",
            actor=tpm,
            allowed=["responder"],
        )
        # Someone arms the new login by hand, ahead of the plan, at 0 %: a deviation to reconcile.
        # (Turning it on for anyone is refused while login-5 waits on its dependencies.)
        flag_change(
            flag_key="new-login",
            changes={"enabled": True, "rollout_percentage": 0},
            actor=commander,
            reason="arm the flag so the ramp is a percentage change",
            source="board",
        )
        self._seed_incident(users)
        for slo_id in SLO.objects.values_list("pk", flat=True):
            slo_refresh(slo_id=slo_id)

    def _seed_assumptions(self, plan: Plan, tpm) -> None:
        """What the plan bets on, ranked, and one call already made. The top bet is untested: its
        probe step fails in the demo (see stepwise/demo.py)."""
        assumption_add(
            plan_id=plan.pk,
            statement="The new identity provider carries peak sign-in traffic (2,000/s) "
            "with under 1% errors",
            impact=5,
            uncertainty=4,
            probe="Replay one peak hour of sign-ins against it from the load generator",
            probe_cost="2 hours, one engineer",
            probe_step_id=plan.steps.get(key="idp-peak-probe").pk,
            actor=tpm,
        )
        for statement, impact, uncertainty, probe, cost, evidence in (
            (
                "Existing sessions can be backfilled online, without a sign-in freeze",
                4,
                2,
                "Backfill us-east first and watch lock waits on the accounts database",
                "half a day",
                "accounts-deploy and the backfill ran with lock waits under 40 ms in us-east",
            ),
            (
                "Clients never notice the gateway auth policy change",
                3,
                2,
                "Canary the policy on one region's edge and compare auth rejections",
                "1 day",
                "gateway-policy canary: auth rejections flat at 1% in us-east and eu-west",
            ),
        ):
            assumption = assumption_add(
                plan_id=plan.pk,
                statement=statement,
                impact=impact,
                uncertainty=uncertainty,
                probe=probe,
                probe_cost=cost,
                actor=tpm,
            )
            assumption_status_set(
                assumption_id=assumption.pk, status="holding", evidence=evidence, actor=tpm
            )
        decision_record(
            actor=tpm,
            plan_id=plan.pk,
            step_id=plan.steps.get(key="gateway-policy").pk,
            believed="All three regions take the gateway policy on the same day",
            observed="ap-south's edge applies config pushes a day late",
            decided="persist",
            why="The lag is the known CDN purge delay; nothing downstream waits on ap-south's "
            "gateway, so the order of the plan still holds",
            would_choose_again=True,
        )

    def _seed_incident(self, users: dict) -> None:
        """An incident in progress: narrated, one hypothesis, a change that did not help."""
        commander, responder = users["commander"], users["responder"]
        incident = incident_declare(
            title="Login errors above 2% in eu-west",
            severity=2,
            summary="Sign-in failures rising since the 5% ramp of the new login.",
            services=["accounts-api", "edge-gateway"],
            plan_keys=["identity-migration"],
            flag_keys=["new-login"],
            detected_at=timezone.now() - timedelta(minutes=4),
            actor=commander,
        )
        incident_status_change(incident_id=incident.pk, status="investigating", actor=commander)
        # The incident held the migration plan the moment it opened; the commander lets it go on.
        incident_plan_release(
            incident_id=incident.pk,
            plan_key="identity-migration",
            reason="the login-5 ramp is how we test the fix; its revert stays one click away",
            actor=commander,
        )
        narration_post(
            incident_id=incident.pk,
            text="Error rate on /login is 2.4% in eu-west, normal elsewhere. Looking at the gateway.",
            actor=commander,
        )
        narration_post(
            incident_id=incident.pk,
            text="Gateway 5xx are flat; the failures are token validation errors.",
            actor=responder,
        )
        hypothesis_state(
            incident_id=incident.pk,
            statement="The gateway pool resize in eu-west dropped the token cache",
            actor=commander,
        )
        change = change_start(
            incident_id=incident.pk,
            description="Warm the token cache in eu-west",
            expected_effect="token validation errors drop below 0.5% within 5 minutes",
            revert_plan="nothing to undo: cache warm-up is read-only",
            actor=commander,
        )
        change_verify(
            incident_id=incident.pk,
            change_id=change.pk,
            better=False,
            actor=commander,
            note="errors unchanged after 6 minutes",
        )
        narration_post(
            incident_id=incident.pk,
            text="Cache warm-up did not help. Next: the new login flag itself.",
            actor=commander,
        )
