"""Metric sources, managed: the ledgered services, `manage.py metric_source`, the JSON API under
/api/metric-sources and the page. Credentials are references; nothing shows a secret."""

import json
import re
import time

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.services import api_token_create
from leadership.services import (
    metric_source_edit,
    metric_source_register,
    metric_source_retire,
    slos_import,
)
from ledger.models import LedgerEntry
from signals import prometheus
from signals.models import MetricSource
from signals.services import SourceInvalid
from signals.slo_spec import SLOInvalid
from tests.leadership.test_slo_import_wild import WILD
from tests.prometheus_server import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(settings, monkeypatch) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setattr(prometheus, "PROBE_TIMEOUT_SECONDS", 0.5)


def _register(name: str = "prom", **fields) -> MetricSource:
    return metric_source_register(
        actor=None,
        origin="test",
        name=name,
        url=fields.pop("url", "http://prometheus:9090"),
        **fields,
    )


def _reader_of(source: str, make_plan) -> None:
    """An SLO and a running step that read `source`."""
    slos_import(
        text=(WILD / "pyrra.yaml").read_text().replace("prometheus-k8s\n", f"{source}\n", 1),
        actor=None,
        origin="test",
    )
    plan = make_plan([{"key": "cutover", "status": "running"}], key="identity")
    step = plan.steps.get()
    step.measurements = {"errors": {"source": source, "query": "sum(up)", "window": "1m"}}
    step.save()


def _unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


# --- services ------------------------------------------------------------------------------------


def test_metric_source_register__bearer_reference__ledgered_without_a_secret(role_user):
    tpm = role_user("tpm")
    source = metric_source_register(
        actor=tpm,
        origin="test",
        name="prom",
        url="https://prometheus.example:9090",
        auth_scheme="bearer",
        auth_secret_ref="env:PROM_TOKEN",
    )

    entry = LedgerEntry.objects.get(action="metric_source.created")
    assert entry.subject_id == str(source.pk) and entry.actor_id == tpm.pk
    assert entry.payload["auth_secret_ref"] == "env:PROM_TOKEN"
    assert entry.payload["url"] == "https://prometheus.example:9090"


def test_metric_source_edit__changed_then_same__one_ledger_entry():
    _register(timeout_seconds=5.0)

    _, changed = metric_source_edit(
        actor=None, origin="test", name="prom", changes={"timeout_seconds": 1.5}
    )
    _, unchanged = metric_source_edit(
        actor=None, origin="test", name="prom", changes={"timeout_seconds": 1.5}
    )

    assert (changed, unchanged) == ({"timeout_seconds": [5.0, 1.5]}, {})
    (entry,) = LedgerEntry.objects.filter(action="metric_source.updated")
    assert entry.payload["changed"] == {"timeout_seconds": [5.0, 1.5]}


def test_metric_source_retire__read_by_an_slo_and_a_step__both_named_and_ledgered(make_plan):
    _register("prom-k8s")
    _reader_of("prom-k8s", make_plan)

    _, users = metric_source_retire(actor=None, origin="test", name="prom-k8s")
    _, again = metric_source_retire(actor=None, origin="test", name="prom-k8s")

    assert users == again == ["SLO prometheus-http-errors", "step identity/cutover (running)"]
    (entry,) = LedgerEntry.objects.filter(action="metric_source.retired")
    assert entry.payload["still_read_by"] == users


def test_slos_import__annotation_names_a_retired_source__refused_new_kept_by_its_slo():
    _register("prometheus-k8s")
    imported = slos_import(text=(WILD / "pyrra.yaml").read_text(), actor=None, origin="test")
    metric_source_retire(actor=None, origin="test", name="prometheus-k8s")
    renamed = (
        (WILD / "pyrra.yaml")
        .read_text()
        .replace("name: prometheus-http-errors\n", "name: other\n", 1)
    )

    again = slos_import(
        text=(WILD / "pyrra.yaml").read_text().replace("targetPercent: 99", "targetPercent: 98"),
        actor=None,
        origin="test",
    )
    with pytest.raises(SLOInvalid) as refused:
        slos_import(text=renamed, actor=None, origin="test")

    assert [o for _, o in imported.slos] == ["created"] and [o for _, o in again.slos] == [
        "updated"
    ]
    ((path, reason),) = refused.value.problems
    assert path == "slos[0] (other).spec.indicator.source"
    assert "metric source 'prometheus-k8s' is retired" in reason


