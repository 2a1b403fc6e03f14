"""Pass and fail conditions: CEL expressions over named measurements, checked when saved.

Every measurement is a double, so the checker knows each identifier's type and can refuse a
condition before it is ever run. Integer literals are read as doubles (`mismatches == 0` means
`mismatches == 0.0`): strict CEL has no `double == int` overload, and a condition that can only
fail at evaluation time is the kind of surprise a pre-committed verdict must not have.
"""

import math
from dataclasses import dataclass
from typing import Any

import celpy
import lark
from celpy import celtypes

BASELINE = "baseline"
_NUMERIC_LITERALS = {"INT_LIT", "UINT_LIT", "FLOAT_LIT"}
_LITERAL_TYPES = {
    "STRING_LIT": "string",
    "MLSTRING_LIT": "string",
    "BYTES_LIT": "bytes",
    "BOOL_LIT": "bool",
    "NULL_LIT": "null",
}
_ORDERING = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
}
_EQUALITY = {"relation_eq": "==", "relation_ne": "!="}
_ARITHMETIC = {
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
}
_UNSUPPORTED = {
    "relation_in": "'in' is not allowed in a condition",
    "multiplication_mod": "'%' is not allowed: measurements are doubles, and CEL has no double modulo",
    "member_dot_arg": "method calls are not allowed in a condition",
    "ident_arg": "function calls are not allowed in a condition",
    "dot_ident_arg": "function calls are not allowed in a condition",
    "dot_ident": "leading-dot names are not allowed in a condition",
    "member_index": "indexing is not allowed in a condition",
    "member_object": "message construction is not allowed in a condition",
    "list_lit": "lists are not allowed in a condition",
    "map_lit": "maps are not allowed in a condition",
}
_ENVIRONMENT = celpy.Environment()


class ConditionInvalid(ValueError):
    """A condition that cannot be saved; the message names the problem and where it is."""

    def __init__(self, problem: str, *, line: int | None = None, column: int | None = None):
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{where}{problem}")
        self.problem, self.line, self.column = problem, line, column


class ConditionEvaluationError(ValueError):
    """A condition could not be evaluated (a missing or non-finite value): never a pass."""


@dataclass(frozen=True)
class CompiledCondition:
    text: str
    measurements: frozenset[str]  # names the condition reads on the canary
    baseline: frozenset[str]  # names it reads as baseline.<name>
    program: Any  # celpy Runner

    def __str__(self) -> str:
        return self.text


def _position(node: lark.Tree | lark.Token) -> tuple[int | None, int | None]:
    if isinstance(node, lark.Token):
        return node.line, node.column
    meta = node.meta
    return (meta.line, meta.column) if not meta.empty else (None, None)


def _syntax_error(text: str, exc: celpy.CELParseError) -> ConditionInvalid:
    cause = exc.__context__
    if isinstance(cause, lark.exceptions.UnexpectedToken):
        if cause.token.type == "$END":
            lines = text.splitlines() or [""]
            return ConditionInvalid(
                "syntax error: the expression ends too early",
                line=len(lines),
                column=len(lines[-1]) + 1,
            )
        return ConditionInvalid(
            f"syntax error: unexpected {cause.token.value!r}", line=cause.line, column=cause.column
        )
    if isinstance(cause, lark.exceptions.UnexpectedCharacters):
        return ConditionInvalid(
            f"syntax error: unexpected character {cause.char!r}",
            line=cause.line,
            column=cause.column,
        )
    return ConditionInvalid(f"syntax error: {exc.args[0]}", line=exc.line, column=exc.column)


