import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.services import api_token_create
from signals.models import Sample
from signals.services import MAX_BATCH
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
URL = "/api/metrics/ingest"


def writer_token(*, scopes: tuple[str, ...] = ("metrics:write",), permitted: bool = True) -> str:
    user = UserFactory(role="viewer")
    if permitted:
        user.user_permissions.add(Permission.objects.get(codename="add_sample"))
    _, raw = api_token_create(user=user, name="exporter", scopes=list(scopes))
    return raw


def post(client, body, token: str):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        URL, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def sample(**overrides):
    return {
        "name": "http_requests_total",
        "labels": {"region": "eu-west", "code": "200"},
        "timestamp": timezone.now().isoformat(),
        "value": 1.0,
    } | overrides


def test_metrics_ingest__valid_batch__every_sample_stored(client):
    now = timezone.now()
    body = {
        "samples": [
            sample(value=3, timestamp=now.isoformat()),
            sample(value=2.5, timestamp=(now - timedelta(minutes=1)).timestamp()),  # unix, older
            sample(
                name="latency_seconds", labels={}, value=0.125, timestamp="2024-01-01T00:00:00Z"
            ),
        ]
    }
    response = post(client, body, writer_token())
    assert response.status_code == 200, response.content
    assert response.json() == {"written": 3}
    stored = {(s.name, s.label_key, s.value) for s in Sample.objects.all()}
    assert stored == {
        ("http_requests_total", '{"code":"200","region":"eu-west"}', 3.0),
        ("http_requests_total", '{"code":"200","region":"eu-west"}', 2.5),
        ("latency_seconds", "{}", 0.125),
    }
    assert Sample.objects.get(name="latency_seconds").timestamp == datetime(2024, 1, 1, tzinfo=UTC)


def test_metrics_ingest__some_samples_invalid__400_names_each_index_and_nothing_written(client):
    now = timezone.now()
    body = {
        "samples": [
            sample(),
            sample(value="NaN"),
            sample(timestamp=(now + timedelta(minutes=6)).isoformat()),
            sample(name="bad name"),
            sample(labels={"__name__": "x"}),
            sample(timestamp="2024-01-01T00:00:00"),
            sample(value=True),
            sample(extra=1),
        ]
    }
    response = post(client, body, writer_token())
    assert response.status_code == 400
    problems = response.json()["invalid"]
    assert [p["index"] for p in problems] == [1, 2, 3, 4, 5, 6, 7]
    reasons = " | ".join(p["reason"] for p in problems)
    for words in (
        "value must be a number, not str",
        "s in the future",
        "is not a metric name",
        "label name '__name__' is invalid",
        "has no UTC offset",
        "value must be a number, not bool",
        "unknown field(s): extra",
    ):
        assert words in reasons
    assert "7 of 8 samples are invalid; nothing was written" in response.json()["error"]
    assert not Sample.objects.exists()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_metrics_ingest__non_finite_value__400_and_nothing_written(client, literal):
    body = '{"samples": [{"name": "x", "timestamp": 1700000000, "value": ' + literal + "}]}"
    response = post(client, body, writer_token())
    assert response.status_code == 400
    # Refused at the edge, before the batch is read: NaN and Infinity are not JSON numbers.
    assert f"{literal.lstrip('-')} is not a JSON number" in response.json()["error"]
    assert not Sample.objects.exists()


def test_metrics_ingest__four_minutes_ahead__accepted_as_clock_skew(client):
    ahead = (timezone.now() + timedelta(minutes=4)).timestamp()
    assert post(client, {"samples": [sample(timestamp=ahead)]}, writer_token()).status_code == 200


def test_metrics_ingest__oversize_batch__413_with_reason_and_nothing_written(client):
    body = {"samples": [sample()] * (MAX_BATCH + 1)}
    response = post(client, body, writer_token())
    assert response.status_code == 413
    assert response.json() == {
        "error": f"a batch of {MAX_BATCH + 1} samples exceeds the limit of {MAX_BATCH}",
        "limit": MAX_BATCH,
    }
    assert not Sample.objects.exists()


def test_metrics_ingest__full_batch__bulk_written(client, django_assert_max_num_queries):
    body = {"samples": [sample(value=i) for i in range(MAX_BATCH)]}
    token = writer_token()
    # Bulk: batches of rows (SQLite caps the parameters of one statement), never one per sample.
    with django_assert_max_num_queries(60):
        response = post(client, body, token)
    assert response.status_code == 200
    assert Sample.objects.count() == MAX_BATCH


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("{not json", "the body is not JSON"),
        ({"samples": {}}, 'the body must be an object {"samples": [...]}'),
        ([], 'the body must be an object {"samples": [...]}'),
        ({"samples": []}, "the batch has no samples"),
    ],
)
def test_metrics_ingest__malformed_body__400_with_reason(client, body, words):
    response = post(client, body, writer_token())
    assert response.status_code == 400
    assert words in response.json()["error"]


def test_metrics_ingest__token_without_metrics_scope__403(client):
    response = post(client, {"samples": [sample()]}, writer_token(scopes=("ledger:read",)))
    assert response.status_code == 403
    assert "metrics:write" in response.json()["error"]
    assert not Sample.objects.exists()


def test_metrics_ingest__user_without_add_sample__403(client):
    response = post(client, {"samples": [sample()]}, writer_token(permitted=False))
    assert response.status_code == 403
    assert "signals.add_sample" in response.json()["error"]


def test_metrics_ingest__no_credentials__refused(client):
    response = client.post(
        URL, json.dumps({"samples": [sample()]}), content_type="application/json"
    )
    assert response.status_code in (302, 401, 403)
    assert not Sample.objects.exists()


def test_metrics_ingest__get__405(client):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {writer_token()}")
    assert response.status_code == 405


def test_metrics_ingest__huge_value__refused_not_stored_as_infinity(client):
    body = '{"samples": [{"name": "x", "timestamp": 1700000000, "value": 1e400}]}'
    response = post(client, body, writer_token())
    assert response.status_code == 400
    assert "is not finite" in response.json()["invalid"][0]["reason"]  # json reads 1e400 as inf
    assert not Sample.objects.exists()


def test_samples_ingest__same_batch_twice__stored_once(db):
    """A client whose answer was lost (a timeout, a broker outage) retries its batch: the
    store keeps one value per series and instant."""
    from signals.models import Sample
    from signals.services import samples_ingest

    batch = {
        "samples": [
            {
                "name": "http_requests",
                "labels": {"region": "eu"},
                "timestamp": "2026-12-01T10:00:00Z",
                "value": 5.0,
            },
            {
                "name": "http_requests",
                "labels": {"region": "us"},
                "timestamp": "2026-12-01T10:00:00Z",
                "value": 7.0,
            },
        ]
    }
    samples_ingest(payload=batch)
    samples_ingest(payload=batch)
    assert sorted(Sample.objects.values_list("value", flat=True)) == [5.0, 7.0]
