"""The SLO pages, the OpenSLO import/export and declaring an incident from a burn-rate alert."""

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from incidents.models import Incident
from ledger.models import LedgerEntry
from signals.models import SLO, SLOAlert
from signals.openslo import openslo_parse
from signals.services import slo_save
from signals.slos import slo_refresh
from tests.slo_data import counters, ratio_spec

pytestmark = pytest.mark.django_db
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "openslo"


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _burning(name: str = "login-availability", *, error_ratio: float = 0.05) -> SLO:
    slo, _ = slo_save(spec=ratio_spec(name=name))
    now = timezone.now()
    counters(
        start=now - timedelta(hours=2),
        end=now,
        rps=20,
        error_ratio_at=lambda m: error_ratio,
        step=30,
    )
    slo_refresh(slo_id=slo.pk, now=now)
    return SLO.objects.get(pk=slo.pk)


def _healthy(name: str) -> SLO:
    spec = ratio_spec(name=name, service="search")
    slo, _ = slo_save(spec=spec)
    return slo


def test_slo_overview__burning_and_unrolled__worst_first_with_numbers(client, role_user):
    _healthy("quiet-slo")
    burning = _burning()
    client.force_login(role_user("viewer"))

    page = client.get(reverse("slos"))

    assert page.status_code == 200
    rows = page.context["statuses"]
    assert [s.slo.name for s in rows] == [burning.name, "quiet-slo"]
    body = page.content.decode()
    assert 'data-state="exhausted"' in body
    assert "no data" in body
    assert "Import OpenSLO" not in body  # a viewer reads, does not import


def test_slo_overview_and_detail__source_silent__badge_says_so_beside_the_open_page(
    client, role_user
):
    burning = _burning()
    slo_refresh(slo_id=burning.pk, now=timezone.now() + timedelta(minutes=20))
    client.force_login(role_user("viewer"))

    overview = client.get(reverse("slos")).content.decode()
    detail = client.get(reverse("slo-detail", args=[burning.name])).content.decode()

    assert 'data-testid="silent"' in overview and "silent 5m" in overview
    assert 'data-testid="open-alert"' in overview
    assert "silent: no events in the last 5m" in detail


def test_slo_overview__htmx__renders_the_table_only(client, role_user):
    _burning()
    client.force_login(role_user("viewer"))
    page = client.get(reverse("slos"), HTTP_HX_REQUEST="true")
    body = page.content.decode()
    assert body.lstrip().startswith('<div id="slo-table"')
    assert "<html" not in body


def test_slo_detail__burning__charts_alerts_and_declare_button(client, role_user):
    slo = _burning()
    client.force_login(role_user("commander"))

    page = client.get(reverse("slo-detail", args=[slo.name]))

    body = page.content.decode()
    assert page.status_code == 200
    for chart in ("chart-sli", "chart-budget", "chart-burn"):
        assert f'id="{chart}"' in body
    assert 'data-testid="no-latency"' in body  # a ratio SLI has no latency distribution
    assert body.count('data-testid="alert"') == 3  # page 1h, page 6h, ticket 3d
    assert 'data-testid="declare-incident"' in body


def test_slo_detail__unknown__404(client, role_user):
    client.force_login(role_user("viewer"))
    assert client.get(reverse("slo-detail", args=["nope"])).status_code == 404


def test_slo_alert_declare__twice__one_incident_linked_to_the_alert(client, role_user):
    slo = _burning()
    alert = SLOAlert.objects.get(slo=slo, long_window_seconds=3600)
    client.force_login(role_user("commander"))

    first = client.post(reverse("slo-alert-declare", args=[alert.pk]))
    second = client.post(reverse("slo-alert-declare", args=[alert.pk]))

    incident = Incident.objects.get()
    assert first.status_code == second.status_code == 302
    assert (
        first["Location"] == second["Location"] == reverse("incident-console", args=[incident.pk])
    )
    assert incident.slo_alert == alert
    assert incident.source == Incident.Source.SLO
    assert incident.services == ["login"]
    assert incident.severity == Incident.Severity.SEV2
    assert incident.detected_at == alert.opened_at
    page = client.get(reverse("slo-detail", args=[slo.name])).content.decode()
    assert f"INC-{incident.pk}" in page


def test_slo_alert_declare__resolved_alert__refused_and_back_only_to_this_site(client, role_user):
    slo = _burning()
    alert = SLOAlert.objects.get(slo=slo, long_window_seconds=3600)
    SLOAlert.objects.filter(pk=alert.pk).update(resolved_at=timezone.now())
    client.force_login(role_user("commander"))
    url = reverse("slo-alert-declare", args=[alert.pk])

    response = client.post(url, {"back": "//evil.example/x"}, follow=False)
    same_site = client.post(url, {"back": reverse("slo-detail", args=[slo.name])})

    assert response.status_code == 302 and response["Location"] == reverse("slos")
    assert same_site["Location"] == reverse("slo-detail", args=[slo.name])
    assert not Incident.objects.exists()
    page = client.get(reverse("slos"))
    assert "resolved at" in page.content.decode()


