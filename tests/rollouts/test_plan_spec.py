import json
import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from rollouts.plan_spec import (
    PLAN_SCHEMA,
    PlanSpecInvalid,
    plan_spec_dump,
    plan_spec_errors,
    plan_spec_parse,
)
from tests.rollouts.plan_factories import example_text, plan_doc, plan_yaml, step_doc

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _messages(text: str) -> list[str]:
    spec, errors = plan_spec_errors(text)
    assert spec is None
    return [str(e) for e in errors]


def test_plan_spec_parse__example__the_demo_program_as_declared():
    spec = plan_spec_parse(example_text())
    steps = {s.key: s for s in spec.steps}
    assert spec.key == "identity-migration" and spec.warnings == ()
    assert spec.step_keys()[0] == "idp-roles"
    assert set(steps["idp-roles"].targets) == {"us-east", "eu-west", "ap-south"}
    assert steps["accounts-deploy"].service == "accounts-api"
    assert set(steps["accounts-deploy"].depends_on) == {"idp-roles", "sessions-expand"}
    ramps = [s for s in spec.steps if s.kind == "flag_ramp"]
    assert [(s.flag_key, int(s.flag_percentage)) for s in ramps] == [
        ("new-login", 5),
        ("new-login", 25),
        ("new-login", 100),
    ]
    assert ramps[1].depends_on == ("login-5",) and ramps[2].depends_on == ("login-25",)
    assert {s.kind for s in spec.steps} >= {"expand", "migrate", "contract", "deploy", "manual"}
    assert len({s.owner for s in spec.steps}) >= 3
    for step in spec.steps:
        assert step.pass_condition and step.fail_condition and step.on_fail, step.key
        assert step.rollback_command and step.runbook.startswith("https://"), step.key


def test_plan_spec_errors__many_problems__every_one_with_path_and_line():
    text = """\
apiVersion: stepwise/v2
kind: Plan
metadata: {key: not a slug, name: ""}
spec:
  owner: platform
  teams: [web, web]
  steps:
  - key: app
    title: App
    owner: web
    kind: flag_ramp
    depend_on: [db]
    depends_on: [db, app-deply]
    verification: {pass: x < 1, fail: x > 2, on_fail: set_flag_percentage, measurements: {x: {metric: m, aggregation: avg}}}
  - key: db
    title: DB
    owner: data
    kind: deploy
    depends_on: [app]
    flag: {key: f, percentage: 140.555}
    revert: {runbook: not-a-url}
    verification: {pass: x, fail: y, on_fail: restore_previous_flag, on_fail_percentage: 3}
  - key: app
    title: App again
    owner: web
    kind: rollout
"""
    assert _messages(text) == [
        "apiVersion: must be 'stepwise/v1' (got 'stepwise/v2') (line 1)",
        "metadata.key: must be a slug: letters, digits, '-' and '_' only (got 'not a slug') (line 3)",
        "metadata.name: must not be empty (line 3)",
        'spec.teams: lists "web" more than once (line 6)',
        "spec.steps[0]: missing required field 'flag': flag_ramp steps name the flag and the "
        "percentage they take it to (line 8)",
        "spec.steps[0].depend_on: unknown field 'depend_on' (did you mean 'depends_on'?) (line 12)",
        "spec.steps[0].depends_on[0]: cycle: app -> db -> app (line 13)",
        "spec.steps[0].depends_on[1]: unknown step 'app-deply' (line 13)",
        "spec.steps[0].verification: missing required field 'on_fail_percentage': on_fail "
        "set_flag_percentage needs the percentage to set (line 14)",
        "spec.steps[1]: missing required field 'service': deploy steps name the service they ship (line 15)",
        "spec.steps[1].flag: only flag_ramp steps take a flag (this step is deploy) (line 20)",
        "spec.steps[1].flag.percentage: must be from 0 to 100 (got 140.555) (line 20)",
        "spec.steps[1].flag.percentage: at most two decimals (got 140.555) (line 20)",
        "spec.steps[1].revert.runbook: must be an http(s) URL (got 'not-a-url') (line 21)",
        "spec.steps[1].verification.measurements: declare the measurements the conditions "
        "read (name: query) (line 22)",
        "spec.steps[1].verification.on_fail: restore_previous_flag acts on the step's flag, and "
        "only flag_ramp steps have one (line 22)",
        "spec.steps[1].verification.on_fail_percentage: only used with on_fail: "
        "set_flag_percentage (line 22)",
        "spec.steps[2].key: duplicate step key 'app' (first declared at spec.steps[0], line 8) (line 23)",
        "spec.steps[2].kind: must be one of flag_ramp, deploy, manual, expand, migrate, contract, "
        "probe (got 'rollout') (line 26)",
    ]


def test_plan_spec_errors__three_step_cycle__named_in_order():
    text = plan_yaml(
        step_doc("a", depends_on=["c"]),
        step_doc("b", depends_on=["a"]),
        step_doc("c", depends_on=["b"]),
    )
    assert [m.split(" (line")[0] for m in _messages(text)] == [
        "spec.steps[0].depends_on[0]: cycle: a -> c -> b -> a"
    ]