class _Checker:
    """Infers the type of every node: 'double', 'bool', 'string', 'bytes' or 'null'."""

    def __init__(self, measurements: set[str]) -> None:
        self.known = measurements
        self.used: set[str] = set()
        self.used_baseline: set[str] = set()

    def _known_list(self) -> str:
        names = sorted(self.known)
        return (
            f"known: {', '.join(names)} (and baseline.<name> for each)"
            if names
            else "no measurements are declared"
        )

    def _fail(self, node: lark.Tree | lark.Token, problem: str) -> ConditionInvalid:
        line, column = _position(node)
        return ConditionInvalid(problem, line=line, column=column)

    def _operator_fail(
        self, operator_node: lark.Tree, symbol: str, problem: str
    ) -> ConditionInvalid:
        # The parser drops operator tokens; the operator node ends just after its symbol.
        meta = operator_node.meta
        if meta.empty:
            return ConditionInvalid(problem)
        return ConditionInvalid(problem, line=meta.end_line, column=meta.end_column - len(symbol))

    def type_of(self, node: lark.Tree) -> str:
        rule = node.data
        kids = node.children
        if rule in _UNSUPPORTED:
            raise self._fail(node, _UNSUPPORTED[rule])
        if rule == "expr":
            if len(kids) == 1:
                return self.type_of(kids[0])
            cond, then, otherwise = (self.type_of(k) for k in kids)
            if cond != "bool":
                raise self._fail(kids[0], f"the condition of '?' must be bool, not {cond}")
            if then != otherwise:
                raise self._fail(node, f"the branches of '?' differ: {then} and {otherwise}")
            return then
        if rule in ("conditionalor", "conditionaland"):
            if len(kids) == 1:
                return self.type_of(kids[0])
            op = "||" if rule == "conditionalor" else "&&"
            for kid in kids:
                found = self.type_of(kid)
                if found != "bool":
                    raise self._fail(kid, f"'{op}' needs bool on both sides, not {found}")
            return "bool"
        if rule in ("relation", "addition", "multiplication"):
            if len(kids) == 1:
                return self.type_of(kids[0])
            operator_node, right = kids
            op_rule = operator_node.data
            if op_rule in _UNSUPPORTED:
                symbol = "in" if op_rule == "relation_in" else "%"
                raise self._operator_fail(operator_node, symbol, _UNSUPPORTED[op_rule])
            left_type = self.type_of(operator_node.children[0])
            right_type = self.type_of(right)
            if op_rule in _EQUALITY:
                if left_type != right_type:
                    raise self._operator_fail(
                        operator_node,
                        _EQUALITY[op_rule],
                        f"'{_EQUALITY[op_rule]}' compares {left_type} with {right_type}",
                    )
                return "bool"
            symbol = _ORDERING.get(op_rule) or _ARITHMETIC[op_rule]
            if left_type != "double" or right_type != "double":
                raise self._operator_fail(
                    operator_node,
                    symbol,
                    f"'{symbol}' needs numbers on both sides, not {left_type} and {right_type}",
                )
            return "bool" if op_rule in _ORDERING else "double"
        if rule == "unary":
            if len(kids) == 1:
                return self.type_of(kids[0])
            operator_node, operand = kids
            found = self.type_of(operand)
            wanted = "bool" if operator_node.data == "unary_not" else "double"
            if found != wanted:
                symbol = "!" if wanted == "bool" else "-"
                raise self._fail(node, f"'{symbol}' needs {wanted}, not {found}")
            return wanted
        if rule in ("member", "primary", "paren_expr"):
            return self.type_of(kids[0])
        if rule == "member_dot":
            target, field = kids
            owner = self._ident_name(target)
            if owner is not None and owner != BASELINE and owner not in self.known:
                raise self._fail(
                    node, f"unknown measurement '{owner}.{field}'; {self._known_list()}"
                )
            if owner != BASELINE:
                raise self._fail(node, f"'.{field}' is only allowed after 'baseline'")
            if field not in self.known:
                raise self._fail(
                    field, f"unknown measurement 'baseline.{field}'; {self._known_list()}"
                )
            self.used_baseline.add(str(field))
            return "double"
        if rule == "ident":
            name = str(kids[0])
            if name == BASELINE:
                raise self._fail(node, "'baseline' must be followed by .<measurement>")
            if name not in self.known:
                raise self._fail(node, f"unknown measurement '{name}'; {self._known_list()}")
            self.used.add(name)
            return "double"
        if rule == "literal":
            token = kids[0]
            if token.type in _NUMERIC_LITERALS:
                kids[0] = _as_double_literal(token)
                return "double"
            return _LITERAL_TYPES[token.type]
        raise self._fail(node, f"'{rule}' is not allowed in a condition")  # pragma: no cover

    @staticmethod
    def _ident_name(node: lark.Tree) -> str | None:
        while isinstance(node, lark.Tree) and node.data in ("member", "primary"):
            node = node.children[0]
        if isinstance(node, lark.Tree) and node.data == "ident":
            return str(node.children[0])
        return None


def _as_double_literal(token: lark.Token) -> lark.Token:
    raw = token.value.rstrip("uU")
    number = float(raw) if token.type == "FLOAT_LIT" else float(int(raw, 0))
    return token.update(type="FLOAT_LIT", value=repr(number))


def condition_compile(*, text: str, measurements: set[str]) -> CompiledCondition:
    """Parse and type-check a condition; ConditionInvalid names the problem and its position."""
    if not text.strip():
        raise ConditionInvalid("the condition is empty")
    try:
        tree = _ENVIRONMENT.compile(text)
    except celpy.CELParseError as exc:
        raise _syntax_error(text, exc) from None
    checker = _Checker(set(measurements))
    result = checker.type_of(tree)
    if result != "bool":
        line, column = _position(tree)
        raise ConditionInvalid(
            f"the condition must be true or false, but it gives a {result}",
            line=line,
            column=column,
        )
    return CompiledCondition(
        text=text,
        measurements=frozenset(checker.used),
        baseline=frozenset(checker.used_baseline),
        program=_ENVIRONMENT.program(tree),
    )


def _checked(values: dict[str, float], names: frozenset[str], prefix: str) -> dict[str, float]:
    missing = sorted(f"{prefix}{n}" for n in names if values.get(n) is None)
    if missing:
        raise ConditionEvaluationError(f"no value for {', '.join(missing)}")
    for name in sorted(names):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConditionEvaluationError(f"{prefix}{name} is not a number: {value!r}")
        if not math.isfinite(value):
            raise ConditionEvaluationError(f"{prefix}{name} is {value}, not a finite number")
    return {name: float(values[name]) for name in names}


def condition_evaluate(
    compiled: CompiledCondition, values: dict[str, float], baseline: dict[str, float] | None = None
) -> bool:
    """True or false; ConditionEvaluationError when a value the condition reads is missing or
    not finite, so a broken measurement can never count as a pass."""
    canary = _checked(values, compiled.measurements, "")
    base = _checked(baseline or {}, compiled.baseline, "baseline.")
    activation = {name: celtypes.DoubleType(v) for name, v in canary.items()}
    activation[BASELINE] = celtypes.MapType(
        {celtypes.StringType(name): celtypes.DoubleType(v) for name, v in base.items()}
    )
    try:
        result = compiled.program.evaluate(activation)
    except celpy.CELEvalError as exc:
        raise ConditionEvaluationError(f"{compiled.text!r} failed: {exc.args[0]}") from None
    if isinstance(result, celpy.CELEvalError):
        raise ConditionEvaluationError(f"{compiled.text!r} failed: {result.args[0]}")
    if not isinstance(result, celtypes.BoolType):  # the checker makes this unreachable
        raise ConditionEvaluationError(f"{compiled.text!r} gave {result!r}, not true or false")
    return bool(result)
