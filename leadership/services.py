"""SLO imports and metric source changes: the one write path for each, with its ledger entries."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from leadership.selectors import metric_source_users
from ledger.services import ledger_append
from signals.models import SLO, MetricSource
from signals.openslo import openslo_parse
from signals.services import (
    SourceInvalid,
    metric_source_create,
    metric_source_declare,
    metric_source_mark_retired,
    metric_source_update,
    prometheus_source_names,
    slo_save,
    slo_source_problems,
)
from signals.slo_spec import SLOInvalid


def _summary(slo: SLO) -> dict[str, Any]:
    return {
        "slo": slo.name,
        "service": slo.service,
        "objective": slo.objective,
        "window": slo.window_text or f"{slo.window_seconds}s",
        "budgeting": slo.budgeting,
        "indicator": slo.indicator,
        "source": slo.source.name if slo.source_id else "builtin",
    }


@dataclass(frozen=True)
class SLOImport:
    """What an import did: each SLO and each declared metric source with "created", "updated"
    or "unchanged", and the (path, reason) warnings of what was accepted but looks wrong."""

    slos: list[tuple[SLO, str]]
    sources: list[tuple[MetricSource, str]]
    warnings: list[tuple[str, str]]


@transaction.atomic
def slos_import(*, text: str, actor: AbstractBaseUser | None, origin: str) -> SLOImport:
    """Create or update every metric source (kind: DataSource) and SLO of an OpenSLO file, all
    or nothing; created and updated ones get a ledger entry. Raises SLOInvalid with every problem
    by path (syntax, kinds, fields, unknown metric sources); nothing is written then."""
    parsed = openslo_parse(
        text,
        prometheus_sources=prometheus_source_names(),
        retired_sources=prometheus_source_names(retired=True),
    )
    problems: list[tuple[str, str]] = []
    sources = []
    for declared in parsed.data_sources:
        try:
            source, outcome = metric_source_declare(name=declared.name, url=declared.url)
        except SourceInvalid as exc:
            problems.append((f"{declared.path}.metadata.name", str(exc)))
            continue
        if outcome != "unchanged":
            ledger_append(
                action=f"metric_source.{outcome}",
                subject=source,
                actor=actor,
                actor_label=None if actor else origin,
                payload={"source": source.name, "url": source.url, "origin": origin},
            )
        sources.append((source, outcome))
    # After the file's sources exist: a metric may name one it declares.
    problems += [
        problem
        for index, spec in enumerate(parsed.slos)
        for problem in slo_source_problems(spec, path=f"slos[{index}] ({spec.name}).")
    ]
    if problems:
        # Raised inside the transaction: the sources declared above are rolled back with it.
        raise SLOInvalid(problems)
    results = []
    for spec in parsed.slos:
        slo, outcome = slo_save(spec=spec)
        if outcome != "unchanged":
            ledger_append(
                action=f"slo.{outcome}",
                subject=slo,
                actor=actor,
                actor_label=None if actor else origin,
                payload={**_summary(slo), "origin": origin},
            )
        results.append((slo, outcome))
    return SLOImport(slos=results, sources=sources, warnings=parsed.warnings)


# --- metric sources ------------------------------------------------------------------------------
# Here and not in `signals`: a change is ledgered, and naming who reads a source takes the steps
# of `rollouts`. `signals.services` validates and writes; these add the ledger entry.


def _source_payload(source: MetricSource) -> dict[str, Any]:
    """What the ledger keeps of a source: its settings and where its secret lives, never the
    secret (the reference names an environment variable; a legacy header is not copied)."""
    return {
        "source": source.name,
        "url": source.url,
        "timeout_seconds": source.timeout_seconds,
        "verify_tls": source.verify_tls,
        "auth_scheme": source.auth_scheme,
        "auth_username": source.auth_username,
        "auth_secret_ref": source.auth_secret_ref,
    }


def _actor_label(actor: AbstractBaseUser | None, origin: str) -> str | None:
    return None if actor else origin


@transaction.atomic
def metric_source_register(
    *,
    actor: AbstractBaseUser | None,
    origin: str,
    name: str,
    url: str,
    timeout_seconds: float = 5.0,
    verify_tls: bool = True,
    auth_scheme: str = MetricSource.AuthScheme.NONE,
    auth_username: str = "",
    auth_secret_ref: str = "",
) -> MetricSource:
    """Register a Prometheus source. Ledger: metric_source.created. SourceInvalid says why not."""
    source = metric_source_create(
        name=name,
        kind=MetricSource.Kind.PROMETHEUS,
        url=url,
        timeout_seconds=timeout_seconds,
        verify_tls=verify_tls,
        auth_scheme=auth_scheme,
        auth_username=auth_username,
        auth_secret_ref=auth_secret_ref,
    )
    ledger_append(
        action="metric_source.created",
        subject=source,
        actor=actor,
        actor_label=_actor_label(actor, origin),
        payload={**_source_payload(source), "origin": origin},
    )
    return source


@transaction.atomic
def metric_source_edit(
    *, actor: AbstractBaseUser | None, origin: str, name: str, changes: dict[str, Any]
) -> tuple[MetricSource, dict[str, list[Any]]]:
    """Change a Prometheus source's settings. Returns it and what changed ({field: [before,
    after]}); a change gets a ledger entry (metric_source.updated), no change none."""
    source, changed = metric_source_update(name=name, changes=changes)
    if changed:
        ledger_append(
            action="metric_source.updated",
            subject=source,
            actor=actor,
            actor_label=_actor_label(actor, origin),
            payload={"source": source.name, "changed": changed, "origin": origin},
        )
    return source, changed


@transaction.atomic
def metric_source_retire(
    *, actor: AbstractBaseUser | None, origin: str, name: str
) -> tuple[MetricSource, list[str]]:
    """Retire a Prometheus source: no new SLO or step may name it. Returns it and who still
    reads it (they keep reading it until changed: the caller shows them as a warning). Ledger:
    metric_source.retired, with those readers; retiring a retired source changes nothing."""
    source, retired_now = metric_source_mark_retired(name=name)
    users = metric_source_users(source)
    if retired_now:
        ledger_append(
            action="metric_source.retired",
            subject=source,
            actor=actor,
            actor_label=_actor_label(actor, origin),
            payload={"source": source.name, "still_read_by": users, "origin": origin},
        )
    return source, users
