import json
import math
import re
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import django.dispatch
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import InvalidInput, NotFound
from core.metrics import SAMPLES_INGESTED
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


class SourceInvalid(InvalidInput):
    pass


class SourceNotFound(SourceInvalid, NotFound):
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
    transaction.on_commit(partial(SAMPLES_INGESTED.inc, len(rows)))
    return len(rows)


def url_problem(url: str) -> str:
    """Why `url` cannot be a Prometheus source's base URL, or "" when it can. A host without a
    dot is fine: in a cluster Prometheus is often just `prometheus:9090`."""
    try:
        parts = urlsplit(url)
        if parts.username or parts.password:
            # Not quoted back: the URL holds a credential.
            return (
                "credentials do not go in the URL: register them with the source as an env: "
                "reference"
            )
        parts.port  # noqa: B018 -- reading it checks it: a port that is not a number raises
    except ValueError:
        return (
            f"must be an http(s) URL with a host, e.g. http://prometheus:9090 (got {url[:200]!r})"
        )
    example = f"e.g. http://prometheus:9090 (got {url[:200]!r})"
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", url):
        return f"must be an http(s) URL with a host, {example}"
    if parts.query or parts.fragment:
        return f"the base URL of the Prometheus API, without ?query or #fragment, {example}"
    if len(url) > 200:  # MetricSource.url's max_length
        return "at most 200 characters"
    return ""


# /api/metric-sources/register would shadow a source of that name.
RESERVED_NAMES = frozenset({"register"})
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
SECRET_REF = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")
MAX_TIMEOUT_SECONDS = 60.0
# What an edit may change; the name and kind of a source are what SLOs and steps refer to.
EDITABLE = (
    "url",
    "timeout_seconds",
    "verify_tls",
    "auth_scheme",
    "auth_username",
    "auth_secret_ref",
)


def _auth_problem(*, scheme: str, username: str, secret_ref: str) -> str:
    """Why these credentials cannot be stored, or "". Never quotes `secret_ref`: a secret pasted
    where its reference goes must not be echoed into a page, a log or the ledger."""
    if scheme not in MetricSource.AuthScheme.values:
        return f"auth scheme must be bearer, basic or none (got {scheme[:20]!r})"
    if scheme == MetricSource.AuthScheme.NONE:
        if username or secret_ref:
            return "a username or secret needs an auth scheme (bearer or basic)"
        return ""
    if not SECRET_REF.fullmatch(secret_ref):
        return (
            "the secret must be a reference to an environment variable, like env:PROM_TOKEN; "
            "Stepwise does not store credentials (what was given is not shown back)"
        )
    if scheme == MetricSource.AuthScheme.BASIC and not username.strip():
        return "basic auth needs a username"
    if scheme == MetricSource.AuthScheme.BEARER and username:
        return "a bearer token takes no username"
    if len(username) > 200:
        return "the username is at most 200 characters"
    return ""


def _settings_problem(*, kind: str, url: str, timeout_seconds: float, auth: dict[str, str]) -> str:
    if kind == MetricSource.Kind.PROMETHEUS:
        if not url:
            return "a Prometheus source needs the URL of its HTTP API"
        if problem := url_problem(url):
            return f"url: {problem}"
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int | float)
        or not (0 < timeout_seconds <= MAX_TIMEOUT_SECONDS and math.isfinite(timeout_seconds))
    ):
        return f"the timeout must be a positive number of seconds, at most {MAX_TIMEOUT_SECONDS:g}"
    return _auth_problem(**auth)


def metric_source_create(
    *,
    name: str,
    kind: str = MetricSource.Kind.BUILTIN,
    url: str = "",
    auth_header: str = "",
    auth_scheme: str = MetricSource.AuthScheme.NONE,
    auth_username: str = "",
    auth_secret_ref: str = "",
    timeout_seconds: float = 5.0,
    verify_tls: bool = True,
) -> MetricSource:
    """Register a metric source. No ledger entry: `signals` sits below the ledger; callers above
    record it (leadership.services.metric_source_register)."""
    if not name.strip():
        raise SourceInvalid("a metric source needs a name")
    if not SOURCE_NAME.fullmatch(name):
        raise SourceInvalid(
            "a metric source name is letters, digits, '.', '_' and '-', starting with a letter or "
            f"digit, at most 100 characters (got {name[:100]!r})"
        )
    if name == BUILTIN and kind == MetricSource.Kind.PROMETHEUS:
        raise SourceInvalid(f"{BUILTIN!r} is the built-in store's name")
    if name in RESERVED_NAMES:
        raise SourceInvalid(
            f"{name!r} is reserved: POST /api/metric-sources/{name} registers sources"
        )
    if kind not in MetricSource.Kind.values:
        raise SourceInvalid(f"unknown source kind {kind!r}; known: {', '.join(MetricSource.Kind)}")
    auth = {"scheme": auth_scheme, "username": auth_username, "secret_ref": auth_secret_ref}
    if problem := _settings_problem(kind=kind, url=url, timeout_seconds=timeout_seconds, auth=auth):
        raise SourceInvalid(problem)
    existing = MetricSource.objects.filter(name=name).first()
    if existing is not None:
        retired = " (retired: its name stays taken)" if existing.is_retired else ""
        raise SourceInvalid(f"a metric source named {name!r} already exists{retired}")
    try:
        # A savepoint: two registrations of one name at once meet at the unique constraint,
        # and the second is a refusal, not a broken transaction.
        with transaction.atomic():
            return MetricSource.objects.create(
                name=name,
                kind=kind,
                url=url,
                auth_header=auth_header,
                auth_scheme=auth_scheme,
                auth_username=auth_username,
                auth_secret_ref=auth_secret_ref,
                timeout_seconds=timeout_seconds,
                verify_tls=verify_tls,
            )
    except IntegrityError:
        raise SourceInvalid(f"a metric source named {name!r} already exists") from None


