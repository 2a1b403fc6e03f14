"""A property-based simulation of the governance invariants (docs/governance.md) over the real
services and database: Hypothesis generates plans (random dependency graphs with lockstep
groups, flag ramps and per-region targets) and interleaves starts, skips, retries, reverts,
confirms, breaching and healthy samples judged by the worker's evaluation (redelivered too),
out-of-band flag edits, restores, one-click reverts and reconciles. After every action an
independent checker, written from the rows and the ledger, checks the invariants and the hash
chain. Refusals are expected; a refusal must write nothing.

CI runs a bounded number of examples (STEPWISE_SIM_EXAMPLES, STEPWISE_SIM_STEPS); `make soak`
runs many more. The counts are printed at the end (`-s`)."""

import os
import uuid
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from core.errors import InvalidInput, TransitionRefused
from ledger.models import LedgerEntry
from ledger.selectors import ledger_verify
from rollouts.models import Deviation, Flag, FlagVersion, Plan, Step, StepTarget, Target
from rollouts.services.deviations import deviation_reconcile
from rollouts.services.evaluation import verification_evaluate
from rollouts.services.flags import flag_change, flag_create, flag_restore, flag_revert
from rollouts.services.steps import plan_transition, step_target_confirm, step_transition
from signals.services import samples_ingest
from tests.rollouts.conftest import VERIFIED

EXAMPLES = int(os.environ.get("STEPWISE_SIM_EXAMPLES", "12"))
STEPS = int(os.environ.get("STEPWISE_SIM_STEPS", "25"))
REGIONS = ("eu-west", "us-east")
STATS: Counter = Counter()
REASONS: Counter = Counter()
REFUSED = (TransitionRefused, InvalidInput)
PLAUSIBLE = {
    "pending": ["start", "skip"],
    "ready": ["start", "start", "skip"],
    "running": ["advance", "advance", "fail", "revert", "reverify"],
    "verifying": ["advance", "fail", "revert"],
    "converging": ["complete", "revert"],
    "failed": ["retry", "revert"],
    "reverted": ["retry"],
    "done": ["revert"],
}


def _exposure(version: FlagVersion | None) -> Decimal:
    if version is None or not version.enabled:
        return Decimal(0)
    return Decimal(version.rollout_percentage)


