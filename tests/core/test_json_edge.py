"""Every JSON endpoint refuses what it cannot hold with a 4xx and a reason, before any of it is
stored: deep nesting, lone surrogates, NUL bytes, non-numbers, bodies that are not UTF-8 or too big.

The Django test client re-raises a view's exception, so a 500 fails these tests with its traceback.
"""

import json
import os
from collections import Counter

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.models import SCOPES
from accounts.services import api_token_create
from core.http import BadBody, json_parse
from incidents.models import Incident, TimelineEntry
from incidents.services import incident_declare
from rollouts.models import Step
from rollouts.ofrep import ofrep_app
from rollouts.services.plan_apply import plan_apply
from signals.models import Sample
from tests.asgi_client import AsgiClient
from tests.factories import UserFactory
from tests.rollouts.flag_factories import flag_make
from tests.rollouts.plan_factories import plan_yaml, step_doc

pytestmark = pytest.mark.django_db

FUZZ_EXAMPLES = int(os.environ.get("STEPWISE_FUZZ_EXAMPLES", "25"))

HOSTILE: dict[str, bytes] = {
    "nested 5,000 deep": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "nested 40 deep": b'{"text":' + b"[" * 40 + b"]" * 40 + b"}",
    "lone surrogate in a value": b'{"text": "\\ud800", "title": "\\udfff", "service": "\\ud83d"}',
    "lone surrogate in a key": b'{"\\ud800": 1}',
    "NUL in a value": b'{"text": "a\\u0000b", "title": "x\\u0000", "service": "\\u0000"}',
    "NUL in a key": b'{"te\\u0000xt": "a"}',
    "NaN": b'{"text": NaN, "value": NaN}',
    "Infinity": b'{"samples": [{"name": "x", "timestamp": 1, "value": -Infinity}]}',
    "not UTF-8": b"\xff\xfe{}",
    "not JSON": b"{'text': 'single quotes'}",
    "empty": b"",
    "an array": b"[1, 2, 3]",
    "a huge integer": b'{"corrects": ' + b"9" * 5000 + b"}",
}


@pytest.fixture
def api():
    """(client call, {endpoint name: path}) for a superuser token holding every scope."""
    admin = UserFactory(is_superuser=True, is_staff=True)
    _, raw = api_token_create(user=admin, name="fuzz", scopes=sorted(SCOPES))
    flag_make("checkout-v2", enabled=True, rollout_percentage=25)
    plan_apply(text=plan_yaml(step_doc("deploy-a")), actor=admin)
    step = Step.objects.order_by("pk").first()
    incident = incident_declare(title="edge", severity=3, actor=admin)
    paths = {
        "declare": "/api/incidents/",
        "alertmanager": "/api/incidents/alertmanager",
        "narration": f"/api/incidents/{incident.pk}/narration",
        "triage": f"/api/incidents/{incident.pk}/triage",
        "flag-revert": f"/api/incidents/{incident.pk}/flag-revert",
        "ofrep bulk": "/ofrep/v1/evaluate/flags",
        "ofrep single": "/ofrep/v1/evaluate/flags/checkout-v2",
        "deploys": "/api/deploys",
        "step action": f"/api/steps/{step.pk}/action",
        "metrics ingest": "/api/metrics/ingest",
    }
    return raw, paths


