import contextlib
import random
from types import SimpleNamespace

import pytest

from rollouts.evaluation import (
    BUCKETS,
    DEFAULT,
    DISABLED,
    INVALID_CONTEXT,
    SPLIT,
    STATIC,
    TARGETING_KEY_MISSING,
    TARGETING_MATCH,
    EvaluationError,
    bucket_of,
    config_compile,
    context_validate,
    flag_compile,
    flag_evaluate,
)

KEYS = [f"user-{i}" for i in range(10_000)]


def _flag(key: str = "new-checkout", **settings):
    base = {
        "enabled": True,
        "rollout_percentage": 100,
        "variants": {"on": True, "off": False},
        "on_variant": "on",
        "off_variant": "off",
        "rules": [],
    }
    return flag_compile(key=key, version=3, settings={**base, **settings})


def _inside(flag, keys=KEYS) -> set[str]:
    return {
        k for k in keys if flag_evaluate(flag=flag, context={"targetingKey": k}).variant == "on"
    }


def test_flag_evaluate__disabled__off_variant_with_reason_disabled_even_with_matching_rule():
    flag = _flag(
        enabled=False,
        rules=[{"attribute": "country", "op": "in", "values": ["NL"], "variant": "on"}],
    )
    result = flag_evaluate(flag=flag, context={"country": "NL"})
    assert (result.value, result.variant, result.reason, result.version) == (
        False,
        "off",
        DISABLED,
        3,
    )


def test_flag_evaluate__percentage_grows__every_key_inside_stays_inside():
    previous: set[str] = set()
    for pct in (0.01, 1, 5, 10, 25, 33.33, 50, 75, 99.99):
        inside = _inside(_flag(rollout_percentage=pct))
        assert previous <= inside, f"keys left the rollout when it grew to {pct}%"
        previous = inside
    assert len(previous) > 9_900


@pytest.mark.parametrize("pct", [1, 10, 25.5, 50, 90])
def test_flag_evaluate__10000_keys__share_inside_within_tolerance(pct):
    share = len(_inside(_flag(rollout_percentage=pct))) / len(KEYS) * 100
    # Binomial standard deviation at n=10,000 is at most 0.5 points; 2 points is > 4 sigma.
    assert abs(share - pct) < 2, f"{share:.2f}% inside for a {pct}% rollout"


def test_flag_evaluate__two_flags_same_percentage__bucket_independently():
    a = _inside(_flag("flag-a", rollout_percentage=50))
    b = _inside(_flag("flag-b", rollout_percentage=50))
    overlap = len(a & b) / len(KEYS)
    assert 0.22 < overlap < 0.28  # independent halves overlap about a quarter


def test_bucket_of__same_inputs__same_bucket_across_calls_and_in_range():
    buckets = [bucket_of(flag_key="f", targeting_key=k) for k in KEYS[:500]]
    assert buckets == [bucket_of(flag_key="f", targeting_key=k) for k in KEYS[:500]]
    assert all(0 <= b < BUCKETS for b in buckets)
    # Pinned: a stable hash, not the per-process salted hash(); changing it reshuffles users.
    assert bucket_of(flag_key="new-checkout", targeting_key="u1") == 9384


def test_flag_evaluate__split__reason_split_inside_and_outside():
    flag = _flag(rollout_percentage=50)
    reasons = {flag_evaluate(flag=flag, context={"targetingKey": k}).reason for k in KEYS[:100]}
    variants = {flag_evaluate(flag=flag, context={"targetingKey": k}).variant for k in KEYS[:100]}
    assert reasons == {SPLIT}
    assert variants == {"on", "off"}


@pytest.mark.parametrize(("pct", "variant"), [(100, "on"), (0, "off")])
def test_flag_evaluate__0_or_100_without_rules__static_and_no_key_needed(pct, variant):
    result = flag_evaluate(flag=_flag(rollout_percentage=pct), context={})
    assert (result.variant, result.reason) == (variant, STATIC)


def test_flag_evaluate__rules_none_match_at_100__default_reason():
    flag = _flag(rules=[{"attribute": "country", "op": "eq", "values": ["NL"], "variant": "off"}])
    assert flag_evaluate(flag=flag, context={"country": "DE"}).reason == DEFAULT


