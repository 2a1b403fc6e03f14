"""Importing OpenSLO as it is written in the wild: DataSources registered with the SLOs in one
transaction and ledgered, inline sources resolved against the registered ones, and the
counter/rate warnings on the import page, the SLO page and from the command."""

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from leadership.services import slos_import
from ledger.models import LedgerEntry
from signals.models import SLO, MetricSource
from signals.services import metric_source_create
from signals.slo_spec import SLOInvalid

pytestmark = pytest.mark.django_db
WILD = Path(__file__).resolve().parents[1] / "signals" / "openslo_wild"


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_slos_import__nobl9_file__source_and_slos_created_ledgered_then_unchanged():
    text = (WILD / "nobl9.yaml").read_text()

    first = slos_import(text=text, actor=None, origin="test")
    second = slos_import(text=text, actor=None, origin="test")

    source = MetricSource.objects.get(name="prometheus-prod")
    assert (source.kind, source.url) == ("prometheus", "http://prometheus.monitoring.svc:9090")
    assert [outcome for _, outcome in first.sources] == ["created"]
    assert [outcome for _, outcome in second.sources] == ["unchanged"]
    assert {slo.source_id for slo in SLO.objects.all()} == {source.pk}
    actions = list(LedgerEntry.objects.order_by("seq").values_list("action", flat=True))
    assert actions == ["metric_source.created", "slo.created", "slo.created"]
    assert [path for path, _ in first.warnings] == [
        "documents[3].spec.indicator.spec.ratioMetric.total.metricSource.spec"
    ]


def test_slos_import__data_source_with_a_new_url__source_repointed_and_ledgered():
    metric_source_create(name="prometheus-prod", kind="prometheus", url="http://old:9090")

    imported = slos_import(text=(WILD / "nobl9.yaml").read_text(), actor=None, origin="test")

    assert [outcome for _, outcome in imported.sources] == ["updated"]
    assert MetricSource.objects.get(name="prometheus-prod").url.startswith("http://prometheus.")
    entry = LedgerEntry.objects.get(action="metric_source.updated")
    assert entry.payload["url"] == "http://prometheus.monitoring.svc:9090"


def test_slos_import__data_source_names_the_builtin_store__refused_and_nothing_written():
    metric_source_create(name="prometheus-prod")  # the built-in kind

    with pytest.raises(SLOInvalid) as refused:
        slos_import(text=(WILD / "nobl9.yaml").read_text(), actor=None, origin="test")

    assert refused.value.problems[0] == (
        "documents[0].metadata.name",
        "metric source 'prometheus-prod' is the built-in store, not Prometheus",
    )
    assert not SLO.objects.exists() and not LedgerEntry.objects.exists()


def test_slos_import__slo_names_an_unknown_source_beside_a_data_source__nothing_half_written():
    text = (
        (WILD / "nobl9.yaml")
        .read_text()
        .replace(
            "metricSourceRef: prometheus-prod\n            type: Prometheus\n            spec:\n"
            "              query: sum(http_requests_total",
            "metricSourceRef: nowhere\n            type: Prometheus\n            spec:\n"
            "              query: sum(http_requests_total",
        )
    )

    with pytest.raises(SLOInvalid) as refused:
        slos_import(text=text, actor=None, origin="test")

    assert "reads 'nowhere' but good reads 'prometheus-prod'" in str(refused.value)
    assert not MetricSource.objects.exists()
    assert not LedgerEntry.objects.exists()


def test_slos_import__explicit_ref_to_an_unregistered_source__refused_and_data_source_rolled_back():
    text = (
        (WILD / "nobl9.yaml")
        .read_text()
        .replace("metricSourceRef: prometheus-prod", "metricSourceRef: thanos")
    )

    with pytest.raises(SLOInvalid) as refused:
        slos_import(text=text, actor=None, origin="test")

    assert "no metric source named 'thanos'" in str(refused.value)
    assert "prometheus-prod" in str(refused.value)  # declared in the file: among the known
    assert not MetricSource.objects.exists() and not LedgerEntry.objects.exists()


def test_slo_import__sloth_file_two_sources__400_with_path_and_the_names(client, role_user):
    for name in ("prometheus", "thanos"):
        metric_source_create(name=name, kind="prometheus", url=f"http://{name}:9090")
    client.force_login(role_user("tpm"))

    page = client.post(reverse("slo-import"), {"text": (WILD / "sloth.yaml").read_text()})

    assert page.status_code == 400
    body = page.content.decode()
    assert "documents[0].spec.indicator.spec.ratioMetric.bad.metricSource.metricSourceRef" in body
    assert "(prometheus, thanos)" in body
    assert not SLO.objects.exists()


def test_slo_import__sloth_file_one_source__imported_and_rate_warning_shown(client, role_user):
    metric_source_create(name="prometheus", kind="prometheus", url="http://prometheus:9090")
    client.force_login(role_user("tpm"))

    page = client.post(reverse("slo-import"), {"text": (WILD / "sloth.yaml").read_text()})

    assert page.status_code == 200
    assert SLO.objects.get().source.name == "prometheus"
    body = page.content.decode()
    assert 'data-testid="import-warnings"' in body
    assert "counter: true, but the query already computes rate()" in body


def test_slo_detail__counter_true_over_a_rate__warning_on_the_page(client, role_user):
    metric_source_create(name="prometheus", kind="prometheus", url="http://prometheus:9090")
    slos_import(text=(WILD / "sloth.yaml").read_text(), actor=None, origin="test")
    client.force_login(role_user("viewer"))

    page = client.get(reverse("slo-detail", args=["myservice-requests-availability"]))

    assert 'data-testid="slo-warnings"' in page.content.decode()
    assert "already computes rate()" in page.content.decode()


def test_slo_detail__pyrra_raw_counters__no_warning(client, role_user):
    metric_source_create(name="prometheus-k8s", kind="prometheus", url="http://p:9090")
    slos_import(text=(WILD / "pyrra.yaml").read_text(), actor=None, origin="test")
    client.force_login(role_user("viewer"))

    page = client.get(reverse("slo-detail", args=["prometheus-http-errors"]))

    assert page.status_code == 200
    assert 'data-testid="slo-warnings"' not in page.content.decode()


def test_import_openslo__nobl9_file__source_line_and_warning_printed(capsys):
    call_command("import_openslo", str(WILD / "nobl9.yaml"))

    out, err = capsys.readouterr()
    assert "created   metric source prometheus-prod (http://prometheus.monitoring.svc:9090)" in out
    assert "warning: documents[3].spec.indicator.spec.ratioMetric.total" in err


def test_import_openslo__bad_data_source_url__command_error_with_the_path(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(
        "apiVersion: openslo/v1\nkind: DataSource\nmetadata: {name: prom}\n"
        "spec: {type: Prometheus, connectionDetails: {url: 'prometheus:9090'}}\n"
    )
    with pytest.raises(CommandError) as failed:
        call_command("import_openslo", str(path))
    assert "documents[0].spec.connectionDetails.url: must be an http(s) URL" in str(failed.value)
    assert not MetricSource.objects.exists()
