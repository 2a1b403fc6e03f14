import math

import pytest

from signals.conditions import (
    ConditionEvaluationError,
    ConditionInvalid,
    condition_compile,
    condition_evaluate,
)

MEASUREMENTS = {"hit_rate", "p99", "mismatches"}
PASS = "hit_rate > 0.9 && p99 <= baseline.p99 * 1.05 && mismatches == 0"
FAIL = "mismatches > 0 || p99 > baseline.p99 * 1.05"


def compile_(text: str):
    return condition_compile(text=text, measurements=MEASUREMENTS)


def refusal(text: str) -> ConditionInvalid:
    with pytest.raises(ConditionInvalid) as caught:
        compile_(text)
    return caught.value


@pytest.mark.parametrize(
    ("values", "baseline", "passes", "fails"),
    [
        ({"hit_rate": 0.95, "p99": 100.0, "mismatches": 0.0}, {"p99": 100.0}, True, False),
        ({"hit_rate": 0.95, "p99": 110.0, "mismatches": 0.0}, {"p99": 100.0}, False, True),
        ({"hit_rate": 0.95, "p99": 100.0, "mismatches": 1.0}, {"p99": 100.0}, False, True),
        ({"hit_rate": 0.5, "p99": 100.0, "mismatches": 0.0}, {"p99": 100.0}, False, False),
    ],
)
def test_condition_evaluate__issue_examples__verdicts(values, baseline, passes, fails):
    assert condition_evaluate(compile_(PASS), values, baseline) is passes
    assert condition_evaluate(compile_(FAIL), values, baseline) is fails


def test_condition_compile__valid__records_what_it_reads():
    compiled = compile_(PASS)
    assert compiled.measurements == {"hit_rate", "p99", "mismatches"}
    assert compiled.baseline == {"p99"}
    assert str(compiled) == PASS


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("mismatches == 0", {"mismatches": 0}, True),  # an int literal meets a double
        ("mismatches == 0x0", {"mismatches": 0.0}, True),
        ("p99 / 0 > 1", {"p99": 1.0}, True),  # double division: +Inf, not an error
        ("!(p99 > 1) && -p99 < 0", {"p99": 0.5}, True),
        ("p99 > 1 ? hit_rate > 0.9 : true", {"p99": 2.0, "hit_rate": 0.5}, False),
        ("p99 - 1 >= 0 // comment", {"p99": 1.0}, True),
        ("p99 != 2.5 || false", {"p99": 2.5}, False),
    ],
)
def test_condition_evaluate__numbers_and_operators__cel_semantics(text, values, expected):
    assert condition_evaluate(compile_(text), values, {}) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hit_rate >", "line 1, column 11: syntax error: the expression ends too early"),
        ("hit_rate > > 1", "line 1, column 12: syntax error: unexpected '>'"),
        (
            "p99 > 1 &&\n  (hit_rate > 0.9",
            "line 2, column 18: syntax error: the expression ends too early",
        ),
        ("p99 $ 1", "line 1, column 5: syntax error: unexpected character '$'"),
        ("p99 >\n  1 ) ", "line 2, column 5: syntax error: unexpected ')'"),
    ],
)
def test_condition_compile__syntax_error__message_names_line_and_column(text, message):
    error = refusal(text)
    assert str(error) == message
    assert (error.line, error.column) == tuple(
        int(x) for x in message.split(":")[0][5:].split(", column ")
    )


@pytest.mark.parametrize(
    ("text", "name", "column"),
    [
        ("hit_rat > 0.9", "'hit_rat'", 1),
        ("p99 <= baseline.p98 * 1.05", "'baseline.p98'", 17),
        ("latency.p99 > 1", "'latency.p99'", 1),
    ],
)
def test_condition_compile__unknown_measurement__named_with_position_and_known_names(
    text, name, column
):
    error = refusal(text)
    assert str(error) == (
        f"line 1, column {column}: unknown measurement {name}; "
        "known: hit_rate, mismatches, p99 (and baseline.<name> for each)"
    )


