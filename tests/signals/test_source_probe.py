"""Credentials read from the environment at query time, and the live test of a source that
answers within seconds whatever the network does."""

import base64
import threading
import time

import pytest

from signals import prometheus
from signals.models import MetricSource
from signals.prometheus import PrometheusError, prometheus_instant, prometheus_probe
from tests.prometheus_server import free_port


def _source(url: str, **kwargs: object) -> MetricSource:
    return MetricSource(
        name="prom", kind="prometheus", url=url, **({"timeout_seconds": 2.0} | kwargs)
    )


def test_prometheus_instant__bearer_from_env__token_sent_never_stored(fake_api, monkeypatch):
    monkeypatch.setenv("PROM_TOKEN", "s3cret-token")
    source = _source(fake_api.url, auth_scheme="bearer", auth_secret_ref="env:PROM_TOKEN")

    assert prometheus_instant(source=source, promql="up") == 4.5

    assert fake_api.requests[0]["headers"]["Authorization"] == "Bearer s3cret-token"


def test_prometheus_instant__basic_from_env__username_and_password_sent(fake_api, monkeypatch):
    monkeypatch.setenv("PROM_PASSWORD", "pw:with:colons")
    source = _source(
        fake_api.url,
        auth_scheme="basic",
        auth_username="stepwise",
        auth_secret_ref="env:PROM_PASSWORD",
    )

    prometheus_instant(source=source, promql="up")

    sent = fake_api.requests[0]["headers"]["Authorization"]
    assert sent == "Basic " + base64.b64encode(b"stepwise:pw:with:colons").decode()


def test_prometheus_instant__secret_variable_unset__refused_before_any_request(
    fake_api, monkeypatch
):
    monkeypatch.delenv("PROM_TOKEN", raising=False)
    source = _source(fake_api.url, auth_scheme="bearer", auth_secret_ref="env:PROM_TOKEN")

    with pytest.raises(PrometheusError, match="variable PROM_TOKEN is not set") as caught:
        prometheus_instant(source=source, promql="up")

    assert caught.value.retryable is False
    assert fake_api.requests == []


def test_prometheus_probe__answering_source__value_and_query(fake_api):
    probe = prometheus_probe(source=_source(fake_api.url), promql="  ")

    assert (probe.ok, probe.value, probe.query) == (True, 4.5, "count(up)")
    assert fake_api.requests[0]["params"] == {"query": ["count(up)"]}


def test_prometheus_probe__connection_refused__error_not_raised():
    probe = prometheus_probe(source=_source(f"http://127.0.0.1:{free_port()}"))

    assert not probe.ok and probe.value is None
    assert "cannot reach Prometheus" in probe.error


def test_prometheus_probe__server_never_answers__answered_at_the_deadline(fake_api, monkeypatch):
    monkeypatch.setattr(prometheus, "PROBE_TIMEOUT_SECONDS", 0.3)
    fake_api.delay = 30
    source = _source(fake_api.url, timeout_seconds=30)

    started = time.monotonic()
    probe = prometheus_probe(source=source)

    assert time.monotonic() - started < 2
    assert probe.error == "prom: no answer within 0.3 s"


def test_prometheus_probe__resolver_hangs_past_every_timeout__still_answered(monkeypatch):
    # What no HTTP timeout covers (a name lookup the resolver sits on): the probe's own deadline.
    release = threading.Event()
    monkeypatch.setattr(prometheus, "PROBE_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(prometheus, "prometheus_instant", lambda **_: release.wait(10))
    try:
        started = time.monotonic()
        probe = prometheus_probe(source=_source("http://never.invalid:9090", timeout_seconds=30))
        assert time.monotonic() - started < 2
    finally:
        release.set()
    assert probe.error == "prom: no answer within 0.3 s"


def test_prometheus_probe__query_too_long__refused_without_asking(fake_api):
    probe = prometheus_probe(source=_source(fake_api.url), promql="x" * 3000)

    assert "at most 2000 characters" in probe.error
    assert fake_api.requests == []
