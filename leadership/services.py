"""SLO imports: the one write path for SLO declarations, with their ledger entries."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from ledger.services import ledger_append
from signals.models import SLO
from signals.openslo import openslo_parse
from signals.services import slo_save, slo_source_problems
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


@transaction.atomic
def slos_import(*, text: str, actor: AbstractBaseUser | None, origin: str) -> list[tuple[SLO, str]]:
    """Create or update every SLO of an OpenSLO file, all or nothing. Each SLO is "created",
    "updated" or "unchanged"; created and updated ones get a ledger entry. Raises SLOInvalid with
    every problem by path (syntax, kinds, fields, unknown metric sources); nothing is written then."""
    specs = openslo_parse(text)
    problems = [
        problem
        for index, spec in enumerate(specs)
        for problem in slo_source_problems(spec, path=f"slos[{index}] ({spec.name}).")
    ]
    if problems:
        raise SLOInvalid(problems)
    results = []
    for spec in specs:
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
    return results
