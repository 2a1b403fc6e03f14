"""Plans as code: the YAML plan format, its JSON Schema, validation that names every problem with
its path and line, and export of a stored plan back to the same format.

Pure functions over text and model instances; writing a plan is `rollouts.services.plan_apply`.
"""

import difflib
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from jsonschema import Draft202012Validator
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from core.text import percent_text, text_problem
from rollouts.graph import find_cycle
from rollouts.models import Plan, Step
from rollouts.verification_spec import (
    ANALYSIS_FIELDS,
    analysis_document,
    analysis_parse,
    convergence_parse,
    verification_parse,
)

API_VERSION = "stepwise/v1"
KIND = "Plan"
# Big enough for any real plan; small enough that a pasted log file is refused before parsing.
MAX_TEXT_CHARS = 512_000
# Aliases can expand a small file into a huge tree ("billion laughs"); count what we build.
MAX_NODES = 50_000

_SLUG_PATTERN = "^[-a-zA-Z0-9_]+$"


def _slug(max_length: int, description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": _SLUG_PATTERN,
        "minLength": 1,
        "maxLength": max_length,
        "description": description,
    }


def _text(max_length: int | None, description: str, *, min_length: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description}
    if min_length:
        schema["minLength"] = min_length
    if max_length:
        schema["maxLength"] = max_length
    return schema


def _percentage(description: str) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": 100, "description": description}


_STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One step: a change with a pre-committed verdict and a pre-declared revert.",
    "required": ["key", "title", "owner", "kind"],
    "additionalProperties": False,
    "properties": {
        "key": _slug(
            80, "Identifier of the step, unique within the plan; other steps name it in depends_on."
        ),
        "title": _text(200, "What the step does, in a few words.", min_length=1),
        "owner": _text(80, "Owning team.", min_length=1),
        "kind": {
            "enum": list(Step.Kind.values),
            "description": "flag_ramp moves a flag to a percentage; deploy ships a service; manual is done "
            "by a person; expand / migrate / contract are the phases of a schema change; probe checks an assumption.",
        },
        "targets": {
            "type": "array",
            "items": _slug(
                60, "A region or environment; unknown targets are created (as regions)."
            ),
            "uniqueItems": True,
            "description": "Where the step must converge, one convergence check per target.",
        },
        "depends_on": {
            "type": "array",
            "items": {"type": "string", "description": "Key of another step in this plan."},
            "uniqueItems": True,
            "description": "Steps that must have converged before this one may start.",
        },
        "lockstep": {
            "type": "string",
            "pattern": "^[-a-zA-Z0-9_]*$",
            "maxLength": 60,
            "description": "Lockstep group: steps sharing a group advance together. Empty for none.",
        },
        "service": _text(80, "The service a deploy step ships (required for deploy steps)."),
        "flag": {
            "type": "object",
            "description": "For flag_ramp steps: the flag and the percentage the step takes it to.",
            "required": ["key", "percentage"],
            "additionalProperties": False,
            "properties": {
                "key": _slug(100, "Flag key; a flag that does not exist yet is created, off."),
                "percentage": _percentage(
                    "Rollout percentage the step sets, 0 to 100, at most two decimals."
                ),
            },
        },
        "revert": {
            "type": "object",
            "description": "The revert breadcrumb: how to undo the step by hand.",
            "additionalProperties": False,
            "properties": {
                "rollback_command": _text(300, "Command that undoes the step."),
                "runbook": _text(200, "URL of the runbook (http or https)."),
            },
        },
        "budget_gate": {
            "type": "object",
            "description": "Error budget gate: the step starts only while the SLO has more "
            "than min_remaining of its error budget left (an SLO without data does not hold it). "
            "Starting it anyway takes a recorded decision.",
            "required": ["slo", "min_remaining"],
            "additionalProperties": False,
            "properties": {
                "slo": _slug(63, "Name of the SLO whose error budget the step needs."),
                "min_remaining": {
                    "type": ["string", "number"],
                    "description": 'Share of the budget that must be left, strictly more: "25%" '
                    "or 25, from 0 to 100, at most two decimals.",
                },
            },
        },
        "convergence": {
            "type": "object",
            "description": "Per-target convergence predicate for a non-flag step: a measurement "
            "whose matchers or query may use {target}, and a condition over `value`, e.g. "
            "value >= 42. The step converges in a target when the condition holds there.",
        },
        "verification": {
            "type": "object",
            "description": "The verdict, declared before the step runs. A step without one cannot start.",
            "required": ["pass", "fail", "on_fail"],
            "additionalProperties": False,
            "properties": {
                "pass": _text(
                    None,
                    "CEL condition over named measurements that means the step worked.",
                    min_length=1,
                ),
                "fail": _text(None, "CEL condition that means the step failed.", min_length=1),
                "on_fail": {
                    "enum": list(Step.OnFail.values),
                    "description": "What happens when the fail condition holds.",
                },
                "on_fail_percentage": _percentage(
                    "With on_fail set_flag_percentage: the percentage the flag is set to."
                ),
                "measurements": {
                    "type": "object",
                    "description": "The numbers the conditions read, by name: a built-in store "
                    "query (metric, aggregation, matchers, optional baseline_matchers, window) or "
                    "PromQL (source, query, optional baseline_query).",
                    "additionalProperties": {"type": "object"},
                },
                "interval": {
                    "description": "Time between evaluations, e.g. 30s or 1m (default 1m).",
                },
                "count": {
                    "description": "Evaluations that make the verification (default 3).",
                },
                "initial_delay": {
                    "description": "Wait before the first evaluation (default 0).",
                },
                "failure_limit": {
                    "description": "Failed evaluations tolerated (default 0: the first fails it).",
                },
                "consecutive_error_limit": {
                    "description": "Errors in a row tolerated before the plan pauses (default 4).",
                },
                "inconclusive_limit": {
                    "description": "Inconclusive evaluations tolerated before the plan pauses "
                    "for a person (default 0).",
                },
                "canary": {
                    "type": "object",
                    "description": "Canary check: metrics whose canary and baseline "
                    "distributions are compared with a Mann-Whitney U test (Kayenta style).",
                },
            },
            "allOf": [
                {
                    "if": {"properties": {"on_fail": {"const": "set_flag_percentage"}}},
                    "then": {"required": ["on_fail_percentage"]},
                }
            ],
        },
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": "flag_ramp"}}}, "then": {"required": ["flag"]}},
        {"if": {"properties": {"kind": {"const": "deploy"}}}, "then": {"required": ["service"]}},
    ],
}