def test_slos_import__explicit_ref_to_a_retired_source__refused_as_retired():
    _register("prometheus-prod")
    metric_source_retire(actor=None, origin="test", name="prometheus-prod")
    text = (WILD / "nobl9.yaml").read_text().split("---\n", 1)[1]  # without its DataSource

    with pytest.raises(SLOInvalid) as refused:
        slos_import(text=text, actor=None, origin="test")

    assert "metric source 'prometheus-prod' is retired" in str(refused.value)


def test_slos_import__data_source_names_a_retired_source__refused_at_the_document():
    _register("prometheus-prod")
    metric_source_retire(actor=None, origin="test", name="prometheus-prod")

    with pytest.raises(SLOInvalid) as refused:
        slos_import(text=(WILD / "nobl9.yaml").read_text(), actor=None, origin="test")

    assert refused.value.problems[0] == (
        "documents[0].metadata.name",
        "metric source 'prometheus-prod' is retired; register a new one instead",
    )


# --- manage.py metric_source ---------------------------------------------------------------------


def test_metric_source_command__add_list_edit_retire__each_ledgered(capsys, make_plan):
    call_command(
        "metric_source",
        "add",
        "prom",
        "--url",
        "http://prometheus:9090",
        "--auth",
        "basic",
        "--username",
        "stepwise",
        "--secret",
        "env:PROM_PASSWORD",
    )
    call_command("metric_source", "edit", "prom", "--timeout", "2", "--no-verify-tls")
    _reader_of("prom", make_plan)
    call_command("metric_source", "list")
    call_command("metric_source", "retire", "prom")

    out, err = capsys.readouterr()
    assert "registered prom (http://prometheus:9090)" in out
    assert "changed prom timeout_seconds" in out and "changed prom verify_tls" in out
    assert "auth: basic auth from env:PROM_PASSWORD" in out
    assert "read by: SLO prometheus-http-errors, step identity/cutover (running)" in out
    assert "still read by SLO prometheus-http-errors, step identity/cutover (running)" in err
    actions = list(
        LedgerEntry.objects.filter(action__startswith="metric_source.")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["metric_source.created", "metric_source.updated", "metric_source.retired"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["add", "prom", "--url", "prometheus:9090"], "url: must be an http(s) URL"),
        (
            ["add", "prom", "--url", "http://p:9090", "--auth", "bearer", "--secret", "tok3n"],
            "env:",
        ),
        (["add", "prom", "--url", "http://p:9090", "--secret", "env:T"], "go with --auth"),
        (["edit", "nope", "--timeout", "2"], "no metric source named 'nope'"),
        (["edit", "prom"], "nothing to change"),
        (["retire", "nope"], "no metric source named 'nope'"),
        (["test", "nope"], "no Prometheus metric source named 'nope'"),
    ],
)
def test_metric_source_command__bad_input__clear_error_nothing_written(args, words):
    if args[1] == "prom" and args[0] == "edit":
        _register()
    before = LedgerEntry.objects.count()
    with pytest.raises(CommandError, match=re.escape(words)) as failed:
        call_command("metric_source", *args)
    assert "tok3n" not in str(failed.value)
    assert LedgerEntry.objects.count() == before


def test_metric_source_command__test_unreachable__error_within_the_deadline():
    _register(url=_unreachable())
    started = time.monotonic()
    with pytest.raises(CommandError, match="count\\(up\\): prom: cannot reach Prometheus"):
        call_command("metric_source", "test", "prom")
    assert time.monotonic() - started < 3


def test_metric_source_command__test_answering__value_printed(capsys, fake_api):
    _register(url=fake_api.url)
    call_command("metric_source", "test", "prom", "--query", "sum(up)")
    assert "prom: sum(up) = 4.5" in capsys.readouterr().out


# --- the API -------------------------------------------------------------------------------------


def _token(role_user, role: str, *scopes: str) -> dict[str, str]:
    _, raw = api_token_create(user=role_user(role), name="t", scopes=list(scopes))
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def _post(client, url: str, body: object, **headers: str):
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


