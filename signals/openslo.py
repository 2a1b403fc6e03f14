"""OpenSLO v1 in and out: YAML text <-> SLOSpec. Pure: no database, no models.

Supported: `kind: SLO` with an inline `indicator` or an `indicatorRef` to a `kind: SLI` of the same
file; ratio and threshold SLIs read from a Prometheus source (`type: Prometheus`, named by
`metricSourceRef`, by the `stepwise.dev/metric-source` annotation, or the only one there is) or
from the built-in store (`type: Stepwise`); `kind: DataSource` declares Prometheus sources.
Anything else is refused by path, never dropped: see docs/openslo.md.
"""

import math
import re
import reprlib
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from core.text import unsafe_text
from signals.measurements import MeasurementInvalid, duration_seconds, duration_spec
from signals.selectors import MAX_WINDOW_SECONDS, PERCENTILES, QueryInvalid, matchers_parse
from signals.services import METRIC_NAME, url_problem
from signals.slo_spec import (
    BUDGETING,
    BUILTIN,
    CALENDAR_UNITS,
    THRESHOLD_OPS,
    MetricRef,
    SLISpec,
    SLOInvalid,
    SLOSpec,
    sli_warnings,
)

API_VERSION = "openslo/v1"
OWNER_ANNOTATION = "stepwise.dev/owner"
ALERT_MIN_EVENTS_ANNOTATION = "stepwise.dev/alert-min-events"
METRIC_SOURCE_ANNOTATION = "stepwise.dev/metric-source"
THRESHOLD_AGGREGATIONS = (*PERCENTILES, "avg", "max", "min")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DURATION = re.compile(r"([0-9]+)([a-zA-Z]+)")
_WINDOW_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400}
_ROLLING_UNITS = ("m", "h", "d", "w")
_SLICE_SECONDS = 60.0
_DEFAULT_ALERT_MIN_EVENTS = SLOSpec.__dataclass_fields__["alert_min_events"].default
_MAX_SOURCE_NAME = 100  # MetricSource.name's max_length
# What the SLO row stores (signals.models.SLO): longer text is refused at its path, not cut.
_MAX_TEXT = {"service": 80, "owner": 80, "displayName": 200, "objectiveName": 100}
_MAX_ALERT_MIN_EVENTS = 1_000_000_000

_REFUSED_KINDS = {
    "Service": "Stepwise has no Service objects; an SLO names its service in spec.service",
    "AlertPolicy": (
        "Stepwise alerts on every SLO with multiwindow burn rates (SRE Workbook windows); "
        "alert policies are not read from files"
    ),
    "AlertCondition": (
        "Stepwise alerts on every SLO with multiwindow burn rates (SRE Workbook windows); "
        "alert conditions are not read from files"
    ),
    "AlertNotificationTarget": (
        "pages go through Stepwise's incident command, not per-SLO notification targets"
    ),
}
_COMPOSITE = "composite objectives are not supported; one SLO has one indicator"

_CREDENTIALS = (
    "credentials are not read from files: register them with the source (Metric sources page, "
    "manage.py metric_source, /api/metric-sources) as an env: reference"
)
# A metric without a metricSourceRef, before it is matched with a Prometheus source.
_UNRESOLVED = ""

Problems = list[tuple[str, str]]


@dataclass(frozen=True)
class DataSourceSpec:
    """A `kind: DataSource` of the file: a Prometheus source to create, or to point elsewhere."""

    name: str
    url: str
    path: str  # documents[N], for problems found against the database


@dataclass(frozen=True)
class OpenSLOFile:
    slos: list[SLOSpec]
    data_sources: list[DataSourceSpec] = field(default_factory=list)
    # (path, reason): accepted, but the numbers are likely not what was meant.
    warnings: list[tuple[str, str]] = field(default_factory=list)