PLAN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://stepwise.dev/schemas/plan.schema.json",
    "title": "Stepwise plan",
    "description": "A plan of ordered, verified, reversible steps, applied with "
    "`manage.py apply_plan FILE` or the plan import page. Beyond this schema, Stepwise checks that "
    "step keys are unique, dependencies name steps of the plan and form no cycle, steps of one "
    "lockstep group do not depend on each other, flag actions on fail belong to flag_ramp steps, "
    "percentages have at most two decimals and runbooks are URLs.",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": API_VERSION, "description": "Version of this format."},
        "kind": {"const": KIND},
        "metadata": {
            "type": "object",
            "required": ["key", "name"],
            "additionalProperties": False,
            "properties": {
                "key": _slug(
                    80, "Identifier of the plan; applying a file updates the plan with this key."
                ),
                "name": _text(200, "Human name of the plan.", min_length=1),
            },
        },
        "spec": {
            "type": "object",
            "required": ["owner", "steps"],
            "additionalProperties": False,
            "properties": {
                "goal": _text(None, "Why the plan exists: the outcome, in a sentence or two."),
                "owner": _text(80, "Owning team.", min_length=1),
                "teams": {
                    "type": "array",
                    "items": _text(80, "A team.", min_length=1),
                    "uniqueItems": True,
                    "description": "Teams involved besides the step owners.",
                },
                "steps": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/$defs/step"},
                    "description": "The steps in declared order.",
                },
            },
        },
    },
    "$defs": {"step": _STEP_SCHEMA},
}

_VALIDATOR = Draft202012Validator(PLAN_SCHEMA)
_CONDITIONAL_REASONS = {
    "flag": "flag_ramp steps name the flag and the percentage they take it to",
    "service": "deploy steps name the service they ship",
    "on_fail_percentage": "on_fail set_flag_percentage needs the percentage to set",
}
_BUDGET_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$")
_FLAG_ACTIONS = {Step.OnFail.SET_FLAG_PERCENTAGE, Step.OnFail.RESTORE_PREVIOUS_FLAG}


def plan_schema_json() -> str:
    """The schema as written to docs/plan.schema.json."""
    return json.dumps(PLAN_SCHEMA, indent=2) + "\n"