def test_flag_evaluate__split_without_targeting_key__targeting_key_missing():
    with pytest.raises(EvaluationError) as exc:
        flag_evaluate(flag=_flag(rollout_percentage=30), context={"country": "NL"})
    assert exc.value.code == TARGETING_KEY_MISSING
    assert "targetingKey" in exc.value.details


def test_flag_evaluate__rule_matches__its_variant_before_the_split_and_without_key():
    flag = _flag(
        rollout_percentage=0,
        variants={"on": "blue", "off": "grey", "beta": "green"},
        rules=[
            {
                "attribute": "email",
                "op": "ends_with",
                "values": ["@corp.example"],
                "variant": "beta",
            },
            {"attribute": "country", "op": "in", "values": ["NL", "BE"], "variant": "on"},
        ],
    )
    first = flag_evaluate(flag=flag, context={"email": "a@corp.example", "country": "NL"})
    second = flag_evaluate(flag=flag, context={"country": "BE"})
    assert (first.value, first.variant, first.reason) == ("green", "beta", TARGETING_MATCH)
    assert (second.value, second.reason) == ("blue", TARGETING_MATCH)


@pytest.mark.parametrize(
    ("op", "values", "actual", "matches"),
    [
        ("in", ["NL"], "NL", True),
        ("in", ["NL"], "DE", False),
        ("not_in", ["NL"], "DE", True),
        ("not_in", ["NL"], "NL", False),
        ("eq", ["pro"], "pro", True),
        ("neq", ["pro"], "free", True),
        ("neq", ["pro"], "pro", False),
        ("starts_with", ["10."], "10.1.2.3", True),
        ("ends_with", [".nl"], "x.de", False),
        ("gt", [30], 31, True),
        ("gt", [30], "31", True),
        ("gt", [30], 30, False),
        ("lt", [30], "not a number", False),
        ("eq", [True], 1, False),
        ("in", [1], True, False),
        ("eq", ["x"], {"nested": 1}, False),
    ],
)
def test_rule__each_op__matches_only_what_it_says(op, values, actual, matches):
    flag = _flag(
        rollout_percentage=0,
        rules=[{"attribute": "a", "op": op, "values": values, "variant": "on"}],
    )
    result = flag_evaluate(flag=flag, context={"a": actual})
    assert (result.reason == TARGETING_MATCH) is matches


def test_rule__attribute_absent__even_not_in_does_not_match():
    flag = _flag(
        rollout_percentage=0,
        rules=[{"attribute": "country", "op": "not_in", "values": ["NL"], "variant": "on"}],
    )
    assert flag_evaluate(flag=flag, context={}).variant == "off"


def test_context_validate__not_an_object_or_key_not_a_string__invalid_context():
    for bad in (["u1"], "u1", {"targetingKey": 42}):
        with pytest.raises(EvaluationError) as exc:
            context_validate(bad)
        assert exc.value.code == INVALID_CONTEXT
    assert context_validate(None) == {}


def test_config_compile__versions__keyed_by_flag_key_with_numbers():
    def version(key, number, pct):
        return SimpleNamespace(
            flag=SimpleNamespace(key=key),
            number=number,
            settings_dict=lambda: {
                "enabled": True,
                "rollout_percentage": pct,
                "variants": {"on": 1, "off": 0},
            },
        )

    config = config_compile(revision=9, versions=[version("b", 2, 12.34), version("a", 5, 100)])
    assert config.revision == 9
    assert list(config.flags) == ["a", "b"]
    assert (config.flags["b"].version, config.flags["b"].rollout_bp) == (2, 1234)


def test_flag_evaluate__random_contexts__never_raise_anything_but_evaluation_error():
    rng = random.Random(7)
    flag = _flag(
        rollout_percentage=40,
        rules=[{"attribute": "n", "op": "gt", "values": ["5"], "variant": "on"}],
    )
    junk = [None, 1, 1.5, "x", [], {}, True, "", "9"]
    for _ in range(2000):
        context = {rng.choice(["n", "targetingKey", "z"]): rng.choice(junk) for _ in range(2)}
        with contextlib.suppress(EvaluationError):
            flag_evaluate(flag=flag, context=context_validate(context))
