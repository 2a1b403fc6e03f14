import json

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiToken
from ledger.models import LedgerEntry
from rollouts.models import FlagConsumer, Target
from rollouts.services.flags import flag_change, flag_revert
from tests.rollouts.flag_factories import consumer_make, flag_make, token_make

pytestmark = pytest.mark.django_db

BULK = "/ofrep/v1/evaluate/flags"


def _post(ofrep_client, path, body, token, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return ofrep_client.post(
        path, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}", **headers
    )


def test_evaluate_flag__enabled_at_100__value_variant_reason_and_revision_metadata(ofrep_client):
    flag_make("new-checkout", enabled=True, rollout_percentage=100)
    response = _post(
        ofrep_client, f"{BULK}/new-checkout", {"context": {"targetingKey": "u1"}}, token_make()
    )
    assert response.status_code == 200
    assert response.json() == {
        "key": "new-checkout",
        "value": True,
        "reason": "STATIC",
        "variant": "on",
        "metadata": {"revision": 2, "version": 2},
    }


def test_evaluate_flag__x_api_key_header__accepted(ofrep_client):
    flag_make("f")
    response = ofrep_client.post(
        f"{BULK}/f", "{}", content_type="application/json", HTTP_X_API_KEY=token_make()
    )
    assert response.status_code == 200
    assert response.json()["reason"] == "DISABLED"


def test_evaluate_flag__unknown_flag__404_flag_not_found(ofrep_client):
    response = _post(ofrep_client, f"{BULK}/ghost", {"context": {}}, token_make())
    assert response.status_code == 404
    assert response.json() == {
        "key": "ghost",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": "no flag 'ghost'",
    }


@pytest.mark.parametrize(
    "body", ["{not json", b"\xff\xfe", "[1, 2]", '"context"', "[" * 100_000 + "]" * 100_000]
)
def test_evaluate_flag__malformed_body__400_parse_error_never_500(ofrep_client, body):
    flag_make("f")
    response = _post(ofrep_client, f"{BULK}/f", body, token_make())
    assert response.status_code == 400
    assert response.json()["errorCode"] == "PARSE_ERROR"
    assert response.json()["key"] == "f"
    assert response.json()["errorDetails"]


@pytest.mark.parametrize("context", [["u1"], "u1", {"targetingKey": 7}])
def test_evaluate_flag__bad_context__400_invalid_context(ofrep_client, context):
    flag_make("f")
    response = _post(ofrep_client, f"{BULK}/f", {"context": context}, token_make())
    assert response.status_code == 400
    assert response.json()["errorCode"] == "INVALID_CONTEXT"


def test_evaluate_flag__split_without_targeting_key__400_targeting_key_missing(ofrep_client):
    flag_make("ramp", enabled=True, rollout_percentage=20)
    response = _post(ofrep_client, f"{BULK}/ramp", {"context": {"country": "NL"}}, token_make())
    assert response.status_code == 400
    body = response.json()
    assert (body["key"], body["errorCode"]) == ("ramp", "TARGETING_KEY_MISSING")


def test_evaluate_flag__token_without_scope__403(ofrep_client):
    flag_make("f")
    response = _post(ofrep_client, f"{BULK}/f", {}, token_make("ledger:read"))
    assert response.status_code == 403


def test_evaluate_flag__no_token__401(ofrep_client):
    flag_make("f")
    response = ofrep_client.post(f"{BULK}/f", "{}", content_type="application/json")
    assert response.status_code == 401
    assert ofrep_client.post(BULK, "{}", content_type="application/json").status_code == 401


def test_evaluate_flag__get__405_not_500(ofrep_client):
    response = ofrep_client.get(f"{BULK}/f", HTTP_AUTHORIZATION=f"Bearer {token_make()}")
    assert response.status_code == 405


