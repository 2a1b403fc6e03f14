"""The metric sources JSON API (docs/metric-sources.md, stepwise/openapi.yaml): list and read
with `sources:read`; register, change, test and retire with `sources:write`. Errors are JSON with a reason: 400 for
input, 403 for permission, 404 for an unknown source. A secret is never in an answer."""

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse

from core.http import BadBody, api_endpoint, json_object_body, refusal_response
from leadership.selectors import metric_source_as_dict, metric_source_users, metric_sources_listed
from leadership.services import metric_source_edit, metric_source_register, metric_source_retire
from signals.models import MetricSource
from signals.prometheus import PROBE_QUERY, prometheus_probe
from signals.services import EDITABLE, SourceInvalid, SourceNotFound

READ, WRITE = "sources:read", "sources:write"
READ_PERMISSION = "signals.view_metricsource"
WRITE_PERMISSION = "signals.manage_metric_source"
ORIGIN = "api"
REGISTER_FIELDS = {"name", *EDITABLE}


def _body(request: HttpRequest, allowed: set[str]) -> dict[str, Any]:
    body = json_object_body(request)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadBody(
            400, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )
    return body


def _answered(call: Callable[[], JsonResponse]) -> JsonResponse:
    try:
        return call()
    except BadBody as exc:
        return exc.response()
    except SourceInvalid as exc:
        return refusal_response(exc)


def _source(name: str) -> MetricSource:
    source = MetricSource.objects.filter(name=name).first()
    if source is None:
        raise SourceNotFound(f"no metric source named {name!r}")
    return source


def _shown(source: MetricSource) -> dict[str, Any]:
    return metric_source_as_dict(source, users=metric_source_users(source))


@api_endpoint(method="GET", scope=READ, permission=READ_PERMISSION)
def metric_sources_api(request: HttpRequest) -> JsonResponse:
    """Every source with who reads it: active ones first, then retired."""
    listed = metric_sources_listed()
    return JsonResponse({"sources": [metric_source_as_dict(s, users=u) for s, u in listed]})


@api_endpoint(method="POST", scope=WRITE, permission=WRITE_PERMISSION)
def metric_source_register_api(request: HttpRequest) -> JsonResponse:
    """Register a Prometheus source: 201 with it."""

    def call() -> JsonResponse:
        body = _body(request, REGISTER_FIELDS)
        for key in ("name", "url", "auth_scheme", "auth_username", "auth_secret_ref"):
            if key in body and not isinstance(body[key], str):
                raise BadBody(400, f"{key}: must be a string")
        if "verify_tls" in body and not isinstance(body["verify_tls"], bool):
            raise BadBody(400, "verify_tls: must be true or false")
        source = metric_source_register(
            actor=request.user, origin=ORIGIN, **{"name": "", "url": ""} | body
        )
        return JsonResponse(_shown(source), status=201)

    return _answered(call)


@api_endpoint(method="GET", scope=READ, permission=READ_PERMISSION)
def metric_source_api(request: HttpRequest, name: str) -> JsonResponse:
    """One source with who reads it."""
    return _answered(lambda: JsonResponse(_shown(_source(name))))


@api_endpoint(method="POST", scope=WRITE, permission=WRITE_PERMISSION)
def metric_source_edit_api(request: HttpRequest, name: str) -> JsonResponse:
    """Change a source's settings (the fields of EDITABLE): 200 with it and `changed`."""

    def call() -> JsonResponse:
        changes = _body(request, set(EDITABLE))
        source, changed = metric_source_edit(
            actor=request.user, origin=ORIGIN, name=name, changes=changes
        )
        return JsonResponse({**_shown(source), "changed": sorted(changed)})

    return _answered(call)


@api_endpoint(method="POST", scope=WRITE, permission=WRITE_PERMISSION)
def metric_source_test_api(request: HttpRequest, name: str) -> JsonResponse:
    """One live query ({"query": PromQL}, default count(up)), answered within seconds: 200 with
    the value, or 200 with ok false and the source's error (the test ran; the source failed)."""

    def call() -> JsonResponse:
        body = _body(request, {"query"}) if request.body.strip() else {}
        query = body.get("query", PROBE_QUERY)
        if not isinstance(query, str):
            raise BadBody(400, "query: must be a string of PromQL")
        source = _source(name)
        if source.kind != MetricSource.Kind.PROMETHEUS:
            raise SourceInvalid(f"metric source {name!r} is the built-in store, not Prometheus")
        probe = prometheus_probe(source=source, promql=query)
        return JsonResponse(
            {
                "source": source.name,
                "query": probe.query,
                "ok": probe.ok,
                "value": probe.value,
                "error": probe.error,
                "seconds": round(probe.seconds, 3),
            }
        )

    return _answered(call)


@api_endpoint(method="POST", scope=WRITE, permission=WRITE_PERMISSION)
def metric_source_retire_api(request: HttpRequest, name: str) -> JsonResponse:
    """Retire: 200 with the source and `warning` naming who still reads it."""

    def call() -> JsonResponse:
        source, users = metric_source_retire(actor=request.user, origin=ORIGIN, name=name)
        warning = (
            f"still read by {', '.join(users)}: they keep reading it until changed" if users else ""
        )
        return JsonResponse({**metric_source_as_dict(source, users=users), "warning": warning})

    return _answered(call)
