import pytest

from signals.models import MetricSource
from signals.services import SourceInvalid, metric_source_create

pytestmark = pytest.mark.django_db


def test_metric_source_create__prometheus__settings_stored_and_header_not_in_repr():
    source = metric_source_create(
        name="prom",
        kind="prometheus",
        url="https://prom.example:9090",
        auth_header="Bearer s3cret",
        timeout_seconds=2.5,
        verify_tls=False,
    )
    source.refresh_from_db()
    assert (
        source.kind,
        source.url,
        source.auth_header,
        source.timeout_seconds,
        source.verify_tls,
    ) == (
        "prometheus",
        "https://prom.example:9090",
        "Bearer s3cret",
        2.5,
        False,
    )
    assert "s3cret" not in repr(source) and "s3cret" not in str(source)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"kind": "prometheus"}, "needs the URL"),
        ({"kind": "graphite"}, "unknown source kind 'graphite'"),
        ({"timeout_seconds": 0}, "positive number of seconds"),
        ({"name": " "}, "needs a name"),
    ],
)
def test_metric_source_create__invalid__refused_with_reason(kwargs, words):
    with pytest.raises(SourceInvalid, match=words):
        metric_source_create(**({"name": "s"} | kwargs))
    assert not MetricSource.objects.exists()


def test_metric_source_create__duplicate_name__refused():
    metric_source_create(name="builtin")
    with pytest.raises(SourceInvalid, match="already exists"):
        metric_source_create(name="builtin")