def openslo_parse(
    text: str,
    *,
    prometheus_sources: Collection[str] = (),
    retired_sources: Collection[str] = (),
) -> OpenSLOFile:
    """The SLOs and data sources of an OpenSLO v1 file (one or more YAML documents), or
    SLOInvalid with every problem found, each with its path (`documents[0].spec.objectives[0]
    .target`). `prometheus_sources` are the names of the registered Prometheus sources a metric
    without a metricSourceRef may read, with the file's own DataSources; the annotation may also
    name one of `retired_sources` (whether that SLO may keep reading it is the importer's call)."""
    documents = _documents_load(text)
    unsafe = unsafe_text(documents, root="documents")
    if unsafe:
        raise SLOInvalid([unsafe])
    problems: Problems = []
    slis: dict[str, SLISpec | None] = {}
    sli_paths: dict[str, str] = {}
    slo_documents: list[tuple[str, dict[str, Any]]] = []
    data_sources: dict[str, DataSourceSpec] = {}
    for index, document in enumerate(documents):
        path = f"documents[{index}]"
        if document is None:  # an empty document, e.g. after a trailing `---`
            continue
        if not isinstance(document, dict):
            problems.append((path, "a document is a mapping (apiVersion, kind, metadata, spec)"))
            continue
        kind = _document_check(document, path, problems)
        if kind == "SLI":
            name, sli = _sli_parse(document.get("metadata"), document.get("spec"), path, problems)
            if name in sli_paths:
                problems.append(
                    (f"{path}.metadata.name", f"duplicate SLI name; {sli_paths[name]} has it too")
                )
            elif name:
                slis[name], sli_paths[name] = sli, path
        elif kind == "SLO":
            slo_documents.append((path, document))
        elif kind == "DataSource" and (source := _data_source_parse(document, path, problems)):
            if source.name in data_sources:
                problems.append(
                    (
                        f"{path}.metadata.name",
                        f"duplicate DataSource name; {data_sources[source.name].path} has it too",
                    )
                )
            else:
                data_sources[source.name] = source
    if not any(isinstance(d, dict) and d.get("kind") in ("SLO", "DataSource") for d in documents):
        problems.append(("documents", "no SLO or DataSource document in the file"))

    specs: list[SLOSpec] = []
    warnings: Problems = []
    slo_paths: dict[str, str] = {}
    candidates = sorted({*prometheus_sources, *data_sources})
    nameable = sorted({*candidates, *retired_sources})
    for path, document in slo_documents:
        name = _metadata(document).get("name")
        if isinstance(name, str) and name in slo_paths:
            problems.append(
                (f"{path}.metadata.name", f"duplicate SLO name; {slo_paths[name]} has it too")
            )
        elif isinstance(name, str):
            slo_paths[name] = path
        parsed = _slo_parse(document, path, slis, sli_paths, candidates, nameable, problems)
        if parsed:
            spec, indicator_path = parsed
            specs.append(spec)
            warnings += [
                (f"{_metric_path(spec.indicator, indicator_path, key)}.spec", reason)
                for key, reason in sli_warnings(spec.indicator)
            ]
    if problems:
        raise SLOInvalid(problems)
    return OpenSLOFile(slos=specs, data_sources=list(data_sources.values()), warnings=warnings)


def openslo_export(specs: list[SLOSpec]) -> str:
    """OpenSLO v1 YAML, one `kind: SLO` document per spec with its indicator inline; parsing it
    gives the same specs back."""
    return yaml.safe_dump_all(
        [_slo_document(spec) for spec in specs],
        sort_keys=False,
        allow_unicode=True,
        width=10_000,  # PromQL stays on one line instead of being folded
    )


