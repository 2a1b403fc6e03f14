"""The database unreachable or its pool exhausted: a 503 with Retry-After, never a bare 500."""

from unittest import mock

import pytest
from django.db import OperationalError
from django.test import Client

pytestmark = pytest.mark.django_db


def test_page__database_unavailable__503_with_retry_after():
    client = Client(raise_request_exception=False)
    with mock.patch(
        "stepwise.views.readiness_checks",
        side_effect=OperationalError("couldn't get a connection after 5.00 sec"),
    ):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "busy or unreachable" in response.content.decode()


def test_ofrep__database_unavailable__503_json_with_retry_after():
    from rollouts.ofrep import ofrep_app
    from tests.asgi_client import AsgiClient
    from tests.rollouts.flag_factories import token_make

    with mock.patch(
        "rollouts.ofrep.config_current", side_effect=OperationalError("the connection is closed")
    ):
        response = AsgiClient(ofrep_app).post(
            "/ofrep/v1/evaluate/flags", b"{}", HTTP_AUTHORIZATION=f"Bearer {token_make()}"
        )
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == {"errorDetails": "the database is busy or unreachable; retry shortly"}


def test_other_errors__still_500():
    client = Client(raise_request_exception=False)
    with mock.patch("stepwise.views.readiness_checks", side_effect=KeyError("bug")):
        response = client.get("/readyz")
    assert response.status_code == 500
