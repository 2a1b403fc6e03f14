"""The API answers like an API on every route, and says so in its OpenAPI document: the routes and
the document list the same endpoints with the same method, scope and permission; a missing or bad
token gets 401 JSON with a `WWW-Authenticate` challenge (never the CSRF page, never a session);
an under-scoped token or an unpermitted user gets 403 naming what is missing; the wrong method
gets 405 JSON; and a call each endpoint can answer gets a documented status whose body matches
the documented schema."""

import itertools
import json
import re
from typing import Any

import jsonschema
import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_spec_validator import validate

from accounts.services import api_token_create
from incidents.services import incident_declare
from rollouts.models import Step
from rollouts.ofrep import PERMISSION as OFREP_PERMISSION
from rollouts.ofrep import SCOPE as OFREP_SCOPE
from rollouts.ofrep import ofrep_app
from rollouts.services.plan_apply import plan_apply
from signals.services import metric_source_create
from stepwise.views import openapi_document
from tests.asgi_client import AsgiClient
from tests.factories import UserFactory
from tests.rollouts.flag_factories import flag_make
from tests.rollouts.plan_factories import plan_yaml, step_doc

pytestmark = pytest.mark.django_db

# Served ahead of Django by the ASGI app in rollouts/ofrep.py, so not in Django's URL patterns.
OFREP_PATHS = {"/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/{key}"}
PUBLIC = {"/api/schema"}


def _django_api_routes() -> dict[str, Any]:
    """{'/api/incidents/{incident_id}': view} for every Django route under /api/."""
    routes: dict[str, Any] = {}

    def walk(patterns: list, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/"):
                routes["/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)] = pattern.callback

    walk(get_resolver().url_patterns, "")
    return routes


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method.upper(), operation)
        for path, item in openapi_document()["paths"].items()
        for method, operation in item.items()
    ]


def test_openapi_document__validated__is_openapi_3_1():
    document = openapi_document()
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_openapi_document__paths__are_exactly_the_api_routes():
    documented = set(openapi_document()["paths"])
    served = set(_django_api_routes()) | OFREP_PATHS
    assert documented - served == set(), "documented but not served"
    assert served - documented == set(), "served but not documented"


def test_api_routes__every_one__guarded_by_api_endpoint_as_documented():
    routes = _django_api_routes()
    for path, method, operation in _operations():
        if path in PUBLIC:
            assert operation["security"] == []
            continue
        if path in OFREP_PATHS:
            access = (method, OFREP_SCOPE, OFREP_PERMISSION)
        else:
            view_access = routes[path].api_access  # AttributeError: not behind api_endpoint
            access = (view_access.method, view_access.scope, view_access.permission)
        documented = (method, operation["x-stepwise-scope"], operation["x-stepwise-permission"])
        assert access == documented, path


def test_api_schema__anonymous__served_as_json(client):
    response = client.get("/api/schema")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")


@pytest.fixture
def world():
    """A superuser, a flag, a plan with one step, an incident and a Prometheus source, so every
    path has an object."""
    admin = UserFactory(is_superuser=True, is_staff=True, username="root")
    flag_make("checkout-v2", enabled=True, rollout_percentage=25)
    plan_apply(text=plan_yaml(step_doc("deploy-a")), actor=admin)
    step = Step.objects.get()
    incident = incident_declare(title="contract", severity=3, actor=admin)
    # Nothing listens on port 9: a test of it is refused at once, not waited for.
    source = metric_source_create(name="prom", kind="prometheus", url="http://127.0.0.1:9")
    return {
        "admin": admin,
        "step_id": step.pk,
        "incident_id": incident.pk,
        "key": "checkout-v2",
        "name": source.name,
    }


def _concrete(path: str, world: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(world[m.group(1)]), path)


