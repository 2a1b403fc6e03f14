"""GET /metrics: who may scrape it, and that its numbers move with what Stepwise does."""

import ipaddress
import time
import uuid

import pytest

from accounts.services import api_token_create
from core.redis import redis_client
from ledger.services import ledger_append
from rollouts import ofrep
from signals.services import samples_ingest
from tests.asgi_client import AsgiClient
from tests.metrics_scrape import fresh_evaluation_tally, scrape, value  # noqa: F401

pytestmark = pytest.mark.django_db

OUTSIDE = "203.0.113.9"


def _token(role_user, *scopes: str) -> str:
    return api_token_create(user=role_user("viewer"), name="prometheus", scopes=list(scopes))[1]


# --- who may scrape ------------------------------------------------------------------------------


def test_metrics__loopback_without_token__200_prometheus_text(client):
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"stepwise_ledger_appends_total" in response.content


def test_metrics__outside_address_without_token__401_json_bearer_challenge(client):
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "metrics:read" in response.json()["error"]


def test_metrics__unknown_token__401_json_bearer_challenge(client):
    response = client.get(
        "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer sw_not-a-token"
    )

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {"error": "invalid, expired or revoked API token"}


def test_metrics__token_without_metrics_read__403_json(client, role_user):
    raw = _token(role_user, "ledger:read")

    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 403
    assert response.json() == {"error": "this token lacks the 'metrics:read' scope"}


def test_metrics__metrics_read_token_from_outside__200(client, role_user):
    raw = _token(role_user, "metrics:read")

    scraped = scrape(client, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert value(scraped, "stepwise_ledger_appends_total") >= 1  # the token's creation


def test_metrics__allow_list_set__its_network_admitted_loopback_no_longer(client, settings):
    settings.METRICS_ALLOW_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="").status_code == 401


def test_metrics__post__405_nothing_served(client):
    response = client.post("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert response.json() == {"error": "method not allowed here: use GET"}


# --- the numbers move ----------------------------------------------------------------------------


def test_metrics__ledger_append__appends_counter_up_by_one(client):
    before = value(scrape(client), "stepwise_ledger_appends_total")

    ledger_append(action="manual.note", subject_type="test", subject_id=1, actor_label="test")

    assert value(scrape(client), "stepwise_ledger_appends_total") == before + 1


def test_metrics__samples_ingested__counter_up_by_batch_after_commit(
    client, django_capture_on_commit_callbacks
):
    before = value(scrape(client), "stepwise_samples_ingested_total")
    at = time.time() - 5
    samples = [{"name": "m", "labels": {}, "timestamp": at - i, "value": 1} for i in range(3)]

    with django_capture_on_commit_callbacks(execute=True):
        samples_ingest(payload={"samples": samples})

    assert value(scrape(client), "stepwise_samples_ingested_total") == before + 3


def test_metrics__ofrep_request__counted_by_endpoint_and_status_and_timed(client):
    scraped = scrape(client)
    counted = value(scraped, "stepwise_ofrep_requests_total", endpoint="bulk", status="401") or 0
    timed = value(scraped, "stepwise_ofrep_request_duration_seconds_count", endpoint="bulk") or 0

    response = AsgiClient(ofrep.ofrep_app).post("/ofrep/v1/evaluate/flags", b"{}")

    assert response.status_code == 401
    scraped = scrape(client)
    assert (
        value(scraped, "stepwise_ofrep_requests_total", endpoint="bulk", status="401")
        == counted + 1
    )
    assert value(scraped, "stepwise_ofrep_request_duration_seconds_count", endpoint="bulk") == (
        timed + 1
    )


def test_metrics__embedded_broker__no_queue_depth(client, settings):
    settings.REDIS_URL = ""

    scraped = scrape(client)

    assert not [key for key in scraped if key[0] == "stepwise_celery_queue_depth"]


@pytest.mark.redis
def test_metrics__tasks_waiting_in_redis__queue_depth_per_queue(client, settings):
    prefix = f"test-metrics-{uuid.uuid4().hex[:8]}:"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "global_keyprefix": prefix,
    }
    redis = redis_client()
    keys = [f"{prefix}urgent", f"{prefix}urgent\x06\x169"]
    try:
        redis.rpush(keys[0], "a", "b", "c")
        redis.rpush(keys[1], "d")  # a priority step's own list

        scraped = scrape(client)

        assert value(scraped, "stepwise_celery_queue_depth", queue="urgent") == 4
        assert value(scraped, "stepwise_celery_queue_depth", queue="celery") == 0
    finally:
        redis.delete(*keys)