def test_slo_import__empty_upload__the_files_own_error_shown(client, role_user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(role_user("tpm"))

    page = client.post(
        reverse("slo-import"), {"text": "", "file": SimpleUploadedFile("slo.yaml", b"")}
    )

    assert page.status_code == 400
    assert "The submitted file is empty." in page.content.decode()


def test_slo_alert_declare__viewer__403_and_nothing_declared(client, role_user):
    slo = _burning()
    alert = SLOAlert.objects.filter(slo=slo).first()
    client.force_login(role_user("viewer"))
    assert client.post(reverse("slo-alert-declare", args=[alert.pk])).status_code == 403
    assert not Incident.objects.exists()


def test_slo_import__tpm_pastes_a_file__created_then_unchanged_with_ledger(client, role_user):
    client.force_login(role_user("tpm"))
    text = (EXAMPLES / "login-availability.yaml").read_text()

    first = client.post(reverse("slo-import"), {"text": text})
    second = client.post(reverse("slo-import"), {"text": text})

    assert first.status_code == 200
    assert [outcome for _, outcome in first.context["imported"].slos] == ["created"]
    assert [outcome for _, outcome in second.context["imported"].slos] == ["unchanged"]
    slo = SLO.objects.get(name="login-availability")
    assert slo.owner == "identity-team" and slo.objective == pytest.approx(0.999)
    assert LedgerEntry.objects.filter(action="slo.created", subject_id=str(slo.pk)).count() == 1


def test_slo_import__bad_file__400_with_every_problem_by_path_and_nothing_stored(client, role_user):
    client.force_login(role_user("tpm"))
    bad = """
apiVersion: openslo/v1
kind: SLO
metadata: {name: bad-one}
spec:
  service: x
  indicator:
    metadata: {name: x}
    spec:
      ratioMetric:
        good: {metricSource: {type: Prometheus, metricSourceRef: nowhere, spec: {query: up}}}
        total: {metricSource: {type: Prometheus, metricSourceRef: nowhere, spec: {query: up}}}
  timeWindow: [{duration: 28d, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{target: 1.5}]
  colour: blue
"""
    page = client.post(reverse("slo-import"), {"text": bad})

    assert page.status_code == 400
    paths = [path for path, _ in page.context["problems"]]
    assert any(p.endswith("objectives[0].target") for p in paths)
    assert any(p.endswith("spec.colour") for p in paths)
    assert not SLO.objects.exists()


def test_slo_import__unknown_metric_source__refused_by_name(client, role_user):
    client.force_login(role_user("tpm"))
    page = client.post(
        reverse("slo-import"), {"text": (EXAMPLES / "checkout-availability.yaml").read_text()}
    )
    assert page.status_code == 400
    reasons = " ".join(reason for _, reason in page.context["problems"])
    assert "no metric source named 'prometheus'" in reasons
    assert not SLO.objects.exists()


def test_slo_import__empty__form_error(client, role_user):
    client.force_login(role_user("tpm"))
    page = client.post(reverse("slo-import"), {"text": "  "})
    assert page.status_code == 400
    assert "paste OpenSLO YAML or choose a file" in page.content.decode()


def test_slo_import__viewer__403(client, role_user):
    client.force_login(role_user("viewer"))
    text = (EXAMPLES / "login-availability.yaml").read_text()
    assert client.post(reverse("slo-import"), {"text": text}).status_code == 403
    assert not SLO.objects.exists()


def test_slo_export__one_and_all__parse_back_to_the_stored_specs(client, role_user):
    call_command("import_openslo", str(EXAMPLES / "login-latency.yaml"))
    call_command("import_openslo", str(EXAMPLES / "search-api.yaml"))
    client.force_login(role_user("viewer"))

    one = client.get(reverse("slo-export", args=["login-latency"]))
    every = client.get(reverse("slo-export-all"))

    assert one["Content-Type"] == "application/yaml"
    assert [s.name for s in openslo_parse(one.content.decode()).slos] == ["login-latency"]
    exported = {s.name: s for s in openslo_parse(every.content.decode()).slos}
    original = {s.name: s for s in openslo_parse((EXAMPLES / "search-api.yaml").read_text()).slos}
    assert exported["search-availability"] == original["search-availability"]
    assert len(list(yaml.safe_load_all(every.content))) == 2


def test_import_openslo__bad_file__command_error_lists_problems(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: openslo/v1\nkind: AlertPolicy\nmetadata: {name: x}\n")
    with pytest.raises(CommandError) as failed:
        call_command("import_openslo", str(path))
    assert "nothing changed" in str(failed.value)
    assert "documents[0].kind" in str(failed.value)


def test_import_openslo__missing_file__clear_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_openslo", str(tmp_path / "absent.yaml"))


def test_slo_detail__htmx__numbers_and_alerts_only(client, role_user):
    slo = _burning()
    client.force_login(role_user("viewer"))
    body = client.get(reverse("slo-detail", args=[slo.name]), HTTP_HX_REQUEST="true").content
    text = body.decode()
    assert text.lstrip().startswith('<div id="slo-live"')
    assert 'data-testid="slo-budget"' in text and 'data-testid="alert"' in text
    assert "chart-sli" not in text


def test_slo_detail__alert_rules__budget_shares_read_2_5_and_10_percent(client, role_user):
    slo = _burning()
    client.force_login(role_user("viewer"))
    body = client.get(reverse("slo-detail", args=[slo.name])).content.decode()
    for share in ("2% in 1h", "5% in 6h", "10% in 3d"):
        assert share in body