def _call(path: str, method: str, *, token: str | None = None, body: bytes = b"{}", **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    client: Any = (
        AsgiClient(ofrep_app) if path.startswith("/ofrep/") else Client(enforce_csrf_checks=True)
    )
    if method == "GET":
        return client.get(path, **headers, **extra)
    return client.post(path, body, content_type="application/json", **headers, **extra)


def _reason(response) -> str:
    body = response.json()
    return body.get("error") or body["errorDetails"]  # OFREP names its reason errorDetails


_minted = itertools.count()


def _token(user, scopes: list[str]) -> str:
    return api_token_create(user=user, name=f"contract-{next(_minted)}", scopes=scopes)[1]


def _guarded_operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [op for op in _operations() if op[0] not in PUBLIC]


def _unauthenticated_refused(path: str, method: str, world: dict[str, Any]) -> None:
    url = _concrete(path, world)
    answers = {
        "no token": _call(url, method),
        "bad token": _call(url, method, token="sw_not-a-token"),
    }
    if path not in OFREP_PATHS:  # the OFREP app never sees a session
        signed_in = Client(enforce_csrf_checks=True)
        signed_in.force_login(world["admin"])
        answers["a session only"] = signed_in.generic(
            method, url, b"{}", content_type="application/json"
        )
    for case, response in answers.items():
        assert response.status_code == 401, (case, response.content)
        assert response["Content-Type"].startswith("application/json"), case
        assert response["WWW-Authenticate"].startswith("Bearer"), case
        assert _reason(response), case


def _unauthorized_refused(path: str, method: str, operation: dict, world: dict[str, Any]) -> None:
    url = _concrete(path, world)
    scope, permission = operation["x-stepwise-scope"], operation["x-stepwise-permission"]
    other_scope = "ledger:write"
    no_scope = _call(url, method, token=_token(world["admin"], [other_scope]))
    assert no_scope.status_code == 403
    assert scope in _reason(no_scope)

    nobody = UserFactory(role=None)
    no_permission = _call(url, method, token=_token(nobody, [scope]))
    assert no_permission.status_code == 403
    assert permission in _reason(no_permission)


def _wrong_method_refused(path: str, method: str, operation: dict, world: dict[str, Any]) -> None:
    url = _concrete(path, world)
    token = _token(world["admin"], [operation["x-stepwise-scope"]])
    wrong = "GET" if method == "POST" else "POST"
    response = _call(url, wrong, token=token)
    assert response.status_code == 405
    assert response["Content-Type"].startswith("application/json")


def _documented_schema(operation: dict[str, Any], status: int) -> dict[str, Any] | None:
    responses = openapi_document()["components"]["responses"]
    answer = operation["responses"][str(status)]
    if "$ref" in answer:
        answer = responses[answer["$ref"].rsplit("/", 1)[1]]
    content = answer.get("content", {}).get("application/json")
    return content["schema"] if content else None


def _allowed_answered_as_documented(
    path: str, method: str, operation: dict, world: dict[str, Any]
) -> None:
    url = _concrete(path, world)
    token = _token(world["admin"], [operation["x-stepwise-scope"]])
    for body in (b"{}", b"not json"):
        response = _call(url, method, token=token, body=body)
        assert str(response.status_code) in operation["responses"], (body, response.content)
        schema = _documented_schema(operation, response.status_code)
        if schema is not None:
            document = openapi_document()
            jsonschema.validate(
                json.loads(response.content), {**schema, "components": document["components"]}
            )
        if method == "GET":
            break


@pytest.mark.parametrize(("path", "method", "operation"), _guarded_operations())
def test_api_route__every_kind_of_caller__answered_as_documented(path, method, operation, world):
    """One test per route (setting up `world` once): 401 with a challenge for no token, a bad
    token or a session; 403 naming the missing scope, then the missing permission; 405 JSON for
    the wrong method; a documented status and body for a caller who may call it."""
    _unauthenticated_refused(path, method, world)
    _unauthorized_refused(path, method, operation, world)
    _wrong_method_refused(path, method, operation, world)
    _allowed_answered_as_documented(path, method, operation, world)
