import pytest
import yaml

from ledger.models import LedgerEntry
from live.models import StreamEvent
from rollouts.models import Flag, Plan, Step, StepTarget, Target
from rollouts.plan_spec import PlanSpecInvalid, plan_export
from rollouts.services.plan_apply import PlanApplyRefused, plan_apply
from tests.factories import UserFactory
from tests.rollouts.plan_factories import example_text, plan_doc, plan_yaml, step_doc

# The example plan gates two steps on the login SLO, which must exist to apply it.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("example_slos")]


@pytest.fixture
def tpm():
    return UserFactory(role="tpm")


def _ledger(action: str) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(action=action).order_by("seq"))


def _deps(plan: Plan) -> dict[str, set[str]]:
    return {s.key: {d.key for d in s.depends_on.all()} for s in plan.steps.all()}


def test_plan_apply__example_file__plan_steps_targets_flag_ledger_and_push(tpm, pushes):
    with pushes.commit():
        result = plan_apply(text=example_text(), actor=tpm)

    plan = Plan.objects.get(key="identity-migration")
    assert result.applied and result.plan == plan and plan.status == "draft"
    assert plan.spec_digest == result.spec.digest()
    steps = list(plan.steps.order_by("position"))
    assert [s.position for s in steps] == list(range(1, 11))
    assert steps[0].key == "idp-roles" and steps[-1].key == "idp-peak-probe"
    assert _deps(plan)["login-25"] == {"login-5"} and _deps(plan)["login-100"] == {"login-25"}
    # 9 steps in 3 regions, the probe in 1
    assert StepTarget.objects.filter(step__plan=plan).count() == 28
    assert set(Target.objects.values_list("name", flat=True)) == {"us-east", "eu-west", "ap-south"}
    flag = Flag.objects.get(key="new-login")
    assert flag.current.number == 1 and not flag.current.enabled
    ramp = plan.steps.get(key="login-5")
    assert ramp.flag == flag and ramp.flag_percentage == 5 and ramp.on_fail_percentage == 0
    assert all(s.has_verification and s.rollback_command and s.runbook_url for s in steps)

    applied, declared = _ledger("plan.applied"), _ledger("plan.declared")
    assert len(applied) == 1 and applied[0].plan_id == plan.pk
    assert applied[0].actor_label == tpm.username
    assert applied[0].payload["created"] is True
    assert applied[0].payload["flags_created"] == ["new-login"]
    assert declared[0].payload["order"] == [s.key for s in steps]
    assert declared[0].payload["depends_on"]["accounts-deploy"] == ["idp-roles", "sessions-expand"]
    assert StreamEvent.objects.filter(stream_id=plan.stream, event="plan.applied").count() == 1
    assert len(pushes.on(plan.stream)) == 1


def test_plan_apply__same_file_twice__no_changes_and_nothing_written(tpm, pushes):
    with pushes.commit():
        plan_apply(text=example_text(), actor=tpm)
    entries, events = LedgerEntry.objects.count(), StreamEvent.objects.count()

    with pushes.commit():
        result = plan_apply(text=example_text(), actor=tpm)

    assert not result.changed and not result.applied
    assert result.diff.lines() == ["plan identity-migration: no changes"]
    assert (LedgerEntry.objects.count(), StreamEvent.objects.count()) == (entries, events)


def test_plan_apply__invalid_file__every_error_raised_and_nothing_written(tpm):
    text = plan_yaml(
        step_doc("a", depends_on=["b"]),
        step_doc("b", depends_on=["a"], kind="flag_ramp"),
    )
    with pytest.raises(PlanSpecInvalid) as info:
        plan_apply(text=text, actor=tpm)
    assert [e.path for e in info.value.errors] == ["spec.steps[0].depends_on[0]", "spec.steps[1]"]
    assert not Plan.objects.exists() and not LedgerEntry.objects.exists()
    assert not Target.objects.exists()


