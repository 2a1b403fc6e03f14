"""During an incident, a flag change from the console is a change under the current hypothesis,
or a break-glass action; nothing else. A Hypothesis state machine drives the real services in
any order (hypotheses, changes with and without flags, one-click reverts fresh and stale, verdicts,
break-glass, and flag changes on the board outside the incident) and checks after every step:

- every flag version the incident made is a Change's version, a "not better" undo of one, or a
  break-glass flip;
- at most one change is in progress, and it tests the open hypothesis;
- a one-click revert never raised exposure;
- a refused action wrote nothing.
"""

import contextlib

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from core.errors import InvalidInput, TransitionRefused
from incidents.models import BreakGlassSwitch, Change, Hypothesis, Incident, TimelineEntry
from incidents.services import (
    break_glass_flip,
    change_start,
    change_verify,
    hypothesis_close,
    hypothesis_state,
    incident_declare,
    incident_flag_revert,
)
from ledger.models import LedgerEntry
from rollouts.models import Flag, FlagVersion
from rollouts.services.flags import flag_change, flag_create

pytestmark = pytest.mark.django_db
FLAGS = ("checkout-v2", "new-login")
FLAG_ACTIONS = ("flag.changed", "flag.reverted", "flag.restored")


def _counts() -> tuple[int, ...]:
    return (
        FlagVersion.objects.count(),
        Change.objects.count(),
        Hypothesis.objects.count(),
        TimelineEntry.objects.count(),
        LedgerEntry.objects.count(),
    )


