"""The paths issue 12 found around the governance rules, each replayed through the services."""

from decimal import Decimal

import pytest

from core.errors import InvalidInput, TransitionRefused
from ledger.models import LedgerEntry
from rollouts.models import Deviation, Flag, Plan, Step, StepTarget
from rollouts.services.deviations import deviation_reconcile
from rollouts.services.flags import flag_change, flag_restore, flag_revert
from rollouts.services.steps import step_target_confirm, step_transition

pytestmark = pytest.mark.django_db


def _step(plan: Plan, key: str) -> Step:
    return plan.steps.get(key=key)


def _flag(key: str = "checkout") -> Flag:
    return Flag.objects.select_related("current").get(key=key)


def _converging(plan: Plan, key: str, actor) -> Step:
    step = _step(plan, key)
    for action in ("start", "advance", "advance"):
        step_transition(step_id=step.pk, action=action, actor=actor)
    return step


# --- 1. a failed step's revert restores where this attempt began ----------------------------------


def test_step_revert__person_rejected_a_deviation_before_start__revert_restores_the_rejection(
    make_plan, role_user
):
    """Ready ramp at 5 %; someone sets 50 %; the TPM reverts that deviation (5 %); the step
    starts (25 %) and fails: the revert goes back to 5 %, not to the rejected 50 %, and again
    after a retry."""
    tpm = role_user("tpm")
    plan = make_plan([{"key": "ramp", "flag": "checkout", "percentage": 25}])
    ramp = _step(plan, "ramp")
    flag_change(
        flag_key="checkout",
        changes={"enabled": True, "rollout_percentage": 5},
        actor=tpm,
        reason="armed at 5%",
        source="board",
    )
    flag_change(
        flag_key="checkout",
        changes={"rollout_percentage": 50},
        actor=tpm,
        reason="by hand",
        source="board",
    )
    rejected = Deviation.objects.filter(flag_version__rollout_percentage=50).get()
    deviation_reconcile(
        deviation_id=rejected.pk, decision="revert", reason="not in the plan", actor=tpm
    )
    assert _flag().current.rollout_percentage == Decimal(5)
    assert not _flag().current.step_id, "a reconcile is not a version of the owning step"

    for attempt in (1, 2):
        step_transition(step_id=ramp.pk, action="start", actor=tpm)
        assert _flag().current.rollout_percentage == Decimal(25)
        step_transition(step_id=ramp.pk, action="revert", actor=None, reason="fail held")
        current = _flag().current
        assert (current.enabled, current.rollout_percentage) == (True, Decimal(5)), attempt
        step_transition(step_id=ramp.pk, action="retry", actor=tpm, reason="try again")


def test_step_revert__flag_lowered_by_hand_meanwhile__left_where_it_is_and_said_so(
    make_plan, role_user
):
    tpm = role_user("tpm")
    plan = make_plan([{"key": "ramp", "flag": "checkout", "percentage": 25}])
    ramp = _step(plan, "ramp")
    step_transition(step_id=ramp.pk, action="start", actor=tpm)
    flag_change(
        flag_key="checkout", changes={"enabled": False}, actor=tpm, reason="off", source="board"
    )
    versions = _flag().versions.count()

    step_transition(step_id=ramp.pk, action="revert", actor=tpm, reason="abandon")

    assert _flag().versions.count() == versions, "a revert never raises exposure"
    reverted = LedgerEntry.objects.filter(step_id=ramp.pk, action="step.reverted").get()
    assert reverted.payload["flag"] == "checkout"
    assert "already no more exposed" in reverted.payload["why"]


# --- 2. skip does not walk around convergence -----------------------------------------------------


def test_skip__skipped_steps_dependency_still_converging__dependant_waits_naming_the_region(
    make_plan, role_user
):
    tpm = role_user("tpm")
    plan = make_plan(
        [
            {"key": "gw", "targets": ["eu-west", "us-east"]},
            {"key": "ramp-a", "deps": ["gw"], "flag": "checkout", "percentage": 5},
            {"key": "ramp-b", "deps": ["ramp-a"], "flag": "checkout", "percentage": 25},
        ]
    )
    gw = _converging(plan, "gw", tpm)
    step_target_confirm(
        step_id=gw.pk, target="us-east", actor=tpm, source="person", reason="dashboards green"
    )
    step_transition(step_id=_step(plan, "ramp-a").pk, action="skip", actor=tpm, reason="fold")
    ramp_b = _step(plan, "ramp-b")
    assert ramp_b.status == "pending"

    with pytest.raises(TransitionRefused) as refused:
        step_transition(step_id=ramp_b.pk, action="start", actor=tpm)
    assert str(refused.value) == (
        "ramp-b cannot start: waits for gw (through skipped ramp-a): converging, not converged "
        "in eu-west: awaiting confirmation"
    )
    assert not _flag().current.enabled

    step_target_confirm(
        step_id=gw.pk, target="eu-west", actor=tpm, source="person", reason="dashboards green"
    )
    assert _step(plan, "ramp-b").status == "ready"


