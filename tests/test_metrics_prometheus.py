"""A real Prometheus scrapes the served /metrics with a token, and answers with Stepwise's numbers."""

from urllib.parse import urlparse

import pytest

from accounts.services import api_token_create
from ledger.models import LedgerEntry
from ledger.services import ledger_append
from tests.factories import UserFactory
from tests.prometheus_server import prometheus_scraping


@pytest.mark.prometheus
def test_metrics__scraped_by_prometheus_with_token__ledger_appends_queryable(
    live_server, settings, tmp_path
):
    settings.METRICS_ALLOW_NETWORKS = []  # the token, not the loopback address, lets it in
    _, raw = api_token_create(
        user=UserFactory(role="viewer"), name="prometheus", scopes=["metrics:read"]
    )
    target = urlparse(live_server.url).netloc

    with prometheus_scraping(tmp_path, target=target, job="stepwise", bearer=raw) as prometheus:
        appended = LedgerEntry.objects.count()
        prometheus.wait_for(
            'stepwise_ledger_appends_total{job="stepwise"}',
            lambda r: r and float(r[0]["value"][1]) == appended,
        )
        ledger_append(action="manual.note", subject_type="test", subject_id=1, actor_label="t")

        prometheus.wait_for(
            'stepwise_ledger_appends_total{job="stepwise"}',
            lambda r: r and float(r[0]["value"][1]) == appended + 1,
        )
