import re
from typing import Any

import pytest

from signals.models import MetricSource
from signals.services import (
    SourceInvalid,
    SourceNotFound,
    metric_source_create,
    metric_source_mark_retired,
    metric_source_update,
    prometheus_source_names,
    slo_save,
    slo_source_problems,
)
from signals.slo_spec import MetricRef, SLISpec
from tests.slo_data import ratio_spec

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


# --- credentials as references, edits, retirement ------------------------------------------------


def _prometheus(name: str = "prom", **kwargs: Any) -> MetricSource:
    return metric_source_create(
        name=name, kind="prometheus", **({"url": "http://prometheus:9090"} | kwargs)
    )


def test_metric_source_create__bearer_from_env__reference_stored_not_a_secret():
    source = _prometheus(auth_scheme="bearer", auth_secret_ref="env:PROM_TOKEN")
    source.refresh_from_db()
    assert (source.auth_scheme, source.auth_secret_ref, source.auth_header) == (
        "bearer",
        "env:PROM_TOKEN",
        "",
    )


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"auth_scheme": "bearer", "auth_secret_ref": "s3cret-token"}, "env:PROM_TOKEN"),
        ({"auth_scheme": "bearer", "auth_secret_ref": "env:"}, "env:PROM_TOKEN"),
        ({"auth_scheme": "basic", "auth_secret_ref": "env:PW"}, "basic auth needs a username"),
        (
            {"auth_scheme": "bearer", "auth_username": "u", "auth_secret_ref": "env:T"},
            "no username",
        ),
        ({"auth_username": "u"}, "needs an auth scheme"),
        ({"auth_scheme": "digest", "auth_secret_ref": "env:T"}, "bearer, basic or none"),
        ({"url": "prometheus:9090"}, "url: must be an http(s) URL with a host"),
        ({"url": "http://me:s3cret-token@prometheus:9090"}, "credentials do not go in the URL"),
        ({"timeout_seconds": 600}, "at most 60"),
        ({"name": "prom/eu"}, "letters, digits"),
        ({"name": "builtin"}, "built-in store's name"),
    ],
)
def test_metric_source_create__bad_prometheus_settings__refused_without_echoing_secrets(
    kwargs, words
):
    with pytest.raises(SourceInvalid, match=re.escape(words)) as refused:
        _prometheus(**kwargs)
    assert "s3cret" not in str(refused.value)
    assert not MetricSource.objects.exists()


def test_metric_source_update__settings__changed_fields_before_and_after():
    _prometheus(timeout_seconds=5.0)

    source, changed = metric_source_update(
        name="prom", changes={"timeout_seconds": 2.0, "verify_tls": True}
    )

    assert changed == {"timeout_seconds": [5.0, 2.0]}
    source.refresh_from_db()
    assert source.timeout_seconds == 2.0
    assert metric_source_update(name="prom", changes={"timeout_seconds": 2.0})[1] == {}


def test_metric_source_update__credentials_set__legacy_header_dropped():
    _prometheus(auth_header="Bearer s3cret")

    source, changed = metric_source_update(
        name="prom", changes={"auth_scheme": "bearer", "auth_secret_ref": "env:PROM_TOKEN"}
    )

    source.refresh_from_db()
    assert source.auth_header == ""
    assert changed["auth_header"] == ["(legacy header)", ""]
    assert "s3cret" not in repr(changed)


def test_metric_source_update__auth_switched_off__username_and_reference_cleared():
    _prometheus(auth_scheme="basic", auth_username="stepwise", auth_secret_ref="env:PW")

    source, _ = metric_source_update(name="prom", changes={"auth_scheme": ""})

    assert (source.auth_scheme, source.auth_username, source.auth_secret_ref) == ("", "", "")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"name": "other"}, "cannot change name"),
        ({"kind": "builtin"}, "cannot change kind"),
        ({"url": "ftp://x"}, "url: must be an http(s) URL"),
        ({"verify_tls": "yes"}, "true or false"),
        ({"timeout_seconds": "fast"}, "positive number of seconds"),
    ],
)
def test_metric_source_update__bad_change__refused_and_source_unchanged(changes, words):
    _prometheus()
    with pytest.raises(SourceInvalid, match=re.escape(words)):
        metric_source_update(name="prom", changes=changes)
    source = MetricSource.objects.get()
    assert (source.name, source.url, source.verify_tls) == ("prom", "http://prometheus:9090", True)


def test_metric_source_update__unknown_or_builtin__refused():
    metric_source_create(name="builtin")
    with pytest.raises(SourceNotFound, match="no metric source named 'nope'"):
        metric_source_update(name="nope", changes={})
    with pytest.raises(SourceInvalid, match="built-in store, not Prometheus"):
        metric_source_update(name="builtin", changes={"url": "http://p:9090"})


def test_metric_source_mark_retired__twice__retired_once_and_not_editable():
    _prometheus()

    source, first = metric_source_mark_retired(name="prom")
    again, second = metric_source_mark_retired(name="prom")

    assert (first, second) == (True, False)
    assert again.retired_at == source.retired_at is not None
    assert prometheus_source_names() == []
    with pytest.raises(SourceInvalid, match="is retired"):
        metric_source_update(name="prom", changes={"timeout_seconds": 1.0})
    with pytest.raises(SourceInvalid, match=r"already exists \(retired"):
        _prometheus()


def test_slo_source_problems__retired_source__refused_for_a_new_slo_kept_by_its_own():
    _prometheus("old")
    _prometheus("new")
    indicator = SLISpec(
        kind="ratio", source="old", bad=MetricRef(query="e_total"), total=MetricRef(query="t")
    )
    slo_save(spec=ratio_spec(name="already", indicator=indicator))
    metric_source_mark_retired(name="old")

    ((path, reason),) = slo_source_problems(ratio_spec(name="fresh", indicator=indicator))

    assert path == "source"
    assert "metric source 'old' is retired" in reason and "choose another (new)" in reason
    assert slo_source_problems(ratio_spec(name="already", indicator=indicator)) == []