def test_evaluate_flags__bulk__every_flag_with_per_flag_errors_and_etag(ofrep_client):
    flag_make("a-static", enabled=True, rollout_percentage=100)
    flag_make("b-ramp", enabled=True, rollout_percentage=50)
    flag_make("c-off")
    response = _post(ofrep_client, BULK, {"context": {"plan": "pro"}}, token_make())
    assert response.status_code == 200
    body = response.json()
    assert body["metadata"] == {"revision": 5}
    by_key = {f["key"]: f for f in body["flags"]}
    assert by_key["a-static"]["variant"] == "on"
    assert by_key["b-ramp"]["errorCode"] == "TARGETING_KEY_MISSING"
    assert by_key["c-off"]["reason"] == "DISABLED"
    assert response["ETag"].startswith('"5-')


def test_evaluate_flags__bad_body__400_without_key(ofrep_client):
    response = _post(ofrep_client, BULK, "{oops", token_make())
    assert response.status_code == 400
    assert set(response.json()) == {"errorCode", "errorDetails"}
    assert response.json()["errorCode"] == "PARSE_ERROR"
    response = _post(ofrep_client, BULK, {"context": 3}, token_make(name="other"))
    assert response.json()["errorCode"] == "INVALID_CONTEXT"


def test_evaluate_flags__if_none_match_current__304_without_body(ofrep_client):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    etag = _post(ofrep_client, BULK, {"context": {"targetingKey": "u1"}}, token)["ETag"]
    again = _post(
        ofrep_client, BULK, {"context": {"targetingKey": "u1"}}, token, HTTP_IF_NONE_MATCH=etag
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    weak = _post(
        ofrep_client,
        BULK,
        {"context": {"targetingKey": "u1"}},
        token,
        HTTP_IF_NONE_MATCH=f'"x", W/{etag}',
    )
    assert weak.status_code == 304


def test_evaluate_flags__other_context__different_etag_and_200(ofrep_client):
    flag_make("f", enabled=True, rollout_percentage=50)
    token = token_make()
    etag = _post(ofrep_client, BULK, {"context": {"targetingKey": "u1"}}, token)["ETag"]
    other = _post(
        ofrep_client, BULK, {"context": {"targetingKey": "u2"}}, token, HTTP_IF_NONE_MATCH=etag
    )
    assert other.status_code == 200
    assert other["ETag"] != etag
    same_context_reordered = _post(
        ofrep_client, BULK, {"context": {"b": 1, "targetingKey": "u1"}}, token
    )["ETag"]
    assert same_context_reordered != etag


def test_evaluate_flags__flag_changed__old_etag_gets_200_with_new_value(ofrep_client):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    first = _post(ofrep_client, BULK, {"context": {"targetingKey": "u1"}}, token)
    flag_change(flag_key="f", changes={"enabled": False}, actor=None, reason="kill", source="api")
    second = _post(
        ofrep_client,
        BULK,
        {"context": {"targetingKey": "u1"}},
        token,
        HTTP_IF_NONE_MATCH=first["ETag"],
    )
    assert second.status_code == 200
    assert second["ETag"] != first["ETag"]
    assert second.json()["flags"][0]["reason"] == "DISABLED"
    assert second.json()["metadata"]["revision"] == first.json()["metadata"]["revision"] + 1


def test_evaluate_flag__revert__the_very_next_request_sees_it(ofrep_client):
    flag_make("f", enabled=True, rollout_percentage=100)
    token = token_make()
    assert _post(ofrep_client, f"{BULK}/f", {}, token).json()["value"] is True
    bad = flag_change(
        flag_key="f",
        changes={"variants": {"on": "broken", "off": False}},
        actor=None,
        reason="ship",
        source="api",
    )
    assert _post(ofrep_client, f"{BULK}/f", {}, token).json()["value"] == "broken"
    flag_revert(flag_key="f", seen_version=bad.number, actor=None, reason="page", source="api")
    after = _post(ofrep_client, f"{BULK}/f", {}, token).json()
    assert after["value"] is True
    assert after["metadata"] == {"revision": 4, "version": 4}


def test_evaluate_flags__registered_consumer__held_revision_follows_200_and_304(
    ofrep_client, recorded
):
    flag_make("f", enabled=True, rollout_percentage=100)
    consumer, raw = consumer_make()
    response = _post(ofrep_client, BULK, {"context": {}}, raw)
    consumer.refresh_from_db()
    assert consumer.held_revision == 0  # recorded by a worker, off the request path
    recorded()
    consumer.refresh_from_db()
    assert consumer.held_revision == response.json()["metadata"]["revision"] == 2
    assert consumer.last_fetch_at is not None

    flag_change(flag_key="f", changes={"enabled": False}, actor=None, reason="x", source="api")
    etag = _post(ofrep_client, BULK, {"context": {}}, token_make(name="someone-else"))["ETag"]
    recorded()
    consumer.refresh_from_db()
    assert consumer.held_revision == 2  # another token's fetch does not count for this consumer
    assert (
        _post(ofrep_client, BULK, {"context": {}}, raw, HTTP_IF_NONE_MATCH=etag).status_code == 304
    )
    recorded()
    consumer.refresh_from_db()
    assert consumer.held_revision == 3


def test_evaluate_flag__registered_consumer__single_evaluation_counts_too(ofrep_client, recorded):
    flag_make("f", enabled=True, rollout_percentage=100)
    consumer, raw = consumer_make()
    assert _post(ofrep_client, f"{BULK}/ghost", {}, raw).status_code == 404
    recorded()
    consumer.refresh_from_db()
    assert consumer.held_revision == 0
    _post(ofrep_client, f"{BULK}/f", {}, raw)
    recorded()
    consumer.refresh_from_db()
    assert consumer.held_revision == 2


def test_flag_consumer_fetch_record__older_revision__never_lowers_held(ofrep_client):
    from rollouts.services.consumers import flag_consumer_fetch_record

    consumer, _ = consumer_make()
    assert flag_consumer_fetch_record(consumer_id=consumer.pk, revision=7) is True
    assert flag_consumer_fetch_record(consumer_id=consumer.pk, revision=5) is False
    consumer.refresh_from_db()
    assert consumer.held_revision == 7


def test_register_flag_consumer__command__consumer_and_ledger_entry(capsys):
    Target.objects.create(name="eu-west")
    token_make()
    token = ApiToken.objects.get()
    call_command(
        "register_flag_consumer",
        "--name",
        "web-eu",
        "--token-id",
        str(token.pk),
        "--target",
        "eu-west",
    )
    consumer = FlagConsumer.objects.get()
    assert (consumer.name, consumer.target.name, consumer.token_id) == (
        "web-eu",
        "eu-west",
        token.pk,
    )
    entry = LedgerEntry.objects.get(action="flag_consumer.registered")
    assert entry.payload["target"] == "eu-west"
    assert "registered for eu-west" in capsys.readouterr().out


def test_register_flag_consumer__unknown_target__error_lists_known_and_creates_nothing():
    Target.objects.create(name="eu-west")
    Target.objects.create(name="us-east")
    token_make()
    token = ApiToken.objects.get()
    with pytest.raises(
        CommandError, match="no target named 'mars'; known targets: eu-west, us-east"
    ):
        call_command(
            "register_flag_consumer", "--name", "x", "--token-id", str(token.pk), "--target", "mars"
        )
    assert not Target.objects.filter(name="mars").exists()
    assert not FlagConsumer.objects.exists()


def test_register_flag_consumer__token_without_evaluate_scope__refused():
    Target.objects.create(name="eu-west")
    token_make("ledger:read")
    token = ApiToken.objects.get()
    with pytest.raises(CommandError, match="lacks the 'flags:evaluate' scope"):
        call_command(
            "register_flag_consumer",
            "--name",
            "x",
            "--token-id",
            str(token.pk),
            "--target",
            "eu-west",
        )
    assert not FlagConsumer.objects.exists()