class Governance(RuleBasedStateMachine):
    """One plan of 3 to 6 steps on one flag, per example; keys are unique, so examples share
    the database without seeing each other's rows."""

    @initialize(
        size=st.integers(3, 6),
        # Step i depends on step i-1-back[i] (shrinks to a chain), and on a second earlier
        # step when extra[i] says so: chains and diamonds, always acyclic.
        back=st.lists(st.integers(0, 5), min_size=6, max_size=6),
        extra=st.lists(st.booleans(), min_size=6, max_size=6),
        kinds=st.lists(st.booleans(), min_size=6, max_size=6),
        lockstep=st.booleans(),
    )
    def make_plan(self, size, back, extra, kinds, lockstep) -> None:
        from tests.factories import UserFactory

        # Each example runs in its own savepoint, rolled back at teardown: a replayed example
        # (Hypothesis shrinking) sees exactly the database its first run saw.
        self._example = transaction.atomic()
        self._example.__enter__()

        self.tpm = UserFactory(role="tpm")
        tag = uuid.uuid4().hex[:8]
        self.flag = flag_create(
            key=f"f-{tag}", description="", kind="release", owner="web", actor=self.tpm
        )
        self.plan = Plan.objects.create(key=f"p-{tag}", name=tag, owner="platform")
        targets = [Target.objects.get_or_create(name=r)[0] for r in REGIONS]
        steps = []
        for i in range(size):
            ramp = kinds[i]
            step = Step.objects.create(
                plan=self.plan,
                key=f"s{i}",
                title=f"s{i}",
                owner_team="platform",
                kind=Step.Kind.FLAG_RAMP if ramp else Step.Kind.MANUAL,
                position=i + 1,
                flag=self.flag if ramp else None,
                flag_percentage=Decimal(5 * (i + 1)) if ramp else None,
                lockstep_group="pair" if lockstep and i in (1, 2) else "",
                **{**VERIFIED, "on_fail": "restore_previous_flag" if ramp else "pause_plan"},
            )
            for target in targets:
                StepTarget.objects.create(step=step, target=target)
            steps.append(step)
        for i in range(1, size):
            steps[i].depends_on.add(steps[i - 1 - back[i] % i])
            if extra[i] and i > 1:
                steps[i].depends_on.add(steps[(back[i] + 1) % (i - 1)])
        self.steps = [s.pk for s in steps]
        self.attempt_start: dict[int, FlagVersion | None] = {}
        plan_transition(plan_id=self.plan.pk, action="activate", actor=self.tpm)
        STATS["plans"] += 1

    def teardown(self) -> None:
        if hasattr(self, "_example"):
            transaction.set_rollback(True)
            self._example.__exit__(None, None, None)

    # --- acting, with the before/after the checker needs --------------------------------------

    def _snapshot(self) -> dict:
        return {
            "ledger": LedgerEntry.objects.count(),
            "versions": FlagVersion.objects.filter(flag=self.flag).count(),
            "current": Flag.objects.select_related("current").get(pk=self.flag.pk).current,
            "status": dict(Step.objects.filter(pk__in=self.steps).values_list("pk", "status")),
            "deps_converged": {pk: self._deps_converged(pk) for pk in self.steps},
            "waiting_ramp": self._waiting_ramp(),
        }

    def _act(self, name: str, call, *, kind: str = "") -> None:
        before = self._snapshot()
        try:
            call()
        except REFUSED as refused:
            STATS["refused"] += 1
            REASONS[
                f"{name}: {str(refused).split(':')[1][:40] if ':' in str(refused) else str(refused)[:50]}"
            ] += 1
            after = self._snapshot()
            assert after["ledger"] == before["ledger"], f"{name} was refused but wrote the ledger"
            assert after["versions"] == before["versions"], f"{name} refused but made a version"
            return
        STATS[name] += 1
        self._check_action(name, kind, before, self._snapshot())

    # --- the independent model of convergence -------------------------------------------------

    def _deps(self) -> dict[int, list[int]]:
        deps: dict[int, list[int]] = defaultdict(list)
        for frm, to in Step.depends_on.through.objects.filter(
            from_step__plan=self.plan
        ).values_list("from_step_id", "to_step_id"):
            deps[frm].append(to)
        return deps

    def _converged(self, pk: int, status: dict, deps: dict) -> bool:
        if status[pk] == Step.Status.DONE:
            return True
        if status[pk] == Step.Status.SKIPPED:
            return all(self._converged(d, status, deps) for d in deps[pk])
        return False

    def _deps_converged(self, pk: int) -> bool:
        status = dict(Step.objects.filter(pk__in=self.steps).values_list("pk", "status"))
        deps = self._deps()
        group = Step.objects.get(pk=pk).lockstep_group
        members = (
            list(
                Step.objects.filter(plan=self.plan, lockstep_group=group).values_list(
                    "pk", flat=True
                )
            )
            if group
            else [pk]
        )
        return all(self._converged(d, status, deps) for m in members for d in deps[m])

    def _waiting_ramp(self) -> bool:
        """A not-yet-started ramp of this flag whose dependencies have not converged."""
        return any(
            not self._deps_converged(pk)
            for pk in Step.objects.filter(
                pk__in=self.steps, kind=Step.Kind.FLAG_RAMP, status__in=["pending", "ready"]
            ).values_list("pk", flat=True)
        ) and self.plan.__class__.objects.get(pk=self.plan.pk).status in {"active", "paused"}

    # --- the invariants -------------------------------------------------------------------------

    def _check_action(self, name: str, kind: str, before: dict, after: dict) -> None:
        # 1. Nothing started ahead of convergence.
        for pk, status in after["status"].items():
            if before["status"][pk] in {"pending", "ready"} and status not in {
                "pending",
                "ready",
                "skipped",
            }:
                assert before["deps_converged"][pk], f"{name}: step {pk} started unconverged"
                self.attempt_start[pk] = before["current"]
        new_versions = list(
            FlagVersion.objects.filter(flag=self.flag).order_by("number")[before["versions"] :]
        )
        previous = before["current"]
        for version in new_versions:
            raised = _exposure(version) > _exposure(previous)
            if raised and version.step_id is None and before["waiting_ramp"]:
                raise AssertionError(
                    f"{name}: v{version.number} raised exposure while a ramp waited on its deps"
                )
            previous = version
        # 2. Reverts never raise exposure past where the attempt began / where they were.
        if kind == "one-click":
            assert _exposure(after["current"]) <= _exposure(before["current"]), name
        for pk, status in after["status"].items():
            if (
                status == "reverted"
                and before["status"][pk] != "reverted"
                and pk in self.attempt_start
            ) and Step.objects.get(pk=pk).kind == Step.Kind.FLAG_RAMP:
                assert _exposure(after["current"]) <= _exposure(self.attempt_start[pk]), (
                    f"{name}: step {pk} reverted to more exposure than its attempt began at"
                )
        # 4. A console flag change is a change under a hypothesis, or that change's own revert.
        from incidents.models import Change

        for version in new_versions:
            if version.source != FlagVersion.Source.INCIDENT:
                continue
            made = Change.objects.filter(flag_version=version, hypothesis__isnull=False).exists()
            undone = version.restored_from_id is not None and (
                Change.objects.filter(
                    flag_version__number=version.restored_from.number + 1,
                    flag=self.flag,
                    status="reverted",
                ).exists()
            )
            assert made or undone, f"{name}: incident v{version.number} is no change's"
        # 3. One ledger entry per change.
        for version in new_versions:
            rows = LedgerEntry.objects.filter(
                subject_type="rollouts.flag",
                subject_id=str(self.flag.pk),
                payload__to=version.number,
            )
            assert rows.count() == 1, f"{name}: v{version.number} has {rows.count()} ledger rows"

    @invariant()
    def step_ledger_is_the_path(self) -> None:
        if not hasattr(self, "steps"):
            return
        for step in Step.objects.filter(pk__in=self.steps):
            path = list(
                LedgerEntry.objects.filter(step_id=step.pk, action__startswith="step.")
                .exclude(action__in=["step.target_converged", "step.paged"])
                .order_by("seq")
                .values_list("payload", flat=True)
            )
            at = "pending"
            for entry in path:
                assert entry["from"] == at, f"{step.key}: ledger jumps {at} -> {entry['from']}"
                at = entry["to"]
            assert at == step.status, f"{step.key}: ledger ends at {at}, step is {step.status}"
        for entry in LedgerEntry.objects.filter(
            plan_id=self.plan.pk, action="step.target_converged", payload__source="person"
        ):
            assert entry.payload.get("reason"), "a person's confirm without a reason"
            assert "overrode" in entry.payload or not Step.objects.get(pk=entry.step_id).convergence

    @invariant()
    def chain_intact(self) -> None:
        report = ledger_verify()
        assert report.ok, report.first_break

    # --- rules ----------------------------------------------------------------------------------

    @rule(
        i=st.integers(0, 5),
        action=st.sampled_from(
            ["start", "advance", "fail", "revert", "retry", "skip", "complete", "reverify"]
        ),
    )
    def transition(self, i, action) -> None:
        pk = self.steps[i % len(self.steps)]
        self._act(
            f"step.{action}",
            lambda: step_transition(step_id=pk, action=action, actor=self.tpm, reason="sim"),
        )

    @rule(data=st.data())
    def plausible_transition(self, data) -> None:
        """What a person would try next given what the page shows: most actions land."""
        self._plausible(data)

    @rule(data=st.data())
    def plausible_transition_again(self, data) -> None:
        """The same, weighted up: paths deep into a plan need many of these in a row."""
        self._plausible(data)

    def _plausible(self, data) -> None:
        pk = data.draw(st.sampled_from(self.steps))
        status = Step.objects.get(pk=pk).status
        if status not in PLAUSIBLE:
            return
        action = data.draw(st.sampled_from(PLAUSIBLE[status]))
        self._act(
            f"step.{action}",
            lambda: step_transition(step_id=pk, action=action, actor=self.tpm, reason="sim"),
        )

    @rule(data=st.data(), region=st.sampled_from(REGIONS))
    def confirm_active(self, data, region) -> None:
        active = list(
            Step.objects.filter(pk__in=self.steps, status__in=Step.ACTIVE).values_list(
                "pk", flat=True
            )
        )
        if not active:
            return
        pk = data.draw(st.sampled_from(active))
        self._act(
            "confirm",
            lambda: step_target_confirm(
                step_id=pk, target=region, actor=self.tpm, source="person", reason="checked"
            ),
        )

    @rule()
    @precondition(lambda self: hasattr(self, "plan") and self._plan_status() == "paused")
    def resume_plan(self) -> None:
        self._act(
            "plan.resume",
            lambda: plan_transition(plan_id=self.plan.pk, action="resume", actor=self.tpm),
        )

    @rule()
    @precondition(lambda self: hasattr(self, "plan") and self._plan_status() == "active")
    def pause_plan(self) -> None:
        self._act(
            "plan.pause",
            lambda: plan_transition(
                plan_id=self.plan.pk, action="pause", actor=self.tpm, reason="sim"
            ),
        )

    @rule(breaching=st.sampled_from([False, False, False, True]), redeliver=st.booleans())
    def sample_then_worker(self, breaching, redeliver) -> None:
        at = (timezone.now()).isoformat()
        errors = 100.0 if breaching else 1.0
        samples_ingest(
            payload={
                "samples": [
                    {"name": "http_errors", "timestamp": at, "value": errors},
                    {"name": "http_requests", "timestamp": at, "value": 1000.0},
                ]
            }
        )

        def judge() -> None:
            from rollouts.models import Verification

            for run in Verification.objects.filter(step_id__in=self.steps, status="running"):
                token = run.measured
                for _ in range(2 if redeliver else 1):
                    verification_evaluate(verification_id=run.pk, trigger="ingest", token=token)

        self._act("worker", judge)

    @rule(pct=st.sampled_from([0, 1, 25, 50, 100]), enabled=st.booleans())
    def out_of_band_edit(self, pct, enabled) -> None:
        self._act(
            "flag.edit",
            lambda: flag_change(
                flag_key=self.flag.key,
                changes={"enabled": enabled, "rollout_percentage": pct},
                actor=self.tpm,
                reason="by hand",
                source="board",
            ),
        )

    def _plan_status(self) -> str:
        return Plan.objects.filter(pk=self.plan.pk).values_list("status", flat=True).get()

    def _versions(self) -> int:
        return FlagVersion.objects.filter(flag=self.flag).count()

    @rule()
    @precondition(lambda self: hasattr(self, "flag") and self._versions() > 1)
    def one_click_revert(self) -> None:
        seen = Flag.objects.select_related("current").get(pk=self.flag.pk).current.number
        self._act(
            "flag.revert",
            lambda: flag_revert(
                flag_key=self.flag.key, seen_version=seen, actor=self.tpm, reason="", source="board"
            ),
            kind="one-click",
        )

    @rule(back=st.integers(1, 4))
    @precondition(lambda self: hasattr(self, "flag") and self._versions() > 1)
    def restore(self, back) -> None:
        number = max(1, Flag.objects.get(pk=self.flag.pk).current.number - back)
        self._act(
            "flag.restore",
            lambda: flag_restore(
                flag_key=self.flag.key,
                version_number=number,
                actor=self.tpm,
                reason="on purpose",
                source="board",
            ),
        )

    # --- an incident on the same flag, run from the console ------------------------------------

    def _incident(self):
        from incidents.services import incident_declare

        if not hasattr(self, "incident_id"):
            from tests.factories import UserFactory

            self.commander = UserFactory(role="commander")
            self.incident_id = incident_declare(
                title="sim", severity=2, actor=self.commander, flag_keys=[self.flag.key]
            ).pk
        return self.incident_id

    @rule()
    @precondition(lambda self: hasattr(self, "flag"))
    def hypothesis(self) -> None:
        from incidents.services import hypothesis_state

        incident_id = self._incident()
        self._act(
            "incident.hypothesis",
            lambda: hypothesis_state(
                incident_id=incident_id, statement="the flag did it", actor=self.commander
            ),
        )

    @rule(pct=st.sampled_from([0, 5, 50]), enabled=st.booleans())
    @precondition(lambda self: hasattr(self, "flag"))
    def incident_change(self, pct, enabled) -> None:
        from incidents.services import change_start

        incident_id = self._incident()
        self._act(
            "incident.change",
            lambda: change_start(
                incident_id=incident_id,
                description="flag change",
                expected_effect="errors drop",
                revert_plan="",
                actor=self.commander,
                flag_key=self.flag.key,
                flag_changes={"enabled": enabled, "rollout_percentage": pct},
            ),
        )

    @rule(better=st.booleans())
    @precondition(lambda self: hasattr(self, "incident_id"))
    def incident_verify(self, better) -> None:
        from incidents.models import Change
        from incidents.services import change_verify

        change = Change.objects.filter(incident_id=self.incident_id, status="in_progress").first()
        if change is None:
            return
        self._act(
            "incident.verify",
            lambda: change_verify(
                incident_id=self.incident_id,
                change_id=change.pk,
                better=better,
                actor=self.commander,
            ),
        )

    @rule()
    @precondition(lambda self: hasattr(self, "flag") and self._versions() > 1)
    def incident_revert(self) -> None:
        from incidents.services import incident_flag_revert

        incident_id = self._incident()
        seen = Flag.objects.select_related("current").get(pk=self.flag.pk).current.number
        self._act(
            "incident.revert",
            lambda: incident_flag_revert(
                incident_id=incident_id,
                flag_key=self.flag.key,
                seen_version=seen,
                actor=self.commander,
            ),
            kind="one-click",
        )

    @rule(accept=st.booleans())
    def reconcile(self, accept) -> None:
        deviation = Deviation.objects.filter(plan=self.plan, status="open").order_by("pk").first()
        if deviation is None:
            return
        self._act(
            "reconcile",
            lambda: deviation_reconcile(
                deviation_id=deviation.pk,
                decision="accept" if accept else "revert",
                reason="sim",
                actor=self.tpm,
            ),
        )


Governance.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)


def _run() -> None:
    STATS.clear()
    Governance.TestCase().runTest()
    print(
        f"\ngovernance simulation: {STATS['plans']} plans (examples), "
        f"{sum(v for k, v in STATS.items() if k not in {'plans'})} actions, "
        f"{STATS['refused']} refused; " + ", ".join(f"{k} {v}" for k, v in sorted(STATS.items()))
    )
    print("most common refusals:", REASONS.most_common(8))


# The CI slice takes well under a minute; `make soak` raises the budget and this limit with it.
SOAK_TIMEOUT = int(os.environ.get("STEPWISE_SIM_TIMEOUT", "300"))


@pytest.mark.timeout(SOAK_TIMEOUT)
@pytest.mark.django_db
def test_governance_invariants__sqlite_or_default_database():
    _run()


@pytest.mark.timeout(SOAK_TIMEOUT)
@pytest.mark.postgres
@pytest.mark.django_db
def test_governance_invariants__postgresql():
    _run()
