import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import django.dispatch
from django.db import transaction
from django.utils import timezone

from signals.models import SLO, MetricSource, Sample
from signals.slo_spec import BUILTIN, MetricRef, SLISpec, SLOInvalid, SLOSpec

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
    Idempotent: a sample for a series and instant already stored is skipped, so a retried batch
    adds nothing. No ledger entry: samples are observations, not changes.
    """
    rows = sample_batch_parse(payload=payload, now=now)
    Sample.objects.bulk_create(rows, batch_size=1_000, ignore_conflicts=True)
    metrics = {row.name for row in rows}
    transaction.on_commit(lambda: samples_ingested.send(sender=Sample, metrics=metrics))
    return len(rows)


def url_problem(url: str) -> str:
    """Why `url` cannot be a Prometheus source's base URL, or "" when it can. A host without a
    dot is fine: in a cluster Prometheus is often just `prometheus:9090`."""
    example = f"e.g. http://prometheus:9090 (got {url[:200]!r})"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- reading it checks it: a port that is not a number raises
    except ValueError:
        return f"must be an http(s) URL with a host, {example}"
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", url):
        return f"must be an http(s) URL with a host, {example}"
    if parts.query or parts.fragment:
        return f"the base URL of the Prometheus API, without ?query or #fragment, {example}"
    if parts.username or parts.password:
        # Not quoted back: the URL holds a credential.
        return (
            "credentials do not go in the URL: register them with the source as an env: reference"
        )
    if len(url) > 200:  # MetricSource.url's max_length
        return "at most 200 characters"
    return ""


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


@transaction.atomic
def metric_source_declare(*, name: str, url: str) -> tuple[MetricSource, str]:
    """An OpenSLO DataSource: create the Prometheus source `name`, or point it at `url`. Returns
    it and "created", "updated" or "unchanged". No ledger entry: callers above record it."""
    source = MetricSource.objects.select_for_update().filter(name=name).first()
    if source is None:
        return metric_source_create(
            name=name, kind=MetricSource.Kind.PROMETHEUS, url=url
        ), "created"
    if source.kind != MetricSource.Kind.PROMETHEUS:
        raise SourceInvalid(f"metric source {name!r} is the built-in store, not Prometheus")
    if source.url == url:
        return source, "unchanged"
    source.url = url
    source.save(update_fields=["url"])
    return source, "updated"


def prometheus_source_names() -> list[str]:
    """The Prometheus sources an SLO may name, by name."""
    return list(
        MetricSource.objects.filter(kind=MetricSource.Kind.PROMETHEUS)
        .order_by("name")
        .values_list("name", flat=True)
    )


_ROLLUP_FIELDS = (
    "kind",
    "indicator",
    "source_id",
    "budgeting",
    "time_slice_target",
    "threshold_op",
    "threshold",
)


def _slo_values(spec: SLOSpec, source: MetricSource | None) -> dict[str, Any]:
    indicator = spec.indicator
    refs = {
        key: ref.to_dict()
        for key in ("good", "bad", "total", "metric")
        if (ref := getattr(indicator, key)) is not None
    }
    return {
        "display_name": spec.display_name,
        "description": spec.description,
        "service": spec.service,
        "owner": spec.owner,
        "kind": indicator.kind,
        "indicator": {
            **refs,
            **({"counter": indicator.counter} if indicator.kind == "ratio" else {}),
        },
        "indicator_name": spec.indicator_name,
        "source_id": source.pk if source else None,
        "objective": spec.objective,
        "objective_name": spec.objective_name,
        "window_seconds": spec.window_seconds,
        "rolling": spec.rolling,
        "window_text": spec.window_text,
        "calendar_start": spec.calendar_start,
        "calendar_timezone": spec.calendar_timezone,
        "budgeting": spec.budgeting,
        "time_slice_target": spec.time_slice_target,
        "threshold_op": spec.threshold_op,
        "threshold": spec.threshold,
        "alert_min_events": spec.alert_min_events,
    }


def slo_source_problems(spec: SLOSpec, *, path: str = "") -> list[tuple[str, str]]:
    """What is wrong with the metric source an SLO reads, by path; empty when it exists."""
    source = spec.indicator.source
    where = f"{path}spec.indicator.source" if path else "source"
    if source == BUILTIN:
        return []
    found = MetricSource.objects.filter(name=source).first()
    if found is None:
        known = ", ".join(MetricSource.objects.order_by("name").values_list("name", flat=True))
        return [
            (where, f"no metric source named {source!r} (known: {known or 'none'}, and builtin)")
        ]
    if found.kind != MetricSource.Kind.PROMETHEUS:
        return [(where, f"metric source {source!r} is {found.kind}, not Prometheus")]
    return []


@transaction.atomic
def slo_save(*, spec: SLOSpec, now: datetime | None = None) -> tuple[SLO, str]:
    """Create the SLO or update the one with its name. Returns it and "created", "updated" or
    "unchanged". A changed indicator restarts the rollup: old minutes were counted differently.
    No ledger entry here (`signals` sits below the ledger); callers above record it."""
    problems = slo_source_problems(spec)
    if problems:
        raise SLOInvalid(problems)
    source = (
        None
        if spec.indicator.source == BUILTIN
        else MetricSource.objects.get(name=spec.indicator.source)
    )
    values = _slo_values(spec, source)
    slo = SLO.objects.select_for_update().filter(name=spec.name).first()
    if slo is None:
        return SLO.objects.create(name=spec.name, **values), "created"
    changed = [key for key, value in values.items() if getattr(slo, key) != value]
    if not changed:
        return slo, "unchanged"
    restart = any(key in _ROLLUP_FIELDS for key in changed)
    for key in changed:
        setattr(slo, key, values[key])
    slo.updated_at = now or timezone.now()
    if restart:
        slo.buckets.all().delete()
        slo.alerts.filter(resolved_at__isnull=True).update(resolved_at=slo.updated_at)
        slo.rolled_up_from = slo.rolled_up_to = None
    slo.save()
    return slo, "updated"


def slo_spec_of(slo: SLO) -> SLOSpec:
    """The declaration back from the row (for OpenSLO export)."""
    refs = {k: MetricRef.from_dict(v) for k, v in slo.indicator.items() if k != "counter"}
    return SLOSpec(
        name=slo.name,
        service=slo.service,
        indicator=SLISpec(
            kind=slo.kind,
            source=slo.source.name if slo.source_id else BUILTIN,
            counter=slo.indicator.get("counter", True),
            **refs,
        ),
        objective=slo.objective,
        window_seconds=slo.window_seconds,
        display_name=slo.display_name,
        description=slo.description,
        owner=slo.owner,
        indicator_name=slo.indicator_name,
        objective_name=slo.objective_name,
        rolling=slo.rolling,
        window_text=slo.window_text,
        calendar_start=slo.calendar_start,
        calendar_timezone=slo.calendar_timezone,
        budgeting=slo.budgeting,
        time_slice_target=slo.time_slice_target,
        threshold_op=slo.threshold_op,
        threshold=slo.threshold,
        alert_min_events=slo.alert_min_events,
    )