# --- loading -------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """safe_load_all's loader, except that a repeated key is an error: PyYAML would keep the
    last one silently, and a second `target:` must not quietly win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        # OpenSLO files do not need aliases, and an alias of aliases expands exponentially.
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "aliases (*name) are not supported: write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _documents_load(text: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark else "text"
        reason = ": ".join(part for part in (exc.context, exc.problem) if part)
        raise SLOInvalid([(where, f"YAML syntax error: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise SLOInvalid([("text", f"YAML syntax error: {exc}")]) from None
    except RecursionError:
        raise SLOInvalid([("text", "nested too deeply to read")]) from None


def _document_check(document: dict[Any, Any], path: str, problems: Problems) -> str:
    """The kind to read on ("SLO", "SLI"), or "" when the document cannot be read as one."""
    _fields(document, path, problems, allowed=("apiVersion", "kind", "metadata", "spec"))
    version = document.get("apiVersion")
    if version is None:
        problems.append((f"{path}.apiVersion", f"required: {API_VERSION}"))
    elif version != API_VERSION:
        problems.append((f"{path}.apiVersion", f"must be {API_VERSION} (got {version!r})"))
    kind = document.get("kind")
    if kind is None or not isinstance(kind, str):
        problems.append((f"{path}.kind", "required: SLO, SLI or DataSource"))
        return ""
    if kind in _REFUSED_KINDS:
        problems.append((f"{path}.kind", f"not supported: {_REFUSED_KINDS[kind]}"))
        return ""
    if kind not in ("SLO", "SLI", "DataSource"):
        problems.append(
            (f"{path}.kind", f"unknown kind {kind!r}; this file may hold SLO, SLI and DataSource")
        )
        return ""
    # Another version has another shape: its fields would only add noise to the report.
    return kind if version in (None, API_VERSION) else ""


# --- small checks --------------------------------------------------------------------------------


def _join(path: str, key: Any) -> str:
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]" if not isinstance(key, str) else f'{path}["{key}"]'


def _fields(
    raw: dict[Any, Any],
    path: str,
    problems: Problems,
    *,
    allowed: tuple[str, ...],
    refused: dict[str, str] | None = None,
) -> None:
    for key in raw:
        if key not in allowed:
            why = (refused or {}).get(key)
            problems.append((_join(path, key), f"not supported: {why}" if why else "not supported"))


def _mapping(
    raw: Any,
    path: str,
    problems: Problems,
    *,
    allowed: tuple[str, ...],
    refused: dict[str, str] | None = None,
    required: bool = True,
) -> dict[Any, Any] | None:
    if raw is None:
        if required:
            problems.append((path, "required"))
        return None
    if not isinstance(raw, dict):
        problems.append((path, f"must be a mapping ({', '.join(allowed)})"))
        return None
    _fields(raw, path, problems, allowed=allowed, refused=refused)
    return raw


def _text(
    raw: dict[Any, Any],
    key: str,
    path: str,
    problems: Problems,
    *,
    required: bool,
    max_length: int | None = None,
) -> str:
    value = raw.get(key)
    if value is None:
        if required:
            problems.append((_join(path, key), "required"))
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        problems.append(
            (_join(path, key), "must be non-empty text" if required else "must be text")
        )
        return ""
    if max_length is not None and len(value) > max_length:
        problems.append((_join(path, key), f"at most {max_length} characters (got {len(value)})"))
        return ""
    return value


def _shown(value: Any) -> str:
    """A value quoted back in a problem, cut short: the text came from whoever wrote the file."""
    return reprlib.repr(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float is not a usable number
        return None
    return number if math.isfinite(number) else None


def _metadata(document: dict[Any, Any]) -> dict[Any, Any]:
    metadata = document.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _name(metadata: dict[Any, Any], path: str, problems: Problems) -> str:
    name = _text(metadata, "name", path, problems, required=True)
    if name and (len(name) > 63 or not _DNS_LABEL.fullmatch(name)):
        problems.append(
            (
                f"{path}.name",
                "must be a lowercase DNS label: a-z, 0-9 and '-', starting and ending with a "
                f"letter or digit, at most 63 characters (got {name!r})",
            )
        )
        return ""
    return name


# --- SLI -----------------------------------------------------------------------------------------


def _sli_parse(
    metadata: Any, spec: Any, path: str, problems: Problems
) -> tuple[str, SLISpec | None]:
    """(metadata.name, the SLI) of an SLI document or an inline indicator."""
    before = len(problems)
    name = ""
    meta = _mapping(
        metadata,
        f"{path}.metadata",
        problems,
        allowed=("name", "labels", "annotations"),
        refused={"displayName": "Stepwise shows the SLO's displayName; put it there"},
    )
    if meta is not None:
        name = _name(meta, f"{path}.metadata", problems)
    body = _mapping(
        spec,
        f"{path}.spec",
        problems,
        allowed=("ratioMetric", "thresholdMetric"),
        refused={"description": "Stepwise keeps the SLO's description; put it there"},
    )
    if body is None:
        return name, None
    kinds = [key for key in ("ratioMetric", "thresholdMetric") if key in body]
    if len(kinds) != 1:
        problems.append((f"{path}.spec", "give exactly one of ratioMetric or thresholdMetric"))
        return name, None
    if kinds == ["ratioMetric"]:
        sli = _ratio_parse(body["ratioMetric"], f"{path}.spec.ratioMetric", problems)
    else:
        sli = _threshold_parse(body["thresholdMetric"], f"{path}.spec.thresholdMetric", problems)
    return name, sli if len(problems) == before else None


def _ratio_parse(raw: Any, path: str, problems: Problems) -> SLISpec | None:
    before = len(problems)
    body = _mapping(
        raw,
        path,
        problems,
        allowed=("counter", "good", "bad", "total"),
        refused={
            "raw": "a precomputed ratio cannot be budgeted; give good or bad with total",
            "rawType": "a precomputed ratio cannot be budgeted; give good or bad with total",
        },
    )
    if body is None:
        return None
    counter = body.get("counter", True)
    if not isinstance(counter, bool):
        problems.append((f"{path}.counter", "must be true or false"))
    sides = [key for key in ("good", "bad") if key in body]
    if len(sides) != 1:
        problems.append((path, "give exactly one of good or bad, with total"))
    if "total" not in body:
        problems.append((f"{path}.total", "required"))
    parsed = {
        key: _metric_parse(body[key], f"{path}.{key}", problems, threshold=False)
        for key in ("good", "bad", "total")
        if key in body
    }
    refs = {key: ref for key, ref in parsed.items() if ref is not None}
    if len(problems) > before:
        return None
    named = [(key, source) for key, (source, _) in refs.items() if source != _UNRESOLVED]
    (first_key, source), *others = named or [("", _UNRESOLVED)]
    for key, other in others:
        if other != source:
            problems.append(
                (
                    f"{path}.{key}.metricSource",
                    f"reads {other!r} but {first_key} reads {source!r}; all metrics of one SLI "
                    "read the same source",
                )
            )
            return None
    return SLISpec(
        kind="ratio",
        source=source,
        good=refs["good"][1] if "good" in refs else None,
        bad=refs["bad"][1] if "bad" in refs else None,
        total=refs["total"][1],
        counter=counter,
    )


def _threshold_parse(raw: Any, path: str, problems: Problems) -> SLISpec | None:
    parsed = _metric_parse(raw, path, problems, threshold=True)
    if parsed is None:
        return None
    source, metric = parsed
    return SLISpec(kind="threshold", source=source, metric=metric)


def _metric_parse(
    raw: Any, path: str, problems: Problems, *, threshold: bool
) -> tuple[str, MetricRef] | None:
    """(source, the series) of `{metricSource: {metricSourceRef, type, spec}}`."""
    before = len(problems)
    body = _mapping(raw, path, problems, allowed=("metricSource",))
    if body is None:
        return None
    path = f"{path}.metricSource"
    source = _mapping(
        body.get("metricSource"),
        path,
        problems,
        allowed=("metricSourceRef", "type", "spec"),
    )
    if source is None:
        return None
    kind = source.get("type")
    if kind is None:
        problems.append((f"{path}.type", "required: Prometheus or Stepwise (the built-in store)"))
        return None
    if kind == "Prometheus":
        parsed = _prometheus_parse(source, path, problems)
    elif kind == "Stepwise":
        parsed = _builtin_parse(source, path, problems, threshold=threshold)
    else:
        problems.append(
            (
                f"{path}.type",
                f"not supported: {kind!r}; Stepwise reads Prometheus (metricSourceRef names a "
                "registered source) or its built-in store (type: Stepwise)",
            )
        )
        return None
    return parsed if len(problems) == before else None


def _prometheus_parse(
    source: dict[Any, Any], path: str, problems: Problems
) -> tuple[str, MetricRef] | None:
    """(the source's name, or _UNRESOLVED when the metric leaves metricSourceRef out: the SLO
    picks it), the query)."""
    ref = source.get("metricSourceRef", _UNRESOLVED)
    if not isinstance(ref, str) or (ref != _UNRESOLVED and not ref.strip()):
        problems.append(
            (
                f"{path}.metricSourceRef",
                "must be the name of a registered Prometheus metric source, or left out",
            )
        )
        return None
    if ref == BUILTIN:
        problems.append(
            (f"{path}.metricSourceRef", f"{BUILTIN!r} is the built-in store: use type: Stepwise")
        )
    elif len(ref) > _MAX_SOURCE_NAME:
        problems.append(
            (f"{path}.metricSourceRef", f"a source name is at most {_MAX_SOURCE_NAME} characters")
        )
    spec = _mapping(source.get("spec"), f"{path}.spec", problems, allowed=("query",))
    if spec is None:
        return None
    query = _text(spec, "query", f"{path}.spec", problems, required=True)
    return (ref, MetricRef(query=query.strip())) if query else None


def _builtin_parse(
    source: dict[Any, Any], path: str, problems: Problems, *, threshold: bool
) -> tuple[str, MetricRef] | None:
    ref = source.get("metricSourceRef", BUILTIN)
    if ref != BUILTIN:
        problems.append(
            (
                f"{path}.metricSourceRef",
                f"type: Stepwise reads the built-in store: leave metricSourceRef out or say "
                f"{BUILTIN!r} (got {ref!r})",
            )
        )
    spec = _mapping(
        source.get("spec"),
        f"{path}.spec",
        problems,
        allowed=("metric", "matchers", "aggregation") if threshold else ("metric", "matchers"),
        refused={"aggregation": "a ratio counts events; aggregation is for thresholdMetric"},
    )
    if spec is None:
        return None
    spec_path = f"{path}.spec"
    metric = _text(spec, "metric", spec_path, problems, required=True)
    if metric and (len(metric) > 200 or not METRIC_NAME.fullmatch(metric)):
        problems.append(
            (f"{spec_path}.metric", f"{metric!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        )
    matchers = _matchers(spec.get("matchers"), f"{spec_path}.matchers", problems)
    aggregation = ""
    if threshold:
        aggregation = spec.get("aggregation", "p99")
        if aggregation not in THRESHOLD_AGGREGATIONS:
            problems.append(
                (
                    f"{spec_path}.aggregation",
                    f"must be one of {', '.join(THRESHOLD_AGGREGATIONS)} (got {aggregation!r})",
                )
            )
    return BUILTIN, MetricRef(metric=metric, matchers=matchers, aggregation=aggregation)


def _matchers(raw: Any, path: str, problems: Problems) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in raw.items()
    ):
        problems.append(
            (path, 'must map label names to strings, e.g. {service: checkout, "code=~": "5.."}')
        )
        return {}
    try:
        # The store's own reading of matchers: a file is refused exactly when a query would be.
        matchers_parse(raw)
    except QueryInvalid as exc:
        problems.append((path, str(exc)))
        return {}
    return dict(raw)


# --- SLO -----------------------------------------------------------------------------------------


def _slo_parse(
    document: dict[Any, Any],
    path: str,
    slis: dict[str, SLISpec | None],
    sli_paths: dict[str, str],
    candidates: list[str],
    nameable: list[str],
    problems: Problems,
) -> tuple[SLOSpec, str] | None:
    """The SLO, and the path of its indicator (inline, or the SLI document it refers to)."""
    before = len(problems)
    choice: str | None = ""
    fields: dict[str, Any] = {}
    meta = _mapping(
        document.get("metadata"),
        f"{path}.metadata",
        problems,
        allowed=("name", "displayName", "annotations", "labels"),
    )
    if meta is not None:
        fields["name"] = _name(meta, f"{path}.metadata", problems)
        fields["display_name"] = _text(
            meta,
            "displayName",
            f"{path}.metadata",
            problems,
            required=False,
            max_length=_MAX_TEXT["displayName"],
        )
        annotations_path = f"{path}.metadata.annotations"
        fields |= _annotations(meta.get("annotations"), annotations_path, problems)
        choice = _source_choice(
            meta.get("annotations"), annotations_path, nameable, candidates, problems
        )
    spec_path = f"{path}.spec"
    spec = _mapping(
        document.get("spec"),
        spec_path,
        problems,
        allowed=(
            "description",
            "service",
            "indicator",
            "indicatorRef",
            "timeWindow",
            "budgetingMethod",
            "objectives",
        ),
        refused={
            "alertPolicies": (
                "Stepwise alerts on every SLO with multiwindow burn rates (SRE Workbook windows)"
            )
        },
    )
    if spec is None:
        return None
    fields["description"] = _text(spec, "description", spec_path, problems, required=False)
    fields["service"] = _text(
        spec, "service", spec_path, problems, required=True, max_length=_MAX_TEXT["service"]
    )
    indicator_name, indicator = _indicator(spec, spec_path, slis, problems)
    indicator_path = (
        f"{spec_path}.indicator" if "indicator" in spec else sli_paths.get(indicator_name, "")
    )
    if indicator is not None and indicator.source == _UNRESOLVED:
        indicator = (
            None
            if choice is None  # the annotation's problem is the one to fix
            else _source_resolve(indicator, indicator_path, choice, candidates, problems)
        )
    fields |= _window_parse(spec.get("timeWindow"), f"{spec_path}.timeWindow", problems)
    budgeting = spec.get("budgetingMethod")
    if budgeting is None:
        problems.append((f"{spec_path}.budgetingMethod", f"required: {' or '.join(BUDGETING)}"))
    elif budgeting == "RatioTimeslices":
        problems.append(
            (
                f"{spec_path}.budgetingMethod",
                "not supported: RatioTimeslices; use Occurrences (good events over all events) "
                "or Timeslices (good minutes over all minutes)",
            )
        )
    elif budgeting not in BUDGETING:
        problems.append(
            (
                f"{spec_path}.budgetingMethod",
                f"must be {' or '.join(BUDGETING)} (got {budgeting!r})",
            )
        )
    fields |= _objective_parse(
        spec.get("objectives"),
        f"{spec_path}.objectives",
        problems,
        sli_kind=indicator.kind if indicator else "",
        budgeting=budgeting if budgeting in BUDGETING else "",
    )
    if len(problems) > before or indicator is None:
        return None
    spec = SLOSpec(
        indicator=indicator, indicator_name=indicator_name, budgeting=budgeting, **fields
    )
    return spec, indicator_path


def _metric_path(sli: SLISpec, indicator_path: str, key: str) -> str:
    """The path of one metric's metricSource, for a problem or a warning about it."""
    if sli.kind == "threshold":
        return f"{indicator_path}.spec.thresholdMetric.metricSource"
    return f"{indicator_path}.spec.ratioMetric.{key}.metricSource"


def _source_choice(
    raw: Any, path: str, nameable: list[str], candidates: list[str], problems: Problems
) -> str | None:
    """The Prometheus source the stepwise.dev/metric-source annotation names, "" when there is
    no annotation, or None when it names no candidate (reported)."""
    if not isinstance(raw, dict) or METRIC_SOURCE_ANNOTATION not in raw:
        return ""
    choice = raw[METRIC_SOURCE_ANNOTATION]
    if not isinstance(choice, str) or choice not in nameable:
        problems.append(
            (
                _join(path, METRIC_SOURCE_ANNOTATION),
                f"no Prometheus metric source named {_shown(choice)}; choose from "
                f"{', '.join(candidates) or 'none (none is registered or declared in the file)'}",
            )
        )
        return None
    return choice


def _source_resolve(
    sli: SLISpec, indicator_path: str, choice: str, candidates: list[str], problems: Problems
) -> SLISpec | None:
    """The SLI reading the source its metrics left out: the annotation's, or the only one."""
    if choice:
        return replace(sli, source=choice)
    if len(candidates) == 1:
        return replace(sli, source=candidates[0])
    key = next(k for k in ("good", "bad", "total", "metric") if getattr(sli, k) is not None)
    where = f"{_metric_path(sli, indicator_path, key)}.metricSourceRef"
    if not candidates:
        problems.append(
            (
                where,
                "required: no Prometheus metric source is registered; register one (Metric "
                "sources page, manage.py metric_source add) or declare a kind: DataSource in "
                "this file",
            )
        )
    else:
        problems.append(
            (
                where,
                f"required: {len(candidates)} Prometheus metric sources could serve this metric "
                f"({', '.join(candidates)}); name one here or in the SLO's "
                f"{METRIC_SOURCE_ANNOTATION} annotation",
            )
        )
    return None


def _data_source_parse(
    document: dict[Any, Any], path: str, problems: Problems
) -> DataSourceSpec | None:
    """A Prometheus DataSource: its name and `connectionDetails.url`."""
    before = len(problems)
    meta = _mapping(
        document.get("metadata"),
        f"{path}.metadata",
        problems,
        allowed=("name", "displayName", "annotations", "labels"),
    )
    name = _source_name(meta, f"{path}.metadata", problems) if meta is not None else ""
    spec_path = f"{path}.spec"
    spec = _mapping(
        document.get("spec"),
        spec_path,
        problems,
        allowed=("description", "type", "connectionDetails"),
    )
    if spec is None:
        return None
    kind = spec.get("type")
    if kind != "Prometheus":
        problems.append(
            (
                f"{spec_path}.type",
                f"must be Prometheus (got {_shown(kind)}): Stepwise reads Prometheus or its "
                "built-in store, which needs no DataSource",
            )
        )
        return None
    details = _mapping(
        spec.get("connectionDetails"),
        f"{spec_path}.connectionDetails",
        problems,
        allowed=("url",),
        refused=dict.fromkeys(
            ("bearerToken", "token", "username", "password", "headers", "auth"), _CREDENTIALS
        ),
    )
    url = (
        _text(details, "url", f"{spec_path}.connectionDetails", problems, required=True)
        if (details is not None)
        else ""
    )
    if url and (problem := url_problem(url)):
        problems.append((f"{spec_path}.connectionDetails.url", problem))
    if len(problems) > before or not name or not url:
        return None
    return DataSourceSpec(name=name, url=url, path=path)


def _source_name(meta: dict[Any, Any], path: str, problems: Problems) -> str:
    name = _text(meta, "name", path, problems, required=True, max_length=_MAX_SOURCE_NAME)
    if name == BUILTIN:
        problems.append((f"{path}.name", f"{BUILTIN!r} is the built-in store's name"))
        return ""
    return name


def _annotations(raw: Any, path: str, problems: Problems) -> dict[str, Any]:
    """owner and alert_min_events; other annotations are free-form by design and not read."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(key, str) for key in raw):
        problems.append((path, "must map names to text"))
        return {}
    fields: dict[str, Any] = {}
    if OWNER_ANNOTATION in raw:
        owner = raw[OWNER_ANNOTATION]
        if not isinstance(owner, str) or not owner.strip():
            problems.append((_join(path, OWNER_ANNOTATION), "must be non-empty text (a team)"))
        elif len(owner) > _MAX_TEXT["owner"]:
            problems.append(
                (
                    _join(path, OWNER_ANNOTATION),
                    f"at most {_MAX_TEXT['owner']} characters (got {len(owner)})",
                )
            )
        else:
            fields["owner"] = owner
    if ALERT_MIN_EVENTS_ANNOTATION in raw:
        value = raw[ALERT_MIN_EVENTS_ANNOTATION]
        # Annotations are text, but an unquoted 50 in YAML is an int: both mean the same.
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if (
            isinstance(text, str)
            and text.isascii()
            and text.isdigit()
            and 0 < int(text) <= _MAX_ALERT_MIN_EVENTS
        ):
            fields["alert_min_events"] = int(text)
        else:
            problems.append(
                (
                    _join(path, ALERT_MIN_EVENTS_ANNOTATION),
                    f'must be a whole number from 1 to {_MAX_ALERT_MIN_EVENTS:,}, e.g. "50" '
                    f"(got {_shown(value)})",
                )
            )
    return fields


def _indicator(
    spec: dict[Any, Any], path: str, slis: dict[str, SLISpec | None], problems: Problems
) -> tuple[str, SLISpec | None]:
    """(metadata.name, the SLI) of an inline indicator or the SLI document indicatorRef names."""
    if ("indicator" in spec) == ("indicatorRef" in spec):
        problems.append((path, "give exactly one of indicator or indicatorRef"))
        return "", None
    if "indicator" in spec:
        indicator_path = f"{path}.indicator"
        inline = _mapping(spec["indicator"], indicator_path, problems, allowed=("metadata", "spec"))
        if inline is None:
            return "", None
        return _sli_parse(inline.get("metadata"), inline.get("spec"), indicator_path, problems)
    ref = spec["indicatorRef"]
    if not isinstance(ref, str) or ref not in slis:
        problems.append((f"{path}.indicatorRef", f"no SLI named {ref!r} in this file"))
        return "", None
    return ref, slis[ref]  # an SLI with problems has reported them at its own path


def _window_parse(raw: Any, path: str, problems: Problems) -> dict[str, Any]:
    if raw is None:
        problems.append((path, "required: one window, e.g. [{duration: 28d, isRolling: true}]"))
        return {}
    if not isinstance(raw, list) or len(raw) != 1:
        problems.append((path, "give exactly one time window"))
        return {}
    path = f"{path}[0]"
    entry = _mapping(raw[0], path, problems, allowed=("duration", "isRolling", "calendar"))
    if entry is None:
        return {}
    # OpenSLO: when isRolling is left out, a window with a calendar is calendar-aligned.
    rolling = entry.get("isRolling", "calendar" not in entry)
    if not isinstance(rolling, bool):
        problems.append((f"{path}.isRolling", "must be true or false"))
        return {}
    fields: dict[str, Any] = {"rolling": rolling}
    if rolling and "calendar" in entry:
        problems.append((f"{path}.calendar", "goes with isRolling: false"))
    elif not rolling:
        fields |= _calendar_parse(entry.get("calendar"), f"{path}.calendar", problems)
    text = _text(entry, "duration", path, problems, required=True)
    if not text:
        return fields
    match = _DURATION.fullmatch(text.strip())
    units = _ROLLING_UNITS if rolling else CALENDAR_UNITS
    if not match:
        problems.append(
            (f"{path}.duration", f"must be a whole number and a unit, e.g. 28d (got {text!r})")
        )
        return fields
    count, unit = int(match.group(1)), match.group(2)
    if unit not in units:
        reason = (
            "a rolling window is a whole number of minutes: use m, h, d or w"
            if rolling
            else "a calendar window is counted in d, w or M"
        )
        problems.append((f"{path}.duration", f"{reason} (got {text!r})"))
        return fields
    seconds = count * _WINDOW_UNITS[unit]
    if seconds <= 0:
        problems.append((f"{path}.duration", "must be longer than 0"))
    elif seconds > MAX_WINDOW_SECONDS:
        problems.append(
            (
                f"{path}.duration",
                f"must be at most {duration_spec(MAX_WINDOW_SECONDS)} (a month counts as 30d): "
                f"Stepwise keeps that much history (got {text!r})",
            )
        )
    return fields | {"window_text": f"{count}{unit}", "window_seconds": seconds}


def _calendar_parse(raw: Any, path: str, problems: Problems) -> dict[str, Any]:
    calendar = _mapping(raw, path, problems, allowed=("startTime", "timeZone"))
    if calendar is None:
        return {}
    fields: dict[str, Any] = {}
    start = calendar.get("startTime")
    # Unquoted, `2026-01-01 00:00:00` is a YAML timestamp: read it back as the text it was.
    if isinstance(start, datetime):
        start = start.isoformat(sep=" ")
    elif isinstance(start, date):
        start = start.isoformat()
    if start is None:
        problems.append((f"{path}.startTime", 'required, e.g. "2026-01-01 00:00:00"'))
    elif not isinstance(start, str) or not _is_datetime(start):
        problems.append(
            (
                f"{path}.startTime",
                f'must be a date and time like "2026-01-01 00:00:00" ({_shown(start)})',
            )
        )
    elif datetime.fromisoformat(start).tzinfo is not None:
        problems.append(
            (
                f"{path}.startTime",
                f"a wall-clock time without an offset: timeZone says where (got {start!r})",
            )
        )
    else:
        fields["calendar_start"] = datetime.fromisoformat(start).isoformat(sep=" ")
    zone = calendar.get("timeZone")
    if zone is None:
        problems.append((f"{path}.timeZone", "required: an IANA time zone, e.g. UTC"))
    elif not isinstance(zone, str) or not _is_zone(zone):
        problems.append(
            (f"{path}.timeZone", f"must be an IANA time zone like UTC or Europe/Paris ({zone!r})")
        )
    else:
        fields["calendar_timezone"] = zone
    return fields


def _is_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _objective_parse(
    raw: Any, path: str, problems: Problems, *, sli_kind: str, budgeting: str
) -> dict[str, Any]:
    if raw is None:
        problems.append((path, "required: one objective, e.g. [{target: 0.999}]"))
        return {}
    if not isinstance(raw, list) or len(raw) != 1:
        problems.append((path, "give exactly one objective"))
        return {}
    path = f"{path}[0]"
    objective = _mapping(
        raw[0],
        path,
        problems,
        allowed=(
            "displayName",
            "target",
            "targetPercent",
            "op",
            "value",
            "timeSliceTarget",
            "timeSliceWindow",
        ),
        refused={
            "indicator": _COMPOSITE,
            "indicatorRef": _COMPOSITE,
            "compositeWeight": _COMPOSITE,
        },
    )
    if objective is None:
        return {}
    fields: dict[str, Any] = {
        "objective_name": _text(
            objective,
            "displayName",
            path,
            problems,
            required=False,
            max_length=_MAX_TEXT["objectiveName"],
        )
    }
    fields |= _target_parse(objective, path, problems)
    if sli_kind == "threshold":
        fields |= _threshold_objective_parse(objective, path, problems)
    elif sli_kind == "ratio":
        for key in ("op", "value"):
            if key in objective:
                problems.append(
                    (f"{path}.{key}", "goes with a thresholdMetric SLI; a ratio has its target")
                )
    if budgeting == "Timeslices":
        fields |= _time_slices_parse(objective, path, problems)
    elif budgeting == "Occurrences":
        for key in ("timeSliceTarget", "timeSliceWindow"):
            if key in objective:
                problems.append((f"{path}.{key}", "goes with budgetingMethod: Timeslices"))
    return fields


def _target_parse(objective: dict[Any, Any], path: str, problems: Problems) -> dict[str, Any]:
    if "target" in objective and "targetPercent" in objective:
        problems.append((path, "give target or targetPercent, not both"))
        return {}
    if "target" in objective:
        target = _number(objective["target"])
        if target is None or not 0 < target < 1:
            problems.append(
                (
                    f"{path}.target",
                    f"must be a fraction between 0 and 1 (exclusive), e.g. 0.999 "
                    f"(got {objective['target']!r})",
                )
            )
            return {}
        return {"objective": target}
    if "targetPercent" in objective:
        percent = _number(objective["targetPercent"])
        if percent is None or not 0 < percent < 100:
            problems.append(
                (
                    f"{path}.targetPercent",
                    f"must be a percentage between 0 and 100 (exclusive), e.g. 99.9 "
                    f"(got {objective['targetPercent']!r})",
                )
            )
            return {}
        # Through Decimal: 99.9 / 100 is 0.9990000000000001 in binary floating point.
        objective_value = float(Decimal(str(percent)) / 100)
        if not 0 < objective_value < 1:  # 5e-324 passes as a percent but is 0 as a fraction
            problems.append(
                (f"{path}.targetPercent", f"too close to 0 or 100 to store (got {percent!r})")
            )
            return {}
        return {"objective": objective_value}
    problems.append((f"{path}.target", "required (or targetPercent)"))
    return {}


def _threshold_objective_parse(
    objective: dict[Any, Any], path: str, problems: Problems
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    op = objective.get("op")
    if op is None:
        problems.append((f"{path}.op", f"required for a threshold SLI: {', '.join(THRESHOLD_OPS)}"))
    elif not isinstance(op, str) or op not in THRESHOLD_OPS:
        problems.append((f"{path}.op", f"must be one of {', '.join(THRESHOLD_OPS)} (got {op!r})"))
    else:
        fields["threshold_op"] = op
    if "value" not in objective:
        problems.append((f"{path}.value", "required for a threshold SLI: the threshold"))
    elif (value := _number(objective["value"])) is None:
        problems.append((f"{path}.value", f"must be a number (got {objective['value']!r})"))
    else:
        fields["threshold"] = value
    return fields


def _time_slices_parse(objective: dict[Any, Any], path: str, problems: Problems) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "timeSliceTarget" not in objective:
        problems.append((f"{path}.timeSliceTarget", "required with Timeslices, e.g. 0.95"))
    else:
        target = _number(objective["timeSliceTarget"])
        if target is None or not 0 < target <= 1:
            problems.append(
                (
                    f"{path}.timeSliceTarget",
                    f"must be a fraction in (0, 1], e.g. 0.95 (got {objective['timeSliceTarget']!r})",
                )
            )
        else:
            fields["time_slice_target"] = target
    if "timeSliceWindow" not in objective:
        problems.append((f"{path}.timeSliceWindow", "required with Timeslices: 1m"))
        return fields
    window = objective["timeSliceWindow"]
    try:
        seconds = duration_seconds(window, field="timeSliceWindow")
    except (MeasurementInvalid, OverflowError):
        seconds = None
    if seconds != _SLICE_SECONDS:
        problems.append(
            (
                f"{path}.timeSliceWindow",
                f"not supported: {window!r}; Stepwise rolls up per minute, so a time slice is "
                "one minute (1m)",
            )
        )
    return fields


# --- export --------------------------------------------------------------------------------------


def _slo_document(spec: SLOSpec) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": spec.name}
    if spec.display_name:
        metadata["displayName"] = spec.display_name
    annotations = {}
    if spec.owner:
        annotations[OWNER_ANNOTATION] = spec.owner
    if spec.alert_min_events != _DEFAULT_ALERT_MIN_EVENTS:
        annotations[ALERT_MIN_EVENTS_ANNOTATION] = str(spec.alert_min_events)
    if annotations:
        metadata["annotations"] = annotations
    body: dict[str, Any] = {}
    if spec.description:
        body["description"] = spec.description
    body["service"] = spec.service
    body["indicator"] = {
        # OpenSLO needs a name on the indicator; a spec made elsewhere may not carry one.
        "metadata": {"name": spec.indicator_name or spec.name},
        "spec": _sli_document(spec.indicator),
    }
    window: dict[str, Any] = {
        "duration": spec.window_text or duration_spec(spec.window_seconds),
        "isRolling": spec.rolling,
    }
    if not spec.rolling:
        window["calendar"] = {"startTime": spec.calendar_start, "timeZone": spec.calendar_timezone}
    body["timeWindow"] = [window]
    body["budgetingMethod"] = spec.budgeting
    body["objectives"] = [_objective_document(spec)]
    return {"apiVersion": API_VERSION, "kind": "SLO", "metadata": metadata, "spec": body}


def _sli_document(sli: SLISpec) -> dict[str, Any]:
    if sli.kind == "threshold":
        assert sli.metric is not None
        return {"thresholdMetric": _metric_document(sli.source, sli.metric)}
    ratio: dict[str, Any] = {"counter": sli.counter}
    for key, ref in (("good", sli.good), ("bad", sli.bad), ("total", sli.total)):
        if ref is not None:
            ratio[key] = _metric_document(sli.source, ref)
    return {"ratioMetric": ratio}


def _metric_document(source: str, ref: MetricRef) -> dict[str, Any]:
    if source != BUILTIN:
        spec: dict[str, Any] = {"query": ref.query}
        return {"metricSource": {"metricSourceRef": source, "type": "Prometheus", "spec": spec}}
    spec = {"metric": ref.metric}
    if ref.matchers:
        spec["matchers"] = dict(ref.matchers)
    if ref.aggregation:
        spec["aggregation"] = ref.aggregation
    return {"metricSource": {"type": "Stepwise", "spec": spec}}


def _objective_document(spec: SLOSpec) -> dict[str, Any]:
    objective: dict[str, Any] = {}
    if spec.objective_name:
        objective["displayName"] = spec.objective_name
    objective["target"] = spec.objective
    if spec.indicator.kind == "threshold":
        objective["op"] = spec.threshold_op
        value = spec.threshold
        objective["value"] = int(value) if value is not None and value.is_integer() else value
    if spec.budgeting == "Timeslices":
        objective["timeSliceTarget"] = spec.time_slice_target
        objective["timeSliceWindow"] = duration_spec(_SLICE_SECONDS)
    return objective