def test_plan_apply__changed_file__dry_run_shows_field_diff_then_apply_writes_it(tpm):
    plan_apply(
        text=plan_yaml(
            step_doc("a", targets=["eu-west"]),
            step_doc("b", depends_on=["a"]),
            step_doc("c", depends_on=["b"]),
        ),
        actor=tpm,
    )
    changed = plan_yaml(
        step_doc("a", title="Step a, renamed", targets=["eu-west", "us-east"]),
        step_doc("c", depends_on=["a"]),
        step_doc(
            "ramp",
            kind="flag_ramp",
            depends_on=["c"],
            flag={"key": "checkout-v2", "percentage": 12.5},
            verification={
                "pass": "checkout_errors < 0.01",
                "fail": "checkout_errors > 0.02",
                "on_fail": "restore_previous_flag",
                "measurements": {
                    "checkout_errors": {"metric": "checkout_error_ratio", "aggregation": "avg"}
                },
            },
        ),
        goal="ship it safely",
    )
    seq_before = LedgerEntry.objects.count()

    preview = plan_apply(text=changed, actor=tpm, dry_run=True)

    assert LedgerEntry.objects.count() == seq_before and not Flag.objects.exists()
    assert set(Step.objects.values_list("key", flat=True)) == {"a", "b", "c"}
    assert preview.diff.lines() == [
        "~ plan checkout",
        "    goal: 'ship it' -> 'ship it safely'",
        "+ step ramp: Step ramp (flag_ramp, owner platform)",
        "- step b",
        "~ step a",
        "    title: 'Step a' -> 'Step a, renamed'",
        "    targets: [eu-west] -> [eu-west, us-east]",
        "~ step c depends_on: +a -b",
        "+ flags (created off): checkout-v2",
        "+ targets: us-east",
    ]

    result = plan_apply(text=changed, actor=tpm)

    plan = result.plan
    assert [s.key for s in plan.steps.order_by("position")] == ["a", "c", "ramp"]
    assert plan.goal == "ship it safely"
    assert _deps(plan) == {"a": set(), "c": {"a"}, "ramp": {"c"}}
    a = plan.steps.get(key="a")
    assert a.title == "Step a, renamed"
    assert set(a.step_targets.values_list("target__name", flat=True)) == {"eu-west", "us-east"}
    assert plan.steps.get(key="ramp").flag.key == "checkout-v2"
    payload = _ledger("plan.applied")[-1].payload
    assert payload["steps_removed"] == ["b"] and payload["steps_added"] == ["ramp"]
    assert payload["steps_changed"]["a"]["title"] == {
        "before": "Step a",
        "after": "Step a, renamed",
    }
    assert payload["dependencies"] == {"c": {"added": ["a"], "removed": ["b"]}}
    assert _ledger("plan.declared")[-1].payload["order"] == ["a", "c", "ramp"]


def test_plan_apply__draft_plan_reordered__positions_follow_the_file(tpm):
    plan_apply(text=plan_yaml(step_doc("a"), step_doc("b"), step_doc("c")), actor=tpm)

    result = plan_apply(text=plan_yaml(step_doc("c"), step_doc("a"), step_doc("b")), actor=tpm)

    assert result.diff.order_changed
    assert list(result.plan.steps.order_by("position").values_list("key", "position")) == [
        ("c", 1),
        ("a", 2),
        ("b", 3),
    ]


def test_plan_apply__export_of_applied_plan__round_trip_is_a_no_op(tpm):
    plan = plan_apply(text=example_text(), actor=tpm).plan
    exported = plan_export(plan)
    entries = LedgerEntry.objects.count()

    result = plan_apply(text=exported, actor=tpm)

    assert not result.changed and LedgerEntry.objects.count() == entries
    assert yaml.safe_load(exported)["metadata"]["key"] == "identity-migration"


def test_plan_apply__export_of_seeded_plan__round_trip_is_a_no_op(tpm, make_plan):
    plan = make_plan(
        [
            {
                "key": "ramp",
                "flag": "new-login",
                "percentage": 5,
                "targets": ["eu-west", "us-east"],
            },
            {
                "key": "deploy",
                "kind": "deploy",
                "service": "api",
                "deps": ["ramp"],
                "status": "done",
            },
            {"key": "later", "deps": ["deploy"], "unverified": True},
        ],
        status="active",
    )
    steps_before = list(Step.objects.values())
    entries = LedgerEntry.objects.count()

    result = plan_apply(text=plan_export(plan), actor=tpm)

    assert not result.changed
    assert result.warnings == [
        "step 'later' has no verification: it cannot start until one is declared"
    ]
    assert list(Step.objects.values()) == steps_before
    assert LedgerEntry.objects.count() == entries
    plan.refresh_from_db()
    assert plan.spec_digest == result.spec.digest()


@pytest.fixture
def running_plan(make_plan):
    return make_plan(
        [
            {"key": "a", "status": "done"},
            {"key": "b", "deps": ["a"], "status": "running"},
            {"key": "c", "deps": ["b"]},
        ],
        status="active",
    )


def _doc_of(plan: Plan) -> dict:
    return yaml.safe_load(plan_export(plan))