def test_api_register__tpm_token__201_with_the_reference_never_a_secret(
    client, role_user, monkeypatch
):
    monkeypatch.setenv("PROM_TOKEN", "s3cret-token")
    auth = _token(role_user, "tpm", "sources:write", "sources:read")

    created = _post(
        client,
        "/api/metric-sources/register",
        {
            "name": "prom",
            "url": "http://prometheus:9090",
            "auth_scheme": "bearer",
            "auth_secret_ref": "env:PROM_TOKEN",
        },
        **auth,
    )
    listed = client.get("/api/metric-sources", **auth)

    assert created.status_code == 201
    assert created.json()["auth"] == {
        "scheme": "bearer",
        "username": "",
        "secret_ref": "env:PROM_TOKEN",
        "secret_set": True,
        "legacy_header": False,
    }
    assert [s["name"] for s in listed.json()["sources"]] == ["prom"]
    assert "s3cret" not in created.content.decode() + listed.content.decode()
    assert LedgerEntry.objects.filter(action="metric_source.created").exists()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "prom", "url": "prometheus:9090"}, 400, "url: must be an http(s) URL"),
        ({"name": "prom", "url": "http://p:9090", "colour": "red"}, 400, "unknown field(s) colour"),
        ({"name": 7, "url": "http://p:9090"}, 400, "name: must be a string"),
        ({"name": "prom", "url": "http://p:9090", "verify_tls": "no"}, 400, "verify_tls"),
        ({"name": "prom", "url": "http://p:9090", "timeout_seconds": "5"}, 400, "timeout"),
        (
            {
                "name": "prom",
                "url": "http://p:9090",
                "auth_scheme": "bearer",
                "auth_secret_ref": "tok3n-value",
            },
            400,
            "env:PROM_TOKEN",
        ),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_api_register__bad_body__400_with_reason_nothing_written(
    client, role_user, body, status, words
):
    response = _post(
        client, "/api/metric-sources/register", body, **_token(role_user, "tpm", "sources:write")
    )
    assert response.status_code == status
    assert words in response.json()["error"]
    assert "tok3n" not in response.content.decode()
    assert not MetricSource.objects.exists()


def test_api_register__viewer_or_token_without_scope__403(client, role_user):
    body = {"name": "prom", "url": "http://p:9090"}
    as_viewer = _post(
        client,
        "/api/metric-sources/register",
        body,
        **_token(role_user, "viewer", "sources:write"),
    )
    read_only = _post(
        client, "/api/metric-sources/register", body, **_token(role_user, "tpm", "sources:read")
    )

    assert as_viewer.status_code == 403 and "manage_metric_source" in as_viewer.json()["error"]
    assert read_only.status_code == 403 and "sources:write" in read_only.json()["error"]
    assert not MetricSource.objects.exists()


def test_api_list__viewer_token__reads_with_users(client, role_user, make_plan):
    _register("prom-k8s")
    _reader_of("prom-k8s", make_plan)
    auth = _token(role_user, "viewer", "sources:read")

    (shown,) = client.get("/api/metric-sources", **auth).json()["sources"]

    assert shown["read_by"] == ["SLO prometheus-http-errors", "step identity/cutover (running)"]


def test_api_edit__settings__changed_fields_and_unknown_404(client, role_user):
    _register()
    auth = _token(role_user, "tpm", "sources:write")

    edited = _post(client, "/api/metric-sources/prom/edit", {"timeout_seconds": 2}, **auth)
    renamed = _post(client, "/api/metric-sources/prom/edit", {"name": "x"}, **auth)
    missing = _post(client, "/api/metric-sources/nope/edit", {"timeout_seconds": 2}, **auth)

    assert edited.status_code == 200 and edited.json()["changed"] == ["timeout_seconds"]
    assert edited.json()["timeout_seconds"] == 2
    assert renamed.status_code == 400 and "unknown field(s) name" in renamed.json()["error"]
    assert missing.status_code == 404 and "no metric source named 'nope'" in missing.json()["error"]


def test_api_test__unreachable__ok_false_within_the_deadline(client, role_user):
    _register(url=_unreachable())
    auth = _token(role_user, "tpm", "sources:write")

    started = time.monotonic()
    answer = _post(client, "/api/metric-sources/prom/test", {"query": "sum(up)"}, **auth)

    assert time.monotonic() - started < 3
    assert answer.status_code == 200
    assert answer.json()["ok"] is False and "cannot reach Prometheus" in answer.json()["error"]


