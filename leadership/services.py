"""SLO imports: the one write path for SLO declarations, with their ledger entries."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from ledger.services import ledger_append
from signals.models import SLO, MetricSource
from signals.openslo import openslo_parse
from signals.services import (
    SourceInvalid,
    metric_source_declare,
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
    parsed = openslo_parse(text, prometheus_sources=prometheus_source_names())
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