class ConsoleFlags(RuleBasedStateMachine):
    people: dict = {}

    def __init__(self) -> None:
        super().__init__()
        # Each run in a savepoint of the test's transaction, rolled back in teardown.
        self._savepoint = transaction.atomic()
        self._savepoint.__enter__()
        ada, tpm = self.people["ada"], self.people["tpm"]
        for key in FLAGS:
            flag_create(key=key, description="", kind="release", owner="web", actor=tpm)
        flag_change(
            flag_key="checkout-v2",
            changes={"enabled": True, "rollout_percentage": 50},
            actor=tpm,
            reason="ramp to 50%",
            source="board",
        )
        switch_flag = flag_create(
            key="shed-load", description="", kind=Flag.Kind.KILL_SWITCH, owner="sre", actor=None
        )
        self.switch = BreakGlassSwitch.objects.create(flag=switch_flag, label="shed load")
        self.incident = incident_declare(
            title="Checkout 500s", severity=2, actor=ada, flag_keys=list(FLAGS)
        )

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._savepoint.__exit__(None, None, None)

    def _try(self, action, **kwargs) -> None:
        """Call a service; a refusal must leave every table as it was."""
        before = _counts()
        try:
            action(incident_id=self.incident.pk, **kwargs)
        except (TransitionRefused, InvalidInput):
            assert _counts() == before, f"{action.__name__} refused but wrote something"

    def _current(self, key: str) -> int:
        return Flag.objects.select_related("current").get(key=key).current.number

    @rule(statement=st.sampled_from(["pool exhausted", "checkout-v2 breaks carts"]))
    def state_hypothesis(self, statement: str) -> None:
        self._try(hypothesis_state, statement=statement, actor=self.people["ada"])

    @rule(confirmed=st.booleans())
    def close_hypothesis(self, confirmed: bool) -> None:
        open_ = self.incident.hypotheses.filter(status="open").first()
        if open_ is not None:
            self._try(
                hypothesis_close,
                hypothesis_id=open_.pk,
                confirmed=confirmed,
                actor=self.people["ada"],
            )

    @rule(
        key=st.sampled_from(FLAGS),
        enabled=st.none() | st.booleans(),
        percentage=st.none() | st.sampled_from([0, 5, 25, 50, 100]),
        revert=st.sampled_from(["", "n/a", "set it back by hand"]),
    )
    def flag_change_from_the_console(self, key, enabled, percentage, revert) -> None:
        changes = {"enabled": enabled, "rollout_percentage": percentage}
        self._try(
            change_start,
            description=f"{key} to {changes}",
            expected_effect="errors drop",
            revert_plan=revert,
            actor=self.people["ada"],
            flag_key=key,
            flag_changes={k: v for k, v in changes.items() if v is not None},
        )

    @rule()
    def manual_change(self) -> None:
        self._try(
            change_start,
            description="Drain eu-west",
            expected_effect="errors drop",
            revert_plan="undrain eu-west",
            actor=self.people["ada"],
        )

    @rule(key=st.sampled_from(FLAGS), stale=st.booleans(), who=st.sampled_from(["ada", "bob"]))
    def one_click_revert(self, key: str, stale: bool, who: str) -> None:
        self._try(
            incident_flag_revert,
            flag_key=key,
            seen_version=self._current(key) - (1 if stale else 0),
            actor=self.people[who],
        )

    @rule(better=st.booleans())
    def verify(self, better: bool) -> None:
        change = self.incident.changes.filter(status="in_progress").first()
        if change is not None:
            self._try(change_verify, change_id=change.pk, better=better, actor=self.people["ada"])

    @rule(on=st.booleans())
    def break_glass(self, on: bool) -> None:
        self._try(break_glass_flip, switch_id=self.switch.pk, on=on, actor=self.people["ada"])

    @rule(key=st.sampled_from(FLAGS), percentage=st.sampled_from([0, 10, 60]))
    def someone_on_the_flags_board(self, key: str, percentage: int) -> None:
        with contextlib.suppress(TransitionRefused, InvalidInput):
            flag_change(
                flag_key=key,
                changes={"enabled": True, "rollout_percentage": percentage},
                actor=self.people["tpm"],
                reason="ramp",
                source="board",
            )

    @invariant()
    def every_console_flag_version_is_a_change_its_undo_or_break_glass(self) -> None:
        changes = list(
            Change.objects.filter(incident=self.incident, flag__isnull=False).select_related(
                "flag", "flag_version"
            )
        )
        made = {(c.flag.key, c.flag_version.number) for c in changes}
        undone = {
            (c.flag.key, c.flag_version.number)
            for c in changes
            if c.status == Change.Status.REVERTED
        }
        for entry in LedgerEntry.objects.filter(
            incident_id=self.incident.pk, action__in=FLAG_ACTIONS
        ):
            p = entry.payload
            if p.get("break_glass"):
                assert p["flag"] == "shed-load", p
            elif entry.action == "flag.restored":
                # The "not better" of a change: the version before it, over the version it made.
                assert (p["flag"], p["from"]) in undone, p
                assert p["restored_from"] == p["from"] - 1, p
            else:
                assert (p["flag"], p["to"]) in made, p

    @invariant()
    def one_change_at_a_time_under_the_open_hypothesis(self) -> None:
        in_progress = list(self.incident.changes.filter(status="in_progress"))
        assert len(in_progress) <= 1
        for change in in_progress:
            assert change.hypothesis.status == Hypothesis.Status.OPEN

    @invariant()
    def a_one_click_revert_never_raised_exposure(self) -> None:
        for change in Change.objects.filter(
            incident=self.incident, description__startswith="Revert "
        ).select_related("flag_version"):
            version = change.flag_version
            replaced = FlagVersion.objects.get(flag_id=version.flag_id, number=version.number - 1)
            assert not version.exposes_more_than(replaced), change.description


def test_console_flag_changes__any_order__only_changes_their_undo_or_break_glass(role_user):
    ConsoleFlags.people = {
        "ada": role_user("commander", username="ada"),
        "bob": role_user("commander", username="bob"),
        "tpm": role_user("tpm", username="eve"),
    }
    run_state_machine_as_test(
        ConsoleFlags,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            database=None,
        ),
    )
    assert Incident.objects.count() == 0  # every run rolled back its savepoint
