import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import django.dispatch
from django.db import transaction
from django.utils import timezone

from signals.models import MetricSource, Sample

MAX_BATCH = 5_000
MAX_FUTURE = timedelta(minutes=5)
MAX_LABEL_KEY = 1_000
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


# Sent after a batch commits, with the metric names it held (`metrics`).
samples_ingested = django.dispatch.Signal()


class IngestTooLarge(ValueError):
    def __init__(self, count: int) -> None:
        super().__init__(f"a batch of {count} samples exceeds the limit of {MAX_BATCH}")
        self.count = count


class IngestInvalid(ValueError):
    """The batch was refused; `problems` lists each invalid sample by its index."""

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class SourceInvalid(ValueError):
    pass


class _Problem(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def label_key_for(labels: dict[str, str]) -> str:
    """The canonical form of a label set: one series is one (name, label_key)."""
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _parse_timestamp(raw: Any, *, now: datetime) -> datetime:
    if isinstance(raw, bool) or raw is None:
        raise _Problem("timestamp must be an ISO-8601 string or unix seconds")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise _Problem("timestamp is not a finite number")
        try:
            at = datetime.fromtimestamp(raw, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise _Problem(f"timestamp {raw} is out of range") from None
    elif isinstance(raw, str):
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            raise _Problem(f"timestamp {raw!r} is not ISO-8601") from None
        if at.tzinfo is None:
            raise _Problem(f"timestamp {raw!r} has no UTC offset (add Z or +00:00)")
    else:
        raise _Problem("timestamp must be an ISO-8601 string or unix seconds")
    if at > now + MAX_FUTURE:
        raise _Problem(
            f"timestamp {at.isoformat()} is more than {int(MAX_FUTURE.total_seconds())} s in the future"
        )
    return at


def _parse_labels(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _Problem("labels must be an object of strings")
    for key, value in raw.items():
        if not LABEL_NAME.fullmatch(key) or key.startswith("__"):
            raise _Problem(f"label name {key!r} is invalid (letters, digits, _; not starting __)")
        if not isinstance(value, str):
            raise _Problem(f"label {key!r} must be a string, not {type(value).__name__}")
    return dict(raw)


def _parse_sample(raw: Any, *, now: datetime) -> Sample:
    if not isinstance(raw, dict):
        raise _Problem("a sample must be an object with name, labels, timestamp and value")
    unknown = sorted(set(raw) - {"name", "labels", "timestamp", "value"})
    if unknown:
        raise _Problem(f"unknown field(s): {', '.join(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name) or len(name) > 200:
        raise _Problem(f"name {name!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, ≤ 200)")
    labels = _parse_labels(raw.get("labels"))
    label_key = label_key_for(labels)
    if len(label_key) > MAX_LABEL_KEY:
        raise _Problem(f"labels are too long ({len(label_key)} > {MAX_LABEL_KEY} characters)")
    if "timestamp" not in raw:
        raise _Problem("timestamp is missing")
    timestamp = _parse_timestamp(raw["timestamp"], now=now)
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(f"value must be a number, not {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise _Problem("value is too large for a double") from None
    if not math.isfinite(value):
        raise _Problem(f"value {value} is not finite (NaN and Inf are refused)")
    return Sample(name=name, labels=labels, label_key=label_key, timestamp=timestamp, value=value)


def sample_batch_parse(*, payload: Any, now: datetime | None = None) -> list[Sample]:
    """Validate a whole batch; unsaved rows, or IngestInvalid / IngestTooLarge naming every problem."""
    if not isinstance(payload, dict) or not isinstance(payload.get("samples"), list):
        raise IngestInvalid('the body must be an object {"samples": [...]}')
    raw_samples = payload["samples"]
    if len(raw_samples) > MAX_BATCH:
        raise IngestTooLarge(len(raw_samples))
    if not raw_samples:
        raise IngestInvalid("the batch has no samples")
    now = now or timezone.now()
    rows, problems = [], []
    for index, raw in enumerate(raw_samples):
        try:
            rows.append(_parse_sample(raw, now=now))
        except _Problem as problem:
            problems.append({"index": index, "reason": problem.reason})
    if problems:
        raise IngestInvalid(
            f"{len(problems)} of {len(raw_samples)} samples are invalid; nothing was written",
            problems,
        )
    return rows


@transaction.atomic
def samples_ingest(*, payload: Any, now: datetime | None = None) -> int:
    """Write a batch of samples to the built-in store, all or nothing. Returns how many.

    Out-of-order samples are accepted (the store is queried by window, not appended per series).
    No ledger entry: samples are observations, not changes.
    """
    rows = sample_batch_parse(payload=payload, now=now)
    Sample.objects.bulk_create(rows, batch_size=1_000)
    metrics = {row.name for row in rows}
    transaction.on_commit(lambda: samples_ingested.send(sender=Sample, metrics=metrics))
    return len(rows)


def metric_source_create(
    *,
    name: str,
    kind: str = MetricSource.Kind.BUILTIN,
    url: str = "",
    auth_header: str = "",
    timeout_seconds: float = 5.0,
    verify_tls: bool = True,
) -> MetricSource:
    """Register a metric source. No ledger entry: `signals` sits below the ledger."""
    if not name.strip():
        raise SourceInvalid("a metric source needs a name")
    if kind not in MetricSource.Kind.values:
        raise SourceInvalid(f"unknown source kind {kind!r}; known: {', '.join(MetricSource.Kind)}")
    if kind == MetricSource.Kind.PROMETHEUS and not url:
        raise SourceInvalid("a Prometheus source needs the URL of its HTTP API")
    if not (timeout_seconds > 0 and math.isfinite(timeout_seconds)):
        raise SourceInvalid("the timeout must be a positive number of seconds")
    if MetricSource.objects.filter(name=name).exists():
        raise SourceInvalid(f"a metric source named {name!r} already exists")
    return MetricSource.objects.create(
        name=name,
        kind=kind,
        url=url,
        auth_header=auth_header,
        timeout_seconds=timeout_seconds,
        verify_tls=verify_tls,
    )
