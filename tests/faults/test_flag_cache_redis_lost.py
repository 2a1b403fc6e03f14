"""The notification channel lost and back: a serving process stops trusting its memory at once
(and says so in /readyz), answers from the database meanwhile, and after resubscribing serves
what changed while it could not hear."""

import json
import time

import pytest
from django.test import Client

from accounts.models import ApiToken
from accounts.services import api_token_revoke
from core import invalidation
from core.redis import redis_client
from rollouts import ofrep
from rollouts.flag_config import config_cache_clear
from rollouts.services.flags import flag_change
from tests.asgi_client import AsgiClient
from tests.rollouts.flag_factories import flag_make, token_make

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

BULK = "/ofrep/v1/evaluate/flags"


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


@pytest.fixture
def listening(own_redis, settings):
    import core.redis

    settings.REDIS_URL = own_redis.url
    core.redis._client = None  # publish to this test's Redis
    config_cache_clear()
    invalidation.invalidation_listen()
    try:
        _until(invalidation.invalidation_live)
        yield own_redis
    finally:
        invalidation.invalidation_stop()
        core.redis._client = None
        config_cache_clear()


def _readyz_flag_cache(role_user) -> str:
    browser = Client()
    browser.force_login(role_user("viewer"))
    return json.loads(browser.get("/readyz").content)["checks"]["flag_cache"]["detail"]


def test_redis_killed_and_restarted__falls_back_then_listens_again(listening, role_user):
    client = AsgiClient(ofrep.ofrep_app)
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.post(f"{BULK}/f", "{}", **auth).json()["value"] is True
    assert "answering from memory" in _readyz_flag_cache(role_user)

    # A change announced by another process arrives on the channel.
    flag_change(flag_key="f", changes={"enabled": False}, actor=None, reason="x", source="api")
    _until(lambda: client.post(f"{BULK}/f", "{}", **auth).json()["value"] is False, 2.0)

    listening.process.kill()
    listening.process.wait(timeout=10)
    _until(lambda: not invalidation.invalidation_live())
    assert "checking the database per request" in _readyz_flag_cache(role_user)
    # Changes made while the channel is down cannot be announced, and are still served: each
    # request reads the revision.
    flag_change(flag_key="f", changes={"enabled": True}, actor=None, reason="y", source="api")
    assert client.post(f"{BULK}/f", "{}", **auth).json()["value"] is True
    api_token_revoke(token_id=ApiToken.objects.get(name="client").pk)
    assert client.post(f"{BULK}/f", "{}", **auth).status_code == 401

    listening.start()
    _until(invalidation.invalidation_live, 15.0)
    assert "answering from memory" in _readyz_flag_cache(role_user)
    assert client.post(f"{BULK}/f", "{}", **auth).status_code == 401
    other = token_make(name="other")
    answer = client.post(f"{BULK}/f", "{}", HTTP_AUTHORIZATION=f"Bearer {other}").json()
    assert answer["value"] is True


def test_announcement_from_another_process__heard_by_this_one(listening):
    heard = []
    invalidation.invalidation_on("test-topic", heard.append)
    # As another process announces: straight onto the channel, nothing committed here.
    redis_client().publish(invalidation.channel(), json.dumps({"topic": "test-topic", "n": 1}))
    _until(lambda: heard == [{"n": 1}], 2.0)