def _post(client, token: str, path: str, body: bytes):
    if path.startswith("/ofrep/"):  # served ahead of Django
        client = AsgiClient(ofrep_app)
    return client.post(
        path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def _refused_with_reason(response) -> str:
    assert response.status_code in (400, 413), (response.status_code, response.content[:300])
    body = response.json()
    reason = body.get("error") or body.get("errorDetails")
    assert reason, body
    return reason


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_body__every_json_endpoint_refuses_it_with_a_reason_and_stores_nothing(
    client, api, case
):
    token, paths = api
    incidents, entries, samples = (
        Incident.objects.count(),
        TimelineEntry.objects.count(),
        Sample.objects.count(),
    )
    for name, path in paths.items():
        response = _post(client, token, path, HOSTILE[case])
        # OFREP reads an empty body as the empty context, as the protocol allows (a 25 % flag
        # then answers TARGETING_KEY_MISSING).
        if name.startswith("ofrep") and case == "empty":
            assert response.status_code in (200, 400)
            continue
        reason = _refused_with_reason(response)
        assert reason.isprintable(), (name, reason)
    assert (Incident.objects.count(), TimelineEntry.objects.count(), Sample.objects.count()) == (
        incidents,
        entries,
        samples,
    )


def test_lone_surrogate__the_reason_names_the_field(client, api):
    token, paths = api
    response = _post(client, token, paths["narration"], b'{"text": "ok \\ud800 then"}')
    assert response.status_code == 400
    assert response.json()["field"] == "text"
    assert "lone surrogate (\\ud800)" in response.json()["error"]
    response = _post(client, token, paths["ofrep bulk"], b'{"context":{"targetingKey":"\\ud800"}}')
    assert response.status_code == 400
    assert "context.targetingKey" in response.json()["errorDetails"]


def test_body_over_the_upload_limit__413_before_parsing(client, api):
    token, paths = api
    too_big = b'{"text": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b'"}'
    for name in ("narration", "declare", "deploys", "metrics ingest"):
        assert _post(client, token, paths[name], too_big).status_code == 413, name


def test_json_parse__depth_cap_and_paths():
    assert json_parse(b'{"a": [1, {"b": "fine \xc3\xa9"}]}') == {"a": [1, {"b": "fine é"}]}
    with pytest.raises(BadBody) as refused:
        json_parse(b'{"a": [1, {"b": "\\ud800"}]}')
    assert refused.value.path == "a[1].b"
    with pytest.raises(BadBody) as refused:
        json_parse(b"[" * 33 + b"]" * 33)
    assert "deeper than 32" in refused.value.reason
    assert json_parse(b"[" * 32 + b"]" * 32) is not None


# --- fuzz: bodies of the right shape, with any text and any JSON in their fields -----------------

# Mostly storable text, so that bodies get past the edge into the services; sometimes any code
# point at all, lone surrogates included.
_ANY_CODE_POINT = st.characters(categories=["Cs", "Cc", "Cf", "L", "M", "N", "P", "S", "Z"])
_text = st.text(max_size=40) | st.text(_ANY_CODE_POINT, max_size=40)
_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text
_json = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_texts = st.lists(_text, max_size=3)
_when = st.integers(1_600_000_000, 1_900_000_000) | _text
_alert = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]) | _text,
        "labels": st.dictionaries(_text, _text),
    },
    optional={
        "annotations": st.dictionaries(_text, _text),
        "startsAt": _text,
        "fingerprint": _text,
    },
)
_sample = st.fixed_dictionaries(
    {"name": _text, "timestamp": _when, "value": st.floats(allow_nan=False) | _leaf},
    optional={"labels": st.dictionaries(_text, _text, max_size=3)},
)
# Each field: a value of the type the endpoint expects (text that may not be storable), or any JSON.
FIELDS = {
    "declare": {
        "title": _text,
        "severity": st.integers(0, 5),
        "summary": _text,
        "services": _texts,
        "plans": _texts,
        "flags": _texts,
        "steps": st.lists(st.integers()),
    },
    "alertmanager": {
        "version": st.just("4"),
        "status": _text,
        "groupKey": _text,
        "alerts": st.lists(_alert, max_size=3),
        "commonLabels": st.dictionaries(_text, _text),
    },
    "narration": {"text": _text, "corrects": st.integers(-1, 5)},
    "triage": {"severity": st.integers(0, 5) | _text, "services": _texts, "reason": _text},
    "flag-revert": {
        "flag": st.just("checkout-v2") | _text,
        "seen_version": st.integers(0, 4),
        "expected_effect": _text,
    },
    "ofrep bulk": {
        "context": st.dictionaries(_text, _leaf, max_size=3).map(dict)
        | st.fixed_dictionaries({"targetingKey": _text})
    },
    "ofrep single": {
        "context": st.fixed_dictionaries({"targetingKey": _text}, optional={"region": _text})
    },
    "deploys": {"service": _text, "version": _text, "target": st.just("eu-west") | _text},
    "step action": {
        "action": st.sampled_from(["start", "advance", "pause", "fail", "skip"]) | _text,
        "reason": _text,
    },
    "metrics ingest": {"samples": st.lists(_sample, max_size=3)},
}


@pytest.mark.parametrize("endpoint", sorted(FIELDS))
def test_fuzz__any_body_of_the_right_shape__never_a_5xx(client, api, endpoint, suite_report):
    token, paths = api
    # Every field, of its type (so bodies reach the services); some fields, of any JSON; any JSON.
    body_strategy = (
        st.fixed_dictionaries(FIELDS[endpoint])
        | st.fixed_dictionaries(
            {}, optional={field: typed | _json for field, typed in FIELDS[endpoint].items()}
        )
        | _json
    )

    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(body=body_strategy)
    def run(body):
        raw = json.dumps(body).encode()  # ensure_ascii: surrogates and NULs travel as \u escapes
        response = _post(client, token, paths[endpoint], raw)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (body, response.content[:300])
        assert response.headers["Content-Type"].startswith("application/json")

    statuses: Counter[int] = Counter()
    run()
    suite_report(
        f"JSON fuzz {endpoint}: {sum(statuses.values())} bodies, statuses {dict(statuses)}"
    )