def test_plan_apply__active_plan_removes_running_step__refused_and_nothing_written(
    tpm, running_plan
):
    doc = _doc_of(running_plan)
    doc["spec"]["steps"] = [s for s in doc["spec"]["steps"] if s["key"] != "b"]
    doc["spec"]["steps"][1]["depends_on"] = ["a"]
    doc["spec"]["goal"] = "changed"

    with pytest.raises(PlanApplyRefused) as info:
        plan_apply(text=yaml.safe_dump(doc), actor=tpm)

    assert info.value.reasons[0] == (
        "step 'b' is running: a started step cannot be removed (keep it in the file)"
    )
    running_plan.refresh_from_db()
    assert running_plan.goal == "" and running_plan.steps.count() == 3
    assert not LedgerEntry.objects.filter(action="plan.applied").exists()


def test_plan_apply__active_plan_moves_done_step__refused_with_positions(tpm, running_plan):
    doc = _doc_of(running_plan)
    doc["spec"]["steps"].insert(0, step_doc("first"))

    with pytest.raises(PlanApplyRefused) as info:
        plan_apply(text=yaml.safe_dump(doc), actor=tpm)

    assert info.value.reasons == [
        "step 'a' is done at position 1 and the file puts it at 2: a plan that is active cannot "
        "move started steps (add new steps after them)",
        "step 'b' is running at position 2 and the file puts it at 3: a plan that is active "
        "cannot move started steps (add new steps after them)",
    ]
    assert not Step.objects.filter(key="first").exists()


def test_plan_apply__active_plan_metadata_and_appended_step__applied(tpm, running_plan):
    doc = _doc_of(running_plan)
    doc["spec"]["steps"][1]["title"] = "B, as it is really called"
    doc["spec"]["steps"][1]["revert"] = {"runbook": "https://runbooks.example.com/b"}
    doc["spec"]["steps"].append(step_doc("d", depends_on=["c"]))

    result = plan_apply(text=yaml.safe_dump(doc), actor=tpm)

    b = running_plan.steps.get(key="b")
    assert result.applied and b.title == "B, as it is really called" and b.status == "running"
    assert b.runbook_url == "https://runbooks.example.com/b"
    assert running_plan.steps.get(key="d").position == 4


def test_plan_apply__started_flag_step_percentage_changed__refused(tpm, make_plan):
    plan = make_plan([{"key": "ramp", "flag": "f", "percentage": 5, "status": "done"}])
    doc = _doc_of(plan)
    doc["spec"]["steps"][0]["flag"]["percentage"] = 50

    with pytest.raises(
        PlanApplyRefused, match=r"'ramp' is done: its flag\.percentage cannot change"
    ):
        plan_apply(text=yaml.safe_dump(doc), actor=tpm)


def test_plan_apply__failure_after_writes__whole_apply_rolled_back(tpm, monkeypatch):
    def broken_publish(**kwargs):
        raise RuntimeError("push failed")

    monkeypatch.setattr("rollouts.services.plan_apply.stream_touch", broken_publish)
    with pytest.raises(RuntimeError):
        plan_apply(text=example_text(), actor=tpm)
    assert not Plan.objects.exists() and not Flag.objects.exists() and not Target.objects.exists()
    assert not LedgerEntry.objects.exists()


def test_plan_apply__plan_changed_since_preview__refused(tpm):
    plan_apply(text=plan_yaml(step_doc("a")), actor=tpm)
    preview = plan_apply(text=plan_yaml(step_doc("a"), step_doc("b")), actor=tpm, dry_run=True)
    plan_apply(text=plan_yaml(step_doc("a", title="someone else")), actor=tpm)

    with pytest.raises(PlanApplyRefused, match="changed since the preview"):
        plan_apply(
            text=plan_yaml(step_doc("a"), step_doc("b")),
            actor=tpm,
            base_digest=preview.base_digest,
        )
    assert not Step.objects.filter(key="b").exists()


def test_plan_apply__existing_flag__reused_not_recreated(tpm):
    from rollouts.services.flags import flag_create

    flag = flag_create(key="new-login", description="", kind="release", owner="web", actor=None)
    result = plan_apply(text=example_text(), actor=tpm)
    assert result.diff.flags_created == []
    assert set(Step.objects.filter(kind="flag_ramp").values_list("flag", flat=True)) == {flag.pk}


def test_plan_apply__plan_doc_as_json__accepted(tpm):
    import json

    result = plan_apply(text=json.dumps(plan_doc(step_doc("a"))), actor=tpm)
    assert result.applied and result.plan.key == "checkout"