def test_api_test__answering__the_value(client, role_user, fake_api):
    _register(url=fake_api.url)
    auth = _token(role_user, "tpm", "sources:write")

    answer = client.post("/api/metric-sources/prom/test", content_type="application/json", **auth)

    assert answer.json() | {"seconds": 0} == {
        "source": "prom",
        "query": "count(up)",
        "ok": True,
        "value": 4.5,
        "error": "",
        "seconds": 0,
    }


def test_api_retire__read_by_an_slo__warning_names_it(client, role_user, make_plan):
    _register("prom-k8s")
    _reader_of("prom-k8s", make_plan)
    auth = _token(role_user, "tpm", "sources:write")

    answer = client.post("/api/metric-sources/prom-k8s/retire", **auth)

    assert answer.status_code == 200 and answer.json()["retired_at"]
    assert answer.json()["warning"].startswith(
        "still read by SLO prometheus-http-errors, step identity/cutover (running)"
    )


# --- the page ------------------------------------------------------------------------------------


def test_metric_sources_page__viewer__reads_the_list_without_forms(client, role_user):
    _register(auth_scheme="bearer", auth_secret_ref="env:PROM_TOKEN")
    client.force_login(role_user("viewer"))

    page = client.get(reverse("metric-sources"))
    detail = client.get(reverse("metric-source-detail", args=["prom"]))

    assert page.status_code == detail.status_code == 200
    body = page.content.decode()
    assert 'data-name="prom"' in body and "env:PROM_TOKEN" in body
    assert 'data-testid="metric-source-register"' not in body
    assert 'data-testid="metric-source-retire"' not in detail.content.decode()


def test_metric_sources_page__viewer_posts__403_nothing_written(client, role_user):
    _register()
    client.force_login(role_user("viewer"))
    form = {"name": "other", "url": "http://p:9090", "timeout_seconds": "5"}

    assert client.post(reverse("metric-sources"), form).status_code == 403
    assert client.post(reverse("metric-source-retire", args=["prom"])).status_code == 403
    assert client.post(reverse("metric-source-test", args=["prom"])).status_code == 403
    assert list(MetricSource.objects.values_list("name", "retired_at")) == [("prom", None)]


def test_metric_sources_page__tpm_registers__redirected_to_it_and_ledgered(client, role_user):
    client.force_login(role_user("tpm"))
    form = {
        "name": "prom",
        "url": "http://prometheus:9090",
        "timeout_seconds": "4",
        "verify_tls": "on",
        "auth_scheme": "basic",
        "auth_username": "stepwise",
        "auth_secret_ref": "env:PROM_PASSWORD",
    }

    response = client.post(reverse("metric-sources"), form, follow=True)

    assert response.redirect_chain[-1][0] == reverse("metric-source-detail", args=["prom"])
    source = MetricSource.objects.get()
    assert (source.auth_username, source.auth_secret_ref, source.timeout_seconds) == (
        "stepwise",
        "env:PROM_PASSWORD",
        4.0,
    )
    assert LedgerEntry.objects.filter(action="metric_source.created").count() == 1


def test_metric_sources_page__pasted_token__400_form_error_token_not_shown_back(client, role_user):
    client.force_login(role_user("tpm"))
    form = {
        "name": "prom",
        "url": "http://prometheus:9090",
        "timeout_seconds": "5",
        "auth_scheme": "bearer",
        "auth_secret_ref": "glpat-tok3n",
    }

    page = client.post(reverse("metric-sources"), form)

    assert page.status_code == 400
    body = page.content.decode()
    assert 'data-testid="metric-source-error"' in body and "env:PROM_TOKEN" in body
    assert "tok3n" not in body
    assert not MetricSource.objects.exists()


def test_metric_source_page__edit_bad_url__400_and_stored_url_kept(client, role_user):
    _register()
    client.force_login(role_user("tpm"))

    page = client.post(
        reverse("metric-source-detail", args=["prom"]), {"url": "nowhere", "timeout_seconds": "5"}
    )

    assert page.status_code == 400
    assert "url: must be an http(s) URL" in page.content.decode()
    assert MetricSource.objects.get().url == "http://prometheus:9090"