def test_condition_compile__no_measurements_declared__says_so():
    with pytest.raises(
        ConditionInvalid, match="unknown measurement 'p99'; no measurements are declared"
    ):
        condition_compile(text="p99 > 1", measurements=set())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "p99 * 1.05",
            "line 1, column 1: the condition must be true or false, but it gives a double",
        ),
        (
            "p99 > 1 ? 1 : 0",
            "line 1, column 1: the condition must be true or false, but it gives a double",
        ),
        ("'yes'", "line 1, column 1: the condition must be true or false, but it gives a string"),
    ],
)
def test_condition_compile__non_boolean_result__refused(text, message):
    assert str(refusal(text)) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "p99 > 'fast'",
            "line 1, column 5: '>' needs numbers on both sides, not double and string",
        ),
        ("hit_rate == true", "line 1, column 10: '==' compares double with bool"),
        ("p99 && true", "line 1, column 1: '&&' needs bool on both sides, not double"),
        ("!p99", "line 1, column 1: '!' needs bool, not double"),
        ("-(p99 > 1)", "line 1, column 1: '-' needs double, not bool"),
        ("(p99 > 1 ? 1 : false)", "line 1, column 2: the branches of '?' differ: double and bool"),
        ("p99 ? true : false", "line 1, column 1: the condition of '?' must be bool, not double"),
        (
            "p99 % 2 == 0",
            "line 1, column 5: '%' is not allowed: measurements are doubles, and CEL has no double modulo",
        ),
        ("p99 in [1]", "line 1, column 5: 'in' is not allowed in a condition"),
        ("size(p99) > 1", "line 1, column 1: function calls are not allowed in a condition"),
        ("p99.exists(x, x > 1)", "line 1, column 1: method calls are not allowed in a condition"),
        ("baseline['p99'] > 1", "line 1, column 1: indexing is not allowed in a condition"),
        ("baseline > 1", "line 1, column 1: 'baseline' must be followed by .<measurement>"),
        ("p99.max > 1", "line 1, column 1: '.max' is only allowed after 'baseline'"),
        ("   ", "the condition is empty"),
    ],
)
def test_condition_compile__ill_typed_or_unsupported__refused_with_position(text, message):
    assert str(refusal(text)) == message


@pytest.mark.parametrize(
    ("values", "baseline", "message"),
    [
        ({"hit_rate": 0.95, "mismatches": 0.0}, {"p99": 1.0}, "no value for p99"),
        ({"hit_rate": 0.95, "p99": 1.0, "mismatches": 0.0}, {}, "no value for baseline.p99"),
        ({"hit_rate": None, "p99": 1.0, "mismatches": 0.0}, {"p99": 1.0}, "no value for hit_rate"),
        (
            {"hit_rate": math.nan, "p99": 1.0, "mismatches": 0.0},
            {"p99": 1.0},
            "hit_rate is nan, not a finite number",
        ),
        (
            {"hit_rate": 0.9, "p99": 1.0, "mismatches": 0.0},
            {"p99": math.inf},
            "baseline.p99 is inf, not a finite number",
        ),
        (
            {"hit_rate": "0.9", "p99": 1.0, "mismatches": 0.0},
            {"p99": 1.0},
            "hit_rate is not a number: '0.9'",
        ),
    ],
)
def test_condition_evaluate__missing_or_broken_value__error_never_a_verdict(
    values, baseline, message
):
    with pytest.raises(ConditionEvaluationError, match=message):
        condition_evaluate(compile_(PASS), values, baseline)


def test_condition_evaluate__short_circuit_branch_value_missing__still_an_error():
    # An error is never a pass: every value a condition reads must be there, even if unused.
    compiled = compile_("p99 > 1 || hit_rate > 0.9")
    with pytest.raises(ConditionEvaluationError, match="no value for hit_rate"):
        condition_evaluate(compiled, {"p99": 2.0}, {})


def test_condition_compile__python_code__not_executed():
    for text in ("__import__('os').system('true')", "exec('1') == 1"):
        with pytest.raises(ConditionInvalid):
            compile_(text)