def metric_source_locked(*, name: str) -> MetricSource:
    """The Prometheus source `name`, locked for a change, or SourceInvalid saying why not."""
    source = MetricSource.objects.select_for_update().filter(name=name).first()
    if source is None:
        raise SourceNotFound(f"no metric source named {name!r}")
    if source.kind != MetricSource.Kind.PROMETHEUS:
        raise SourceInvalid(f"metric source {name!r} is the built-in store, not Prometheus")
    return source


@transaction.atomic
def metric_source_update(*, name: str, changes: dict[str, Any]) -> tuple[MetricSource, dict]:
    """Change a Prometheus source's settings (EDITABLE). Returns it and {field: [before, after]}
    of what changed (empty when nothing did). Setting credentials clears a legacy auth header.
    No ledger entry: callers above record it."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise SourceInvalid(
            f"cannot change {', '.join(unknown)}; a source's name and kind stay, the editable "
            f"settings are {', '.join(EDITABLE)}"
        )
    source = metric_source_locked(name=name)
    if source.is_retired:
        raise SourceInvalid(f"metric source {name!r} is retired; register a new one instead")
    after = {key: changes.get(key, getattr(source, key)) for key in EDITABLE}
    if not isinstance(after["url"], str) or not all(
        isinstance(after[key], str) for key in ("auth_scheme", "auth_username", "auth_secret_ref")
    ):
        raise SourceInvalid("url, auth_scheme, auth_username and auth_secret_ref are text")
    if not isinstance(after["verify_tls"], bool):
        raise SourceInvalid("verify_tls is true or false")
    if after["auth_scheme"] == MetricSource.AuthScheme.NONE and "auth_scheme" in changes:
        # Switching credentials off takes the reference and username with it.
        after["auth_username"] = after["auth_secret_ref"] = ""
    auth = {
        "scheme": after["auth_scheme"],
        "username": after["auth_username"],
        "secret_ref": after["auth_secret_ref"],
    }
    if problem := _settings_problem(
        kind=source.kind, url=after["url"], timeout_seconds=after["timeout_seconds"], auth=auth
    ):
        raise SourceInvalid(problem)
    changed = {
        key: [getattr(source, key), value]
        for key, value in after.items()
        if getattr(source, key) != value
    }
    auth_changed = any(key.startswith("auth_") for key in changed)
    if auth_changed and source.auth_header:
        source.auth_header = ""
        changed["auth_header"] = ["(legacy header)", ""]
    if not changed:
        return source, {}
    for key in EDITABLE:
        setattr(source, key, after[key])
    source.save()
    return source, changed


@transaction.atomic
def metric_source_mark_retired(
    *, name: str, now: datetime | None = None
) -> tuple[MetricSource, bool]:
    """Retire a Prometheus source: nothing new may name it. Returns it and whether this call
    retired it (False when it already was: a second click changes nothing). No ledger entry:
    callers above record it."""
    source = metric_source_locked(name=name)
    if source.is_retired:
        return source, False
    source.retired_at = now or timezone.now()
    source.save(update_fields=["retired_at"])
    return source, True


@transaction.atomic
def metric_source_declare(*, name: str, url: str) -> tuple[MetricSource, str]:
    """An OpenSLO DataSource: create the Prometheus source `name`, or point it at `url`. Returns
    it and "created", "updated" or "unchanged". No ledger entry: callers above record it."""
    if not MetricSource.objects.filter(name=name).exists():
        return metric_source_create(
            name=name, kind=MetricSource.Kind.PROMETHEUS, url=url
        ), "created"
    source, changed = metric_source_update(name=name, changes={"url": url})
    return source, "updated" if changed else "unchanged"


def prometheus_source_names(*, retired: bool = False) -> list[str]:
    """The Prometheus sources new SLOs and steps may name (or, with `retired`, the retired ones
    they may not), by name."""
    return list(
        MetricSource.objects.filter(
            kind=MetricSource.Kind.PROMETHEUS, retired_at__isnull=not retired
        )
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
    if found.is_retired and not SLO.objects.filter(name=spec.name, source=found).exists():
        others = ", ".join(prometheus_source_names())
        return [
            (
                where,
                f"metric source {source!r} is retired (since {found.retired_at:%Y-%m-%d}): only "
                f"SLOs that already read it may keep it; choose another "
                f"({others or 'none is registered'})",
            )
        ]
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
