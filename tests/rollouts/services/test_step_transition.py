import pytest

from core.errors import InvalidInput, TransitionRefused
from ledger.models import LedgerEntry
from ledger.selectors import ledger_verify
from rollouts.models import Deviation, Flag, Plan, Step
from rollouts.services.deviations import deviation_reconcile
from rollouts.services.flags import flag_change
from rollouts.services.steps import plan_transition, step_target_confirm, step_transition

pytestmark = pytest.mark.django_db


def _step(plan: Plan, key: str) -> Step:
    return plan.steps.get(key=key)


def _statuses(plan: Plan) -> dict[str, str]:
    return dict(plan.steps.values_list("key", "status"))


def test_step_start__dependency_not_converged__refused_naming_it_and_nothing_changes(
    make_plan, role_user
):
    plan = make_plan([{"key": "roles", "targets": ["eu"]}, {"key": "deploy", "deps": ["roles"]}])
    step_transition(step_id=_step(plan, "roles").pk, action="start", actor=role_user("tpm"))
    before = LedgerEntry.objects.count()
    with pytest.raises(
        TransitionRefused, match="deploy cannot start: waits for roles: running, not converged"
    ):
        step_transition(step_id=_step(plan, "deploy").pk, action="start", actor=role_user("tpm"))
    assert _statuses(plan)["deploy"] == "pending"
    assert LedgerEntry.objects.count() == before


def test_step_start__no_verification__refused_naming_what_is_missing(make_plan):
    plan = make_plan([{"key": "a", "unverified": True}])
    with pytest.raises(
        TransitionRefused,
        match="no verification: missing pass condition, fail condition, action on fail",
    ):
        step_transition(step_id=_step(plan, "a").pk, action="start", actor=None)


@pytest.mark.parametrize("status", ["draft", "paused", "killed", "completed"])
def test_step_start__plan_not_active__refused(make_plan, status):
    plan = make_plan([{"key": "a"}], status=status)
    with pytest.raises(TransitionRefused, match=f"plan is {status}"):
        step_transition(step_id=_step(plan, "a").pk, action="start", actor=None)


def test_step_lifecycle__confirmed_in_every_target__done_dependents_ready_plan_completes(
    make_plan, role_user
):
    tpm = role_user("tpm")
    plan = make_plan(
        [{"key": "gw", "targets": ["us", "eu", "ap"]}, {"key": "after", "deps": ["gw"]}]
    )
    gw = _step(plan, "gw")
    step_transition(step_id=gw.pk, action="start", actor=tpm)
    step_transition(step_id=gw.pk, action="advance", actor=tpm)
    step_transition(step_id=gw.pk, action="advance", actor=tpm)
    assert _statuses(plan) == {"gw": "converging", "after": "pending"}
    step_target_confirm(
        step_id=gw.pk, target="us", actor=tpm, source="person", reason="checked by hand"
    )
    step_target_confirm(
        step_id=gw.pk, target="eu", actor=tpm, source="person", reason="checked by hand"
    )
    with pytest.raises(TransitionRefused, match="not converged in ap"):
        step_transition(step_id=gw.pk, action="complete", actor=tpm)
    assert _statuses(plan)["after"] == "pending"  # accepted in two regions is not converged
    step_target_confirm(
        step_id=gw.pk, target="ap", actor=tpm, source="person", reason="checked by hand"
    )
    assert _statuses(plan) == {"gw": "done", "after": "ready"}

    after = _step(plan, "after")
    for action in ("start", "advance", "advance"):
        step_transition(step_id=after.pk, action=action, actor=tpm)
    plan.refresh_from_db()
    assert plan.status == "completed"
    actions = list(
        LedgerEntry.objects.filter(plan_id=plan.pk).order_by("seq").values_list("action", flat=True)
    )
    assert actions.count("step.target_converged") == 3 and actions[-1] == "plan.completed"
    assert ledger_verify().ok


def test_step_lockstep__start_one__partner_starts_too_and_one_failing_halts_the_other(make_plan):
    plan = make_plan([{"key": "migrate-a", "lockstep": "m"}, {"key": "migrate-b", "lockstep": "m"}])
    step_transition(step_id=_step(plan, "migrate-a").pk, action="start", actor=None)
    assert _statuses(plan) == {"migrate-a": "running", "migrate-b": "running"}
    step_transition(
        step_id=_step(plan, "migrate-b").pk, action="fail", actor=None, reason="mismatches > 0"
    )
    assert _statuses(plan) == {"migrate-a": "failed", "migrate-b": "failed"}
    halted = LedgerEntry.objects.get(
        action="step.failed", subject_id=str(_step(plan, "migrate-a").pk)
    )
    assert "lockstep partner migrate-b failed" in halted.payload["reason"]


