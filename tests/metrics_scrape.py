"""Scraping /metrics in tests. Import `fresh_evaluation_tally` into a module that scrapes (the
import is what registers the fixture)."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stepwise import metrics


@pytest.fixture(autouse=True)
def fresh_evaluation_tally(monkeypatch) -> None:
    """A running tally of its own: one kept from another test would hold that test's
    rolled-back rows (SQLite reuses their ids)."""
    monkeypatch.setattr(metrics, "evaluation_tally", metrics.EvaluationTally())


def scrape(client, **extra) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of one 200 scrape."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, frozenset(labels.items())))