# --- parsed form -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecError:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message}" + (f" (line {self.line})" if self.line else "")


class PlanSpecInvalid(ValueError):
    """A plan file that cannot be applied; `errors` holds every problem found."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__("\n".join(map(str, errors)))


def step_metric_sources(
    *, measurements: dict[str, Any], canary: dict[str, Any], convergence: dict[str, Any]
) -> set[str]:
    """The Prometheus sources a step's measurements, canary metrics and convergence predicate
    read, by name (a step row and a StepSpec hold the same three documents)."""
    docs = [*measurements.values(), *(canary.get("metrics") or {}).values()]
    if convergence:
        docs.append(convergence.get("measurement") or {})
    return {doc["source"] for doc in docs if isinstance(doc, dict) and "source" in doc}


@dataclass(frozen=True)
class StepSpec:
    key: str
    title: str
    owner: str
    kind: str
    targets: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    lockstep: str = ""
    service: str = ""
    flag_key: str = ""
    flag_percentage: Decimal | None = None
    rollback_command: str = ""
    runbook: str = ""
    pass_condition: str = ""
    fail_condition: str = ""
    on_fail: str = ""
    on_fail_percentage: Decimal | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, int] = field(default_factory=dict)
    canary: dict[str, Any] = field(default_factory=dict)
    convergence: dict[str, Any] = field(default_factory=dict)
    budget_slo: str = ""
    budget_min_remaining: Decimal | None = None

    def canonical(self) -> dict[str, Any]:
        """Order-insensitive where the database is (targets and dependencies are sets)."""
        data = asdict(self)
        data["targets"] = sorted(self.targets)
        data["depends_on"] = sorted(self.depends_on)
        for name in ("flag_percentage", "on_fail_percentage", "budget_min_remaining"):
            data[name] = None if data[name] is None else str(data[name])
        return data


@dataclass(frozen=True)
class PlanSpec:
    key: str
    name: str
    owner: str
    goal: str = ""
    teams: tuple[str, ...] = ()
    steps: tuple[StepSpec, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def step_keys(self) -> list[str]:
        return [s.key for s in self.steps]

    def digest(self) -> str:
        """Hash of what the file means, not how it is written: comments, quoting and list order of
        targets or dependencies do not change it, so re-applying an exported plan is a no-op."""
        data = {
            "key": self.key,
            "name": self.name,
            "owner": self.owner,
            "goal": self.goal,
            "teams": list(self.teams),
            "steps": [s.canonical() for s in self.steps],
        }
        return hashlib.sha256(
            json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()


# --- YAML with line numbers ----------------------------------------------------------------------

Path = tuple[str | int, ...]


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


class _Tree:
    """A YAML document turned into plain values, remembering the line of every value and key."""

    def __init__(self) -> None:
        self.lines: dict[Path, int] = {}
        self.key_lines: dict[Path, int] = {}
        self.errors: list[SpecError] = []
        self._constructor = SafeConstructor()
        self._built = 0

    def line(self, path: Path, *, key: bool = False) -> int | None:
        if key and path in self.key_lines:
            return self.key_lines[path]
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, path: Path, message: str, *, key: bool = False) -> None:
        self.errors.append(SpecError(format_path(path), message, self.line(path, key=key)))

    def build(self, node: Node, path: Path) -> Any:
        self._built += 1
        if self._built > MAX_NODES:
            raise _TooBig
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, MappingNode | SequenceNode) and node.tag not in _PLAIN_TAGS:
            # Only data: a tag such as !!python/object must not be half-understood as a list.
            self.error(path, f"unsupported YAML tag {node.tag!r}")
            return None
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.error(path, f"cannot read this value: {getattr(exc, 'problem', exc)}")
            return None
        problem = text_problem(value) if isinstance(value, str) else None
        if problem:
            self.error(path, problem)
            return None
        return value

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        try:
            self._constructor.flatten_mapping(node)  # "<<" merge keys
        except yaml.YAMLError as exc:
            self.error(path, f"cannot merge: {getattr(exc, 'problem', exc)}")
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = (
                self._constructor.construct_object(key_node)
                if isinstance(key_node, ScalarNode)
                else None
            )
            if not isinstance(key, str) or text_problem(key):
                self.errors.append(
                    SpecError(format_path(path), "field names must be plain text", key_line)
                )
                continue
            if key in result:
                self.errors.append(
                    SpecError(format_path((*path, key)), "field given twice", key_line)
                )
                continue
            self.key_lines[(*path, key)] = key_line
            result[key] = self.build(value_node, (*path, key))
        return result


class _TooBig(Exception):
    pass


def _yaml_error(exc: yaml.YAMLError) -> SpecError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
    return SpecError("", message, mark.line + 1 if mark else None)


def _load(text: str) -> tuple[Any, _Tree]:
    tree = _Tree()
    if len(text) > MAX_TEXT_CHARS:
        tree.errors.append(
            SpecError(
                "", f"the file is too large ({len(text)} characters; at most {MAX_TEXT_CHARS})"
            )
        )
        return None, tree
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        tree.errors.append(_yaml_error(exc))
        return None, tree
    if root is None:
        tree.errors.append(SpecError("", "the file is empty", None))
        return None, tree
    try:
        return tree.build(root, ()), tree
    except _TooBig:
        tree.errors.append(SpecError("", f"the document expands to more than {MAX_NODES} values"))
        return None, tree


# --- validation ----------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_WORDS = {"string": "text", "number": "a number", "array": "a list", "object": "a mapping"}


def _schema_errors(data: Any, tree: _Tree) -> None:
    for err in sorted(_VALIDATOR.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path: Path = tuple(err.absolute_path)
        kind, value = err.validator, err.instance
        if kind == "additionalProperties" and isinstance(value, dict):
            known = list(err.schema.get("properties", {}))
            for extra in sorted(set(value) - set(known)):
                hint = difflib.get_close_matches(extra, known, n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(known)}"
                tree.error((*path, extra), f"unknown field {extra!r}{suffix}", key=True)
            continue
        if kind == "required":
            match = re.match(r"^'(.+)' is a required property$", err.message)
            name = match.group(1) if match else str(err.validator_value)
            reason = _CONDITIONAL_REASONS.get(name) if "then" in err.schema_path else None
            tree.error(path, f"missing required field {name!r}" + (f": {reason}" if reason else ""))
            continue
        if kind == "type":
            types = (
                err.validator_value
                if isinstance(err.validator_value, list)
                else [err.validator_value]
            )
            wanted = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
            message = f"must be {wanted}, not {_type_name(value)}"
        elif kind == "enum":
            message = f"must be one of {', '.join(map(str, err.validator_value))} (got {value!r})"
        elif kind == "const":
            message = f"must be {err.validator_value!r} (got {value!r})"
        elif kind == "pattern":
            message = f"must be a slug: letters, digits, '-' and '_' only (got {value!r})"
        elif kind in {"minimum", "maximum"}:
            message = f"must be from 0 to 100 (got {value})"
        elif kind == "minLength":
            message = "must not be empty"
        elif kind == "maxLength":
            message = f"must be at most {err.validator_value} characters (got {len(value)})"
        elif kind == "minItems":
            message = "must list at least one step"
        elif kind == "uniqueItems":
            counts = Counter(json.dumps(v) for v in value)
            dupes = sorted(v for v, n in counts.items() if n > 1)
            message = f"lists {', '.join(dupes)} more than once"
        else:
            message = err.message
        tree.error(path, message)


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _as_str_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _semantic_errors(data: Any, tree: _Tree) -> list[str]:
    """Checks a schema cannot express. Defensive about types: the schema may already have failed,
    and every problem should still be reported in one pass. Returns warnings."""
    warnings: list[str] = []
    spec = data.get("spec") if isinstance(data, dict) else None
    steps = spec.get("steps") if isinstance(spec, dict) else None
    if not isinstance(steps, list):
        return warnings
    base: Path = ("spec", "steps")
    first_index: dict[str, int] = {}
    for i, step in enumerate(steps):
        if isinstance(step, dict) and isinstance(step.get("key"), str):
            key = step["key"]
            if key in first_index:
                j = first_index[key]
                tree.error(
                    (*base, i, "key"),
                    f"duplicate step key {key!r} (first declared at {format_path((*base, j))}, "
                    f"line {tree.line((*base, j))})",
                )
            else:
                first_index[key] = i

    known = set(first_index)
    graph: dict[str, list[str]] = {}
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        here: Path = (*base, i)
        key = step.get("key") if isinstance(step.get("key"), str) else None
        deps = step.get("depends_on")
        if isinstance(deps, list):
            for d, dep in enumerate(deps):
                if isinstance(dep, str) and dep not in known:
                    hint = difflib.get_close_matches(dep, sorted(known), n=1)
                    tree.error(
                        (*here, "depends_on", d),
                        f"unknown step {dep!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                    )
        if key is not None and first_index.get(key) == i:
            graph[key] = [d for d in _as_str_list(deps) if d in known]
            for dep in graph[key]:
                if first_index[dep] > i:
                    warnings.append(f"step {key!r} depends on {dep!r}, which is declared after it")

        kind = step.get("kind")
        flag = step.get("flag")
        if flag is not None and kind != Step.Kind.FLAG_RAMP and isinstance(kind, str):
            tree.error(
                (*here, "flag"), f"only flag_ramp steps take a flag (this step is {kind})", key=True
            )
        if isinstance(flag, dict):
            _check_decimals(flag.get("percentage"), (*here, "flag", "percentage"), tree)
        gate = step.get("budget_gate")
        if isinstance(gate, dict) and "min_remaining" in gate:
            _budget_percent(gate["min_remaining"], (*here, "budget_gate", "min_remaining"), tree)
        verification = step.get("verification")
        convergence = step.get("convergence")
        if convergence is not None:
            if kind == Step.Kind.FLAG_RAMP:
                tree.error(
                    (*here, "convergence"),
                    "a flag ramp converges when its consumers fetch the flag; "
                    "convergence predicates are for other steps",
                    key=True,
                )
            for problem in convergence_parse(convergence)[1]:
                tree.error((*here, "convergence", *problem.path), problem.message)
        if isinstance(verification, dict):
            for problem in verification_parse(verification)[2]:
                tree.error((*here, "verification", *problem.path), problem.message)
            on_fail = verification.get("on_fail")
            if on_fail in _FLAG_ACTIONS and isinstance(kind, str) and kind != Step.Kind.FLAG_RAMP:
                tree.error(
                    (*here, "verification", "on_fail"),
                    f"{on_fail} acts on the step's flag, and only flag_ramp steps have one",
                )
            if "on_fail_percentage" in verification and on_fail != Step.OnFail.SET_FLAG_PERCENTAGE:
                tree.error(
                    (*here, "verification", "on_fail_percentage"),
                    "only used with on_fail: set_flag_percentage",
                    key=True,
                )
            _check_decimals(
                verification.get("on_fail_percentage"),
                (*here, "verification", "on_fail_percentage"),
                tree,
            )
        elif key is not None and verification is None:
            warnings.append(
                f"step {key!r} has no verification: it cannot start until one is declared"
            )
        revert = step.get("revert")
        runbook = revert.get("runbook") if isinstance(revert, dict) else None
        if isinstance(runbook, str) and runbook.strip():
            try:
                URLValidator(schemes=["http", "https"])(runbook.strip())
            except DjangoValidationError:
                tree.error(
                    (*here, "revert", "runbook"), f"must be an http(s) URL (got {runbook!r})"
                )

    if cycle := find_cycle(graph):
        start = first_index[str(cycle[0])]
        nxt = str(cycle[1])
        deps = steps[start].get("depends_on", [])
        path: Path = (*base, start, "depends_on")
        if isinstance(deps, list) and nxt in deps:
            path = (*path, deps.index(nxt))
        tree.error(path, "cycle: " + " -> ".join(map(str, cycle)))
    else:
        _lockstep_errors(steps, graph, first_index, tree)
    return warnings


def _check_decimals(value: Any, path: Path, tree: _Tree) -> None:
    number = _decimal(value)
    if number is not None and number.is_finite() and number != number.quantize(Decimal("0.01")):
        tree.error(path, f"at most two decimals (got {value})")


def _budget_percent(
    value: Any, path: Path | None = None, tree: _Tree | None = None
) -> Decimal | None:
    """ "25%", "12.5 %" or 25 -> Decimal 25; None (and an error at `path`) for anything else."""
    number = None
    if isinstance(value, str) and (match := _BUDGET_PERCENT.match(value)):
        number = Decimal(match.group(1))
    elif not isinstance(value, str):
        number = _decimal(value)
    if number is None or not number.is_finite() or not 0 <= number <= 100:
        # Other types are already reported by the schema.
        wrong_type = isinstance(value, bool) or not isinstance(value, str | int | float)
        if tree is not None and path is not None and not wrong_type:
            tree.error(
                path,
                f"must be a percentage from 0 to 100, like 25% or 25 (got {value!r})",
            )
        return None
    if number != number.quantize(Decimal("0.01")):
        if tree is not None and path is not None:
            tree.error(path, f"at most two decimals (got {value})")
        return None
    return number.quantize(Decimal("0.01"))


def _lockstep_errors(
    steps: list[Any], graph: dict[str, list[str]], first_index: dict[str, int], tree: _Tree
) -> None:
    """Steps of one group advance together, so none of them may wait for another of them."""
    groups: dict[str, list[str]] = {}
    for key, i in first_index.items():
        group = steps[i].get("lockstep")
        if isinstance(group, str) and group:
            groups.setdefault(group, []).append(key)
    for group, members in groups.items():
        for key in members:
            upstream = _ancestors(key, graph)
            for other in members:
                if other in upstream:
                    tree.error(
                        ("spec", "steps", first_index[key], "lockstep"),
                        f"{key!r} and {other!r} share lockstep group {group!r} but {key!r} "
                        f"depends on {other!r}; steps of a group advance together",
                    )


def _ancestors(key: str, graph: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(key, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def _text_value(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _pct(value: Any) -> Decimal | None:
    number = _decimal(value)
    return None if number is None else number.quantize(Decimal("0.01"))


def _to_spec(data: dict[str, Any], warnings: list[str]) -> PlanSpec:
    meta, spec = data["metadata"], data["spec"]
    steps = []
    for raw in spec["steps"]:
        flag = raw.get("flag") or {}
        revert = raw.get("revert") or {}
        verification = raw.get("verification") or {}
        measurements, canary, _ = (
            verification_parse(verification) if verification else ({}, None, [])
        )
        convergence = convergence_parse(raw["convergence"])[0] if "convergence" in raw else None
        gate = raw.get("budget_gate") or {}
        steps.append(
            StepSpec(
                key=raw["key"].strip(),
                title=_text_value(raw["title"]),
                owner=_text_value(raw["owner"]),
                kind=raw["kind"],
                targets=tuple(t.strip() for t in raw.get("targets") or ()),
                depends_on=tuple(d.strip() for d in raw.get("depends_on") or ()),
                lockstep=_text_value(raw.get("lockstep")),
                service=_text_value(raw.get("service")),
                flag_key=flag.get("key", "").strip(),
                flag_percentage=_pct(flag.get("percentage")),
                rollback_command=_text_value(revert.get("rollback_command")),
                runbook=_text_value(revert.get("runbook")),
                pass_condition=_text_value(verification.get("pass")),
                fail_condition=_text_value(verification.get("fail")),
                on_fail=verification.get("on_fail", ""),
                on_fail_percentage=_pct(verification.get("on_fail_percentage")),
                measurements={name: m.to_dict() for name, m in measurements.items()},
                analysis=analysis_parse(verification)[0],
                canary=canary.to_dict() if canary else {},
                convergence=convergence.to_dict() if convergence else {},
                budget_slo=_text_value(gate.get("slo")),
                budget_min_remaining=_budget_percent(gate["min_remaining"]) if gate else None,
            )
        )
    return PlanSpec(
        key=meta["key"].strip(),
        name=_text_value(meta["name"]),
        owner=_text_value(spec["owner"]),
        goal=_text_value(spec.get("goal")),
        teams=tuple(_text_value(t) for t in spec.get("teams") or ()),
        steps=tuple(steps),
        warnings=tuple(warnings),
    )


def plan_spec_errors(text: str) -> tuple[PlanSpec | None, list[SpecError]]:
    """Parse and validate; every problem found, sorted by line. The spec only when there are none."""
    data, tree = _load(text)
    if tree.errors:
        return None, tree.errors
    _schema_errors(data, tree)
    warnings = _semantic_errors(data, tree)
    if tree.errors:
        unique = dict.fromkeys(tree.errors)
        return None, sorted(unique, key=lambda e: (e.line or 0, e.path))
    return _to_spec(data, warnings), []


def plan_spec_parse(text: str) -> PlanSpec:
    """The validated plan a file declares, or PlanSpecInvalid listing every problem."""
    spec, errors = plan_spec_errors(text)
    if errors or spec is None:
        raise PlanSpecInvalid(errors)
    return spec


# --- export --------------------------------------------------------------------------------------


def plan_spec_from_plan(plan: Plan) -> PlanSpec:
    """What the stored plan declares, in the same normalized form a parsed file has."""
    steps = list(
        plan.steps.select_related("flag", "budget_slo")
        .prefetch_related("depends_on", "step_targets__target")
        .order_by("position")
    )
    return PlanSpec(
        key=plan.key,
        name=plan.name,
        owner=plan.owner,
        goal=plan.goal,
        teams=tuple(plan.teams or ()),
        steps=tuple(_step_spec(step) for step in steps),
    )


def _step_spec(step: Step) -> StepSpec:
    deps = sorted(step.depends_on.all(), key=lambda s: s.position)
    step_targets = sorted(step.step_targets.all(), key=lambda st: st.pk)
    return StepSpec(
        key=step.key,
        title=step.title,
        owner=step.owner_team,
        kind=step.kind,
        targets=tuple(st.target.name for st in step_targets),
        depends_on=tuple(d.key for d in deps),
        lockstep=step.lockstep_group,
        service=step.service,
        flag_key=step.flag.key if step.flag else "",
        flag_percentage=step.flag_percentage,
        rollback_command=step.rollback_command,
        runbook=step.runbook_url,
        pass_condition=step.pass_condition,
        fail_condition=step.fail_condition,
        on_fail=step.on_fail,
        on_fail_percentage=step.on_fail_percentage,
        measurements=step.measurements,
        analysis={name: getattr(step, name) for name in ANALYSIS_FIELDS},
        canary=step.canary,
        convergence=step.convergence,
        budget_slo=step.budget_slo.name if step.budget_slo else "",
        budget_min_remaining=step.budget_min_remaining,
    )


class _Flow(list):
    pass


class _FlowMap(dict):
    pass


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_Dumper.add_representer(
    _FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def plan_spec_document(spec: PlanSpec) -> dict[str, Any]:
    """The plain-data document for a spec, leaving out empty optional fields."""
    steps = []
    for s in spec.steps:
        step: dict[str, Any] = {"key": s.key, "title": s.title, "owner": s.owner, "kind": s.kind}
        if s.targets:
            step["targets"] = _Flow(s.targets)
        step["depends_on"] = _Flow(s.depends_on)
        if s.lockstep:
            step["lockstep"] = s.lockstep
        if s.service:
            step["service"] = s.service
        if s.flag_key:
            flag: dict[str, Any] = {"key": s.flag_key}
            if s.flag_percentage is not None:
                flag["percentage"] = _number(s.flag_percentage)
            step["flag"] = _FlowMap(flag)
        revert = {
            k: v for k, v in (("rollback_command", s.rollback_command), ("runbook", s.runbook)) if v
        }
        if revert:
            step["revert"] = revert
        if s.pass_condition or s.fail_condition or s.on_fail:
            verification: dict[str, Any] = {
                "pass": s.pass_condition,
                "fail": s.fail_condition,
                "on_fail": s.on_fail,
            }
            if s.on_fail_percentage is not None:
                verification["on_fail_percentage"] = _number(s.on_fail_percentage)
            if s.analysis:
                verification |= analysis_document(s.analysis)
            if s.measurements:
                verification["measurements"] = s.measurements
            if s.canary:
                verification["canary"] = s.canary
            step["verification"] = verification
        if s.convergence:
            step["convergence"] = s.convergence
        if s.budget_slo:
            step["budget_gate"] = _FlowMap(
                {"slo": s.budget_slo, "min_remaining": percent_text(s.budget_min_remaining or 0)}
            )
        steps.append(step)
    body: dict[str, Any] = {}
    if spec.goal:
        body["goal"] = spec.goal
    body["owner"] = spec.owner
    if spec.teams:
        body["teams"] = _Flow(spec.teams)
    body["steps"] = steps
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"key": spec.key, "name": spec.name},
        "spec": body,
    }


def plan_spec_dump(spec: PlanSpec, *, header: str = "") -> str:
    text = yaml.dump(
        plan_spec_document(spec),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=1000,
        default_flow_style=False,
    )
    # A blank line between steps keeps long plans scannable.
    text = re.sub(r"\n(  - key: )", r"\n\n\1", text)
    prefix = "".join(f"# {line}\n" for line in header.splitlines())
    return prefix + text


def plan_export(plan: Plan) -> str:
    """The plan as a YAML plan file; applying it to the same plan changes nothing."""
    return plan_spec_dump(
        plan_spec_from_plan(plan),
        header=f"Plan {plan.key}, exported from Stepwise.\n"
        "Apply with: manage.py apply_plan FILE (or the plan import page).",
    )