def test_step_lockstep__partner_blocked__whole_group_refused(make_plan):
    plan = make_plan(
        [{"key": "x"}, {"key": "a", "lockstep": "g"}, {"key": "b", "lockstep": "g", "deps": ["x"]}]
    )
    with pytest.raises(TransitionRefused, match=r"waits for x \(lockstep partner b\)"):
        step_transition(step_id=_step(plan, "a").pk, action="start", actor=None)
    assert _statuses(plan)["a"] == "pending"


def test_flag_ramp__start_then_revert__flag_versions_forward_with_no_deviation(
    make_plan, role_user
):
    plan = make_plan([{"key": "ramp-5", "flag": "new-login", "percentage": 5, "targets": ["eu"]}])
    ramp = _step(plan, "ramp-5")
    step_transition(step_id=ramp.pk, action="start", actor=role_user("tpm"))
    flag = Flag.objects.select_related("current").get(key="new-login")
    assert (flag.current.number, flag.current.enabled, float(flag.current.rollout_percentage)) == (
        2,
        True,
        5.0,
    )
    assert flag.current.step_id == ramp.pk
    step_transition(
        step_id=ramp.pk, action="revert", actor=role_user("tpm"), reason="p99 regressed"
    )
    flag.refresh_from_db()
    assert (flag.current.number, flag.current.enabled, flag.current.restored_from.number) == (
        3,
        False,
        1,
    )
    assert not Deviation.objects.exists()
    assert _statuses(plan)["ramp-5"] == "reverted"


def test_flag_change__outside_the_owning_step__deviation_recorded_then_reverted(
    make_plan, role_user
):
    commander = role_user("commander")
    plan = make_plan([{"key": "ramp", "flag": "new-login", "percentage": 25}])
    flag_change(
        flag_key="new-login",
        changes={"enabled": True, "rollout_percentage": 50},
        actor=commander,
        reason="hotfix",
        source="board",
    )
    deviation = Deviation.objects.get()
    assert (
        deviation.plan == plan
        and deviation.step.key == "ramp"
        and "outside step ramp" in deviation.summary
    )
    assert LedgerEntry.objects.filter(action="deviation.recorded", plan_id=plan.pk).exists()

    deviation_reconcile(
        deviation_id=deviation.pk, decision="revert", reason="not in the plan", actor=commander
    )
    flag = Flag.objects.get(key="new-login")
    assert flag.current.enabled is False and Deviation.objects.get().status == "reverted"
    assert Deviation.objects.count() == 1  # the revert itself is on the plan's path
    with pytest.raises(TransitionRefused, match="already reverted by"):
        deviation_reconcile(
            deviation_id=deviation.pk, decision="accept", reason="x", actor=commander
        )


def test_flag_change__percentage_out_of_range__refused_and_no_version(make_plan):
    make_plan([{"key": "ramp", "flag": "new-login", "percentage": 5}])
    for bad in (140, -1, "abc", float("nan")):
        with pytest.raises(InvalidInput, match="rollout percentage"):
            flag_change(
                flag_key="new-login",
                changes={"rollout_percentage": bad},
                actor=None,
                reason="x",
                source="api",
            )
    assert Flag.objects.get(key="new-login").versions.count() == 1
    with pytest.raises(InvalidInput, match="no flag with key"):
        flag_change(
            flag_key="nope", changes={"enabled": True}, actor=None, reason="x", source="api"
        )


def test_plan_transition__kill_without_a_decision__refused_then_killed_starts_nothing(
    make_plan, role_user
):
    from tests.rollouts.decision_factories import decide

    plan = make_plan([{"key": "a"}])
    tpm = role_user("tpm")
    with pytest.raises(TransitionRefused, match="a kill is a decision: record it on plan p's"):
        plan_transition(plan_id=plan.pk, action="kill", actor=tpm, reason="superseded")
    with pytest.raises(InvalidInput, match="say why"):
        plan_transition(plan_id=plan.pk, action="pause", actor=tpm)
    assert Plan.objects.get(pk=plan.pk).status == "active"
    decision = decide(plan, tpm, "kill")
    killed = LedgerEntry.objects.get(action="plan.killed", plan_id=plan.pk)
    assert killed.payload["decision"] == decision.pk
    with pytest.raises(TransitionRefused, match="plan is killed"):
        step_transition(step_id=_step(plan, "a").pk, action="start", actor=None)
    with pytest.raises(TransitionRefused, match="cannot become active"):
        plan_transition(plan_id=plan.pk, action="activate", actor=None)


def test_step_transition__unknown_step_or_action__invalid_input(make_plan):
    plan = make_plan([{"key": "a"}])
    with pytest.raises(InvalidInput, match="no step with id"):
        step_transition(step_id=999_999, action="start", actor=None)
    with pytest.raises(InvalidInput, match="unknown step action"):
        step_transition(step_id=_step(plan, "a").pk, action="teleport", actor=None)