def test_plan_spec_errors__misspelt_dependency__suggests_the_step():
    text = plan_yaml(step_doc("app-deploy"), step_doc("gateway", depends_on=["app-deply"]))
    assert _messages(text) == [
        "spec.steps[1].depends_on[0]: unknown step 'app-deply' (did you mean 'app-deploy'?) (line 38)"
    ]


def test_plan_spec_errors__step_depends_on_itself__cycle_of_one():
    assert "cycle: solo -> solo" in _messages(plan_yaml(step_doc("solo", depends_on=["solo"])))[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- a\n- b\n", "must be a mapping, not a list (line 1)"),
        ("apiVersion: [stepwise\nkind: Plan\n", "not valid YAML: expected ',' or ']'"),
        ("a: 1\n---\nb: 2\n", "expected a single document"),
        ("kind: Plan\nkind: Plan\n", "kind: field given twice (line 2)"),
        (
            "x: !!python/object/apply:os.system ['true']\n",
            "x: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' (line 1)",
        ),
        ("\tapiVersion: x\n", "not valid YAML"),
    ],
)
def test_plan_spec_errors__not_a_plan__a_readable_error_not_an_exception(text, expected):
    messages = _messages(text)
    assert any(expected in m for m in messages), messages


def test_plan_spec_errors__alias_bomb__refused_quickly():
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    started = time.monotonic()
    messages = _messages("\n".join(lines) + "\n")
    assert time.monotonic() - started < 5
    assert messages == ["the document expands to more than 50000 values"]


def test_plan_spec_errors__lockstep_members_depend_on_each_other__refused():
    text = plan_yaml(
        step_doc("expand", lockstep="schema"),
        step_doc("middle", depends_on=["expand"]),
        step_doc("migrate", depends_on=["middle"], lockstep="schema"),
    )
    assert [m.split(" (line")[0] for m in _messages(text)] == [
        "spec.steps[2].lockstep: 'migrate' and 'expand' share lockstep group 'schema' but "
        "'migrate' depends on 'expand'; steps of a group advance together"
    ]


def test_plan_spec_errors__flag_step_on_fail_percentage_out_of_range__reported():
    ramp = step_doc(
        "ramp",
        kind="flag_ramp",
        flag={"key": "new-login"},
        verification={
            "pass": "login_errors < 0.01",
            "fail": "login_errors > 0.02",
            "on_fail": "set_flag_percentage",
            "on_fail_percentage": -1,
            "measurements": {"login_errors": {"metric": "login_error_ratio", "aggregation": "avg"}},
        },
    )
    assert _messages(plan_yaml(ramp)) == [
        "spec.steps[0].verification.on_fail_percentage: must be from 0 to 100 (got -1) (line 26)",
        "spec.steps[0].flag: missing required field 'percentage' (line 32)",
    ]


def test_plan_spec_parse__step_without_verification__valid_with_a_warning():
    spec = plan_spec_parse(plan_yaml(step_doc("a", verification=None)))
    assert spec.warnings == ("step 'a' has no verification: it cannot start until one is declared",)


def test_plan_spec_parse__unknown_targets__accepted():
    spec = plan_spec_parse(plan_yaml(step_doc("a", targets=["mars-north"])))
    assert spec.steps[0].targets == ("mars-north",)


def test_plan_spec_parse__invalid__raises_with_the_errors():
    with pytest.raises(PlanSpecInvalid) as info:
        plan_spec_parse(plan_yaml(step_doc("a", kind="nope")))
    assert len(info.value.errors) == 1 and "spec.steps[0].kind" in str(info.value)


def test_plan_spec_dump__parse_of_dump__same_spec_and_digest():
    spec = plan_spec_parse(example_text())
    again = plan_spec_parse(plan_spec_dump(spec))
    assert again == spec and again.digest() == spec.digest()


def test_plan_spec_digest__formatting_and_list_order__same_digest_but_content_differs():
    base = plan_doc(step_doc("a", targets=["eu-west", "us-east"]))
    reordered = plan_doc(step_doc("a", targets=["us-east", "eu-west"]))
    retitled = plan_doc(step_doc("a", title="Other", targets=["eu-west", "us-east"]))
    digest = plan_spec_parse(json.dumps(base)).digest()  # JSON is YAML too
    assert plan_spec_parse(json.dumps(reordered)).digest() == digest
    assert plan_spec_parse(json.dumps(retitled)).digest() != digest


def test_plan_schema__docs_file__matches_the_code_and_is_a_valid_schema():
    on_disk = json.loads((DOCS / "plan.schema.json").read_text())
    assert on_disk == PLAN_SCHEMA
    Draft202012Validator.check_schema(on_disk)
    import yaml

    assert not list(Draft202012Validator(on_disk).iter_errors(yaml.safe_load(example_text())))