def test_metric_source_page__test_unreachable__error_shown_within_the_deadline(client, role_user):
    _register(url=_unreachable())
    client.force_login(role_user("tpm"))

    started = time.monotonic()
    page = client.post(reverse("metric-source-test", args=["prom"]), {"query": ""})

    assert time.monotonic() - started < 3
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-ok="false"' in body and "cannot reach Prometheus" in body


def test_metric_source_page__retire_read_source__warning_names_readers(
    client, role_user, make_plan
):
    _register("prom-k8s")
    _reader_of("prom-k8s", make_plan)
    client.force_login(role_user("tpm"))

    page = client.post(reverse("metric-source-retire", args=["prom-k8s"]), follow=True)

    body = page.content.decode()
    assert "Retired prom-k8s" in body
    assert "Still read by SLO prometheus-http-errors, step identity/cutover (running)" in body
    assert 'data-testid="retired"' in body and 'data-testid="metric-source-edit"' not in body
    assert MetricSource.objects.get().retired_at is not None


def test_metric_source_page__unknown__404(client, role_user):
    client.force_login(role_user("viewer"))
    assert client.get(reverse("metric-source-detail", args=["nope"])).status_code == 404


def test_metric_source_register__duplicate__refused():
    _register()
    with pytest.raises(SourceInvalid, match="already exists"):
        _register()
    assert LedgerEntry.objects.filter(action="metric_source.created").count() == 1


def test_api_read__one_source_by_token__shown_and_unknown_404(client, role_user):
    _register(auth_scheme="basic", auth_username="stepwise", auth_secret_ref="env:PROM_PW")
    auth = _token(role_user, "viewer", "sources:read")

    shown = client.get("/api/metric-sources/prom", **auth)
    missing = client.get("/api/metric-sources/nope", **auth)
    write_only = client.get("/api/metric-sources/prom", **_token(role_user, "tpm", "sources:write"))

    assert shown.status_code == 200
    assert shown.json()["auth"]["username"] == "stepwise"
    assert shown.json()["auth"]["secret_set"] is False
    assert missing.status_code == 404
    assert write_only.status_code == 403 and "sources:read" in write_only.json()["error"]


def test_metric_source_page__tpm_edits__saved_ledgered_and_said(client, role_user):
    _register(timeout_seconds=5.0)
    tpm = role_user("tpm")
    client.force_login(tpm)
    form = {
        "url": "http://prometheus:9090",
        "timeout_seconds": "2.5",
        "verify_tls": "on",
        "auth_scheme": "bearer",
        "auth_secret_ref": "env:PROM_TOKEN",
    }

    page = client.post(reverse("metric-source-detail", args=["prom"]), form, follow=True)

    assert "Changed auth_scheme, auth_secret_ref, timeout_seconds." in page.content.decode()
    source = MetricSource.objects.get()
    assert (source.timeout_seconds, source.auth_secret_ref) == (2.5, "env:PROM_TOKEN")
    (entry,) = LedgerEntry.objects.filter(action="metric_source.updated")
    assert entry.actor_id == tpm.pk
    assert entry.payload["changed"]["timeout_seconds"] == [5.0, 2.5]


def test_metric_source_register__url_with_a_password__refused_without_quoting_it():
    with pytest.raises(SourceInvalid, match="credentials do not go in the URL") as refused:
        _register(url="ftp://me:tok3n@prometheus:9090")
    assert "tok3n" not in str(refused.value)


def test_metric_source_page__edit_a_retired_source__400_with_the_reason(client, role_user):
    _register()
    metric_source_retire(actor=None, origin="test", name="prom")
    client.force_login(role_user("tpm"))

    page = client.post(
        reverse("metric-source-detail", args=["prom"]),
        {"url": "http://elsewhere:9090", "timeout_seconds": "5"},
    )

    assert page.status_code == 400
    assert "is retired; register a new one instead" in page.content.decode()
    assert MetricSource.objects.get().url == "http://prometheus:9090"


def test_metric_source_register__name_of_the_register_route__refused_as_reserved():
    with pytest.raises(SourceInvalid, match="'register' is reserved"):
        _register("register")