def test_flag_raise__owning_step_waits_on_dependencies__refused_and_nothing_written(
    make_plan, role_user
):
    tpm = role_user("tpm")
    plan = make_plan(
        [
            {"key": "gw", "targets": ["eu-west"]},
            {"key": "ramp", "deps": ["gw"], "flag": "checkout", "percentage": 5},
        ]
    )
    _converging(plan, "gw", tpm)
    before = (LedgerEntry.objects.count(), _flag().versions.count())

    with pytest.raises(TransitionRefused, match="p/ramp waits for gw: converging"):
        flag_change(
            flag_key="checkout",
            changes={"enabled": True, "rollout_percentage": 50},
            actor=tpm,
            reason="by hand",
            source="board",
        )

    assert (LedgerEntry.objects.count(), _flag().versions.count()) == before
    # Lowering, or arming at 0 %, is never held: it is recorded as a deviation.
    flag_change(
        flag_key="checkout",
        changes={"enabled": True, "rollout_percentage": 0},
        actor=tpm,
        reason="armed at 0%",
        source="board",
    )
    assert Deviation.objects.get().summary.startswith(
        f"{tpm.get_username()} changed checkout from off (v1) to on at 0% (v2)"
    )


# --- 3. a person's confirm says why, and keeps what it overrode ----------------------------------


def test_confirm__person_without_reason__refused_naming_the_reading(make_plan, role_user):
    tpm = role_user("tpm")
    plan = make_plan([{"key": "gw", "targets": ["eu-west"]}])
    gw = _converging(plan, "gw", tpm)
    Step.objects.filter(pk=gw.pk).update(
        convergence={"measurement": {"metric": "config_version"}, "condition": "value >= 42"}
    )
    StepTarget.objects.filter(step=gw).update(
        last_check={"value": 41.0, "query": "q", "holds": False, "checked_at": "t"}
    )
    before = LedgerEntry.objects.count()

    with pytest.raises(InvalidInput, match="overrides eu-west: value 41, needs value >= 42"):
        step_target_confirm(step_id=gw.pk, target="eu-west", actor=tpm, source="person")
    assert LedgerEntry.objects.count() == before

    step_target_confirm(
        step_id=gw.pk, target="eu-west", actor=tpm, source="person", reason="rolled by hand"
    )
    entry = LedgerEntry.objects.get(action="step.target_converged")
    assert entry.payload["reason"] == "rolled by hand"
    assert entry.payload["overrode"]["value"] == 41.0
    assert entry.payload["overrode"]["reading"] == "eu-west: value 41, needs value >= 42"


def test_confirm__webhook__needs_no_reason(make_plan, role_user):
    tpm = role_user("tpm")
    plan = make_plan([{"key": "gw", "targets": ["eu-west"]}])
    gw = _converging(plan, "gw", tpm)
    step_target_confirm(
        step_id=gw.pk, target="eu-west", actor=None, source="deploy webhook", evidence={"v": "1"}
    )
    assert _step(plan, "gw").status == "done"


# --- 4. one-click revert never raises exposure ---------------------------------------------------


def test_flag_revert__of_a_revert__refused_saying_what_it_would_apply(db, role_user):
    from rollouts.services.flags import flag_create

    tpm = role_user("tpm")
    flag_create(key="checkout", description="", kind="release", owner="web", actor=tpm)
    for pct in (25, 100):
        flag_change(
            flag_key="checkout",
            changes={"enabled": True, "rollout_percentage": pct},
            actor=tpm,
            reason=f"to {pct}",
            source="board",
        )
    back = flag_revert(flag_key="checkout", seen_version=3, actor=tpm, reason="", source="board")
    assert back.rollout_percentage == Decimal(25)

    with pytest.raises(TransitionRefused, match=r"would apply v3's settings \(on at 100%"):
        flag_revert(flag_key="checkout", seen_version=4, actor=tpm, reason="", source="board")
    assert _flag().current.number == 4
    # Meaning it is a restore, on purpose and with a reason.
    with pytest.raises(InvalidInput, match="say why"):
        flag_restore(flag_key="checkout", version_number=3, actor=tpm, reason=" ", source="board")
    again = flag_restore(
        flag_key="checkout", version_number=3, actor=tpm, reason="fixed upstream", source="board"
    )
    assert again.rollout_percentage == Decimal(100)
