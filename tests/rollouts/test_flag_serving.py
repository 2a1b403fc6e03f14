"""OFREP served from memory: what a cached answer must never get wrong (a revoked token, a
removed permission, a changed flag), the bulk fast path against the plain evaluator, the OFREP
error answers, and consumer bookkeeping recorded by a worker task."""

import json
import random
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import api_token_cached, api_token_create, api_token_revoke
from core import invalidation
from rollouts import ofrep
from rollouts.evaluation import flag_evaluate
from rollouts.flag_config import config_current
from rollouts.services.flags import flag_change
from rollouts.services.steps import step_transition
from tests.factories import UserFactory
from tests.rollouts.flag_factories import consumer_make, flag_make, token_make

pytestmark = pytest.mark.django_db

BULK = "/ofrep/v1/evaluate/flags"


def _post(ofrep_client, path, body, token, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return ofrep_client.post(path, data, HTTP_AUTHORIZATION=f"Bearer {token}", **headers)


@pytest.fixture
def live(monkeypatch, django_capture_on_commit_callbacks):
    """This process hears every change, as a serving process with Redis does: caches are
    trusted. `with live():` commits a change as far as announcing it goes (the test's own
    transaction never commits)."""
    monkeypatch.setitem(invalidation._state, "live", True)
    return lambda: django_capture_on_commit_callbacks(execute=True)


# --- answered from memory, never wrongly -----------------------------------------------------


def test_live__second_request__no_database_round_trip(
    ofrep_client, live, django_assert_num_queries
):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    assert _post(ofrep_client, BULK, {}, token).status_code == 200
    with django_assert_num_queries(0):
        assert _post(ofrep_client, BULK, {}, token).status_code == 200


def test_not_live__every_request_checks_the_database(ofrep_client, django_assert_max_num_queries):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    assert _post(ofrep_client, BULK, {}, token).status_code == 200
    with django_assert_max_num_queries(10) as context:
        assert _post(ofrep_client, BULK, {}, token).status_code == 200
    assert len(context.captured_queries) >= 2  # the token and the revision, at least


def test_live__revoked_token__refused_on_the_next_request(ofrep_client, live):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    assert _post(ofrep_client, BULK, {}, token).status_code == 200
    with live():
        api_token_revoke(token_id=ApiToken.objects.get().pk)
    refused = _post(ofrep_client, BULK, {}, token)
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == "Bearer"
    assert "revoked" in refused.json()["errorDetails"]


def test_live__permission_taken_away__403_on_the_next_request(ofrep_client, live):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    assert _post(ofrep_client, BULK, {}, token).status_code == 200
    user = ApiToken.objects.get().user
    with live():
        user.groups.remove(Group.objects.get(name="viewer"))
    refused = _post(ofrep_client, BULK, {}, token)
    assert refused.status_code == 403
    assert "lacks permission rollouts.view_flag" in refused.json()["errorDetails"]


def test_live__user_deactivated__401_on_the_next_request(ofrep_client, live):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    assert _post(ofrep_client, BULK, {}, token).status_code == 200
    user = ApiToken.objects.get().user
    user.is_active = False
    with live():
        user.save()
    assert _post(ofrep_client, BULK, {}, token).status_code == 401


def test_live__token_expires_while_held__refused_without_an_announcement(ofrep_client, live):
    flag_make("f", enabled=True, rollout_percentage=100)
    user = UserFactory(role="viewer")
    _, token = api_token_create(
        user=user, name="brief", scopes=["flags:evaluate"], expires_in_days=1
    )
    assert _post(ofrep_client, BULK, {}, token).status_code == 200
    assert api_token_cached(raw=token) is not None
    # Expiry is a time, not a change: nothing is announced; a held token checks it per request.
    later = timezone.now() + timedelta(days=2)
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert api_token_cached(raw=token) is None
        assert _post(ofrep_client, BULK, {}, token).status_code == 401


def test_live__flag_changed__next_request_serves_it_from_memory(
    ofrep_client, live, django_assert_num_queries
):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    first = _post(ofrep_client, f"{BULK}/f", {}, token).json()
    assert first["value"] is True
    with live():
        flag_change(
            flag_key="f", changes={"enabled": False}, actor=None, reason="kill", source="api"
        )
    # Compiled when the change was announced, so the answer needs no query.
    with django_assert_num_queries(0):
        after = _post(ofrep_client, f"{BULK}/f", {}, token).json()
    assert (after["value"], after["reason"]) == (False, "DISABLED")
    assert after["metadata"]["revision"] > first["metadata"]["revision"]


def test_live__held_token__each_request_gets_its_own_copy(live):
    token = token_make()
    from accounts.services import api_token_authenticate

    one = api_token_authenticate(raw=token)
    one.user.first_name = "changed by one request"
    two = api_token_authenticate(raw=token)
    assert two is not one and two.user is not one.user
    assert two.user.first_name != "changed by one request"


# --- the bulk fast path says what the evaluator says -----------------------------------------


def test_bulk__every_flag_shape__same_answer_as_flag_evaluate_for_each_key(ofrep_client):
    flag_make("off", enabled=False, rollout_percentage=50)
    flag_make("static-on", enabled=True, rollout_percentage=100)
    flag_make("static-off", enabled=True, rollout_percentage=0)
    flag_make("split", enabled=True, rollout_percentage=33.33)
    flag_make(
        "ruled",
        enabled=True,
        rollout_percentage=20,
        rules=[{"attribute": "country", "op": "in", "values": ["BE"], "variant": "on"}],
    )
    token = token_make()
    config = config_current()
    rng = random.Random(15)
    contexts = [{}] + [
        {"targetingKey": f"user-{rng.randrange(10**9)}", "country": rng.choice(["BE", "NL"])}
        for _ in range(150)
    ]
    for context in contexts:
        answered = {
            f["key"]: f
            for f in _post(ofrep_client, BULK, {"context": context}, token).json()["flags"]
        }
        assert set(answered) == set(config.flags)
        for key, flag in config.flags.items():
            try:
                expected = flag_evaluate(flag=flag, context=context)
            except ofrep.EvaluationError as exc:
                assert answered[key]["errorCode"] == exc.code, (key, context)
                continue
            got = answered[key]
            assert (got["value"], got["variant"], got["reason"]) == (
                expected.value,
                expected.variant,
                expected.reason,
            ), (key, context)
            single = _post(ofrep_client, f"{BULK}/{key}", {"context": context}, token).json()
            assert single == got


# --- OFREP's error answers ------------------------------------------------------------------


def test_bad_input__each_gets_the_ofrep_error_answer_never_a_500(ofrep_client):
    flag_make("f", enabled=True, rollout_percentage=25)
    token = token_make()
    expired = token_make(name="expired")
    ApiToken.objects.filter(name="expired").update(expires_at=timezone.now() - timedelta(days=1))
    revoked = token_make(name="revoked")
    api_token_revoke(token_id=ApiToken.objects.get(name="revoked").pk)
    unscoped = token_make("metrics:write", name="unscoped")
    huge = json.dumps({"context": {"targetingKey": "u", "blob": "x" * ofrep.MAX_BODY_BYTES}})
    cases = {
        "form body": (
            ofrep_client.post(
                f"{BULK}/f",
                "context=1",
                content_type="application/x-www-form-urlencoded",
                HTTP_AUTHORIZATION=f"Bearer {token}",
            ),
            400,
            "PARSE_ERROR",
        ),
        "over the size cap": (_post(ofrep_client, f"{BULK}/f", huge, token), 400, "PARSE_ERROR"),
        "context not an object": (
            _post(ofrep_client, BULK, {"context": [1]}, token),
            400,
            "INVALID_CONTEXT",
        ),
        "unknown flag": (_post(ofrep_client, f"{BULK}/nope", {}, token), 404, "FLAG_NOT_FOUND"),
        "no key for a split": (
            _post(ofrep_client, f"{BULK}/f", {}, token),
            400,
            "TARGETING_KEY_MISSING",
        ),
        "missing token": (ofrep_client.post(BULK, "{}"), 401, None),
        "unknown token": (_post(ofrep_client, BULK, {}, "sw_unknown"), 401, None),
        "expired token": (_post(ofrep_client, BULK, {}, expired), 401, None),
        "revoked token": (_post(ofrep_client, BULK, {}, revoked), 401, None),
        "token without flags:evaluate": (_post(ofrep_client, BULK, {}, unscoped), 403, None),
        "unknown endpoint": (_post(ofrep_client, "/ofrep/v2/flags", {}, token), 404, None),
        "GET": (ofrep_client.get(BULK, HTTP_AUTHORIZATION=f"Bearer {token}"), 405, None),
    }
    for name, (response, status, code) in cases.items():
        assert response.status_code == status, (name, response.content)
        body = response.json()
        assert body["errorDetails"], name
        if code:
            assert body["errorCode"] == code, (name, body)
        if status == 401:
            assert response["WWW-Authenticate"] == "Bearer", name
    single = cases["form body"][0].json()
    assert single["key"] == "f"


# --- consumer bookkeeping: off the request path, still right on the step page ----------------


def test_step_page__consumer_fetches_over_ofrep__map_shows_it_once_a_worker_recorded_it(
    ofrep_client, recorded, make_plan, role_user
):
    plan = make_plan([{"key": "ramp", "flag": "new-login", "percentage": 5, "targets": ["eu"]}])
    _, raw_a = consumer_make(name="eu-a", target="eu")
    eu_b, raw_b = consumer_make(name="eu-b", target="eu")
    step = plan.steps.get()
    for action in ("start", "advance", "advance"):
        step_transition(step_id=step.pk, action=action, actor=None)
    revision = step.flag_versions.get().config_revision
    from django.test import Client

    browser = Client()
    browser.force_login(role_user("tpm"))
    page = f"/plans/{plan.key}/steps/{step.key}/"

    assert _post(ofrep_client, BULK, {"context": {"targetingKey": "a"}}, raw_a).status_code == 200
    assert 'eu-a: <span class="why">at r0' in browser.get(page).content.decode()
    recorded()
    html = browser.get(page).content.decode()
    assert f'eu-a: <span class="ok">holds r{revision}' in html
    assert 'eu-b: <span class="why">at r0' in html
    step.refresh_from_db()
    assert step.status == "converging"

    for _ in range(3):  # a ofrep_client polling: one batch, one record
        _post(ofrep_client, BULK, {"context": {"targetingKey": "b"}}, raw_b)
    recorded()
    html = browser.get(page).content.decode()
    assert f'eu-b: <span class="ok">holds r{revision}' in html
    step.refresh_from_db()
    assert step.status == "done"
    eu_b.refresh_from_db()
    assert eu_b.last_fetch_at is not None


def test_fetches__many_requests_one_batch__newest_revision_per_token():
    ofrep._fetches.add(1, 5)
    ofrep._fetches.add(1, 7)
    ofrep._fetches.add(1, 6)
    ofrep._fetches.add(2, 3)
    assert ofrep._fetches.take() == {1: 7, 2: 3}
    assert ofrep._fetches.take() == {}
