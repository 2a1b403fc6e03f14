"""Pure flag evaluation: compile flag versions into an immutable config, evaluate one flag.

Reasons follow OFREP / OpenFeature names:
- DISABLED: the flag is off; the off variant is served.
- TARGETING_MATCH: a targeting rule matched (rules are tried in order, the first match wins).
- SPLIT: the percentage rollout decided (inside -> on variant, outside -> off variant).
- STATIC: no rules and a rollout of exactly 0 % or 100 %; the value does not depend on context.
- DEFAULT: rules exist but none matched and the rollout is 0 % or 100 %; the value depended on
  the context (it could have matched), so calling it STATIC would be wrong.

A rollout strictly between 0 % and 100 % needs a `targetingKey`; without one the evaluation fails
with TARGETING_KEY_MISSING rather than guessing a bucket.

Bucketing: sha256("<flag key>:<targetingKey>") -> an integer in [0, 10000), i.e. [0, 100) % at
0.01 resolution. A key is inside a p % rollout when bucket < p * 100, so a key inside at p % stays
inside at any larger percentage (stickiness), and different flags bucket independently.
"""

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

STATIC = "STATIC"
DEFAULT = "DEFAULT"
TARGETING_MATCH = "TARGETING_MATCH"
SPLIT = "SPLIT"
DISABLED = "DISABLED"

PARSE_ERROR = "PARSE_ERROR"
TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
INVALID_CONTEXT = "INVALID_CONTEXT"
FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
GENERAL = "GENERAL"

BUCKETS = 10_000  # 100 % at 0.01 % resolution


class EvaluationError(Exception):
    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class Rule:
    attribute: str
    op: str
    values: tuple[Any, ...]
    variant: str


@dataclass(frozen=True)
class CompiledFlag:
    key: str
    version: int
    enabled: bool
    rollout_bp: int  # basis points: 0..10000
    variants: Mapping[str, Any]
    on_variant: str
    off_variant: str
    rules: tuple[Rule, ...]
    hash_prefix: bytes  # "<flag key>:" encoded: the fixed part of every bucket hash

    @property
    def split_only(self) -> bool:
        """Decided by the targeting key's bucket alone: on, no rules, strictly inside 0..100 %."""
        return self.enabled and not self.rules and 0 < self.rollout_bp < BUCKETS


@dataclass(frozen=True)
class FlagConfig:
    revision: int
    flags: Mapping[str, CompiledFlag]


@dataclass(frozen=True)
class Evaluation:
    key: str
    value: Any
    variant: str
    reason: str
    version: int


def flag_compile(*, key: str, version: int, settings: Mapping[str, Any]) -> CompiledFlag:
    """One FlagVersion.settings_dict() -> CompiledFlag."""
    pct = Decimal(str(settings.get("rollout_percentage", 0)))
    rules = tuple(
        Rule(
            attribute=str(rule["attribute"]),
            op=str(rule["op"]),
            values=tuple(rule["values"]),
            variant=str(rule["variant"]),
        )
        for rule in settings.get("rules") or []
    )
    return CompiledFlag(
        key=key,
        version=version,
        enabled=bool(settings.get("enabled")),
        rollout_bp=max(0, min(BUCKETS, int((pct * 100).to_integral_value()))),
        variants=dict(settings.get("variants") or {}),
        on_variant=settings.get("on_variant", "on"),
        off_variant=settings.get("off_variant", "off"),
        rules=rules,
        hash_prefix=f"{key}:".encode(),
    )


def config_compile(*, revision: int, versions: Iterable[Any]) -> FlagConfig:
    """FlagVersion rows (with `flag` loaded) -> FlagConfig at `revision`."""
    flags = {
        v.flag.key: flag_compile(key=v.flag.key, version=v.number, settings=v.settings_dict())
        for v in sorted(versions, key=lambda v: v.flag.key)
    }
    return FlagConfig(revision=revision, flags=flags)


_FIRST_8_BYTES = struct.Struct(">Q").unpack_from


def bucket(hash_prefix: bytes, targeting_key: bytes) -> int:
    """Stable bucket in [0, BUCKETS) of a key for the flag whose `hash_prefix` is given (never
    Python's salted hash()). The hot path of bulk evaluation: positional, no keywords."""
    return _FIRST_8_BYTES(hashlib.sha256(hash_prefix + targeting_key).digest())[0] % BUCKETS


def bucket_of(*, flag_key: str, targeting_key: str) -> int:
    """Stable bucket in [0, BUCKETS) for this flag and key."""
    return bucket(f"{flag_key}:".encode(), targeting_key.encode())


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a rule on a boolean attribute must not match the number 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def rule_matches(rule: Rule, context: Mapping[str, Any]) -> bool:
    """An absent or non-scalar attribute matches no rule, not even not_in/neq."""
    if rule.attribute not in context:
        return False
    actual = context[rule.attribute]
    if actual is None or isinstance(actual, dict | list):
        return False
    op, values = rule.op, rule.values
    if op == "in":
        return any(_same(actual, v) for v in values)
    if op == "not_in":
        return not any(_same(actual, v) for v in values)
    if op == "eq":
        return _same(actual, values[0])
    if op == "neq":
        return not _same(actual, values[0])
    if op == "starts_with":
        return isinstance(actual, str) and any(actual.startswith(str(v)) for v in values)
    if op == "ends_with":
        return isinstance(actual, str) and any(actual.endswith(str(v)) for v in values)
    if op in ("gt", "lt"):
        left, right = _number(actual), _number(values[0])
        if left is None or right is None:
            return False
        return left > right if op == "gt" else left < right
    return False


def context_validate(context: Any) -> dict[str, Any]:
    """The evaluation context as a dict, or EvaluationError(INVALID_CONTEXT)."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise EvaluationError(INVALID_CONTEXT, "context must be a JSON object")
    key = context.get("targetingKey")
    if key is not None and not isinstance(key, str):
        raise EvaluationError(INVALID_CONTEXT, "targetingKey must be a string")
    return context


def flag_decide(*, flag: CompiledFlag, context: Mapping[str, Any]) -> tuple[str, str]:
    """(variant, reason) for one flag; raises EvaluationError(TARGETING_KEY_MISSING) for a split
    without a key."""
    if not flag.enabled:
        return flag.off_variant, DISABLED
    for rule in flag.rules:
        if rule_matches(rule, context):
            return rule.variant, TARGETING_MATCH
    if flag.rollout_bp >= BUCKETS or flag.rollout_bp <= 0:
        variant = flag.on_variant if flag.rollout_bp >= BUCKETS else flag.off_variant
        return variant, DEFAULT if flag.rules else STATIC
    targeting_key = context.get("targetingKey")
    if not targeting_key:
        raise EvaluationError(
            TARGETING_KEY_MISSING,
            f"{flag.key} is rolled out to {flag.rollout_bp / 100:g}%; send a targetingKey",
        )
    inside = bucket(flag.hash_prefix, targeting_key.encode()) < flag.rollout_bp
    return flag.on_variant if inside else flag.off_variant, SPLIT


def flag_evaluate(*, flag: CompiledFlag, context: Mapping[str, Any]) -> Evaluation:
    """Evaluate one flag: its value, variant and reason (see flag_decide)."""
    variant, reason = flag_decide(flag=flag, context=context)
    return Evaluation(
        key=flag.key,
        value=flag.variants.get(variant),
        variant=variant,
        reason=reason,
        version=flag.version,
    )
