"""Assumptions, decisions and metric traffic for the assumption and decision-log tests. Every
write goes through the services, so the ledger and the rules see what a person would cause."""

from datetime import timedelta
from typing import Any

from django.utils import timezone

from rollouts.models import Assumption, Decision, Plan
from rollouts.services.assumptions import assumption_add, assumption_status_set
from rollouts.services.decisions import decision_record
from signals.services import samples_ingest

WHAT = {
    "believed": "The new IdP takes our peak login rate.",
    "observed": "The probe saw errors climb past 2% at a tenth of peak.",
    "why": "The IdP cannot carry the load this quarter.",
}
# (errors, requests) in the window: a VERIFIED step passes below 1 %, fails above 2 %.
HEALTHY = (1.0, 1000.0)
BREACHING = (100.0, 1000.0)


def traffic(errors: float, requests: float) -> None:
    at = (timezone.now() - timedelta(seconds=5)).isoformat()
    samples_ingest(
        payload={
            "samples": [
                {"name": "http_errors", "labels": {}, "timestamp": at, "value": errors},
                {"name": "http_requests", "labels": {}, "timestamp": at, "value": requests},
            ]
        }
    )


def assume(plan: Plan, actor: Any, **changes: Any) -> Assumption:
    values = {
        "statement": "The new IdP takes peak login traffic",
        "impact": 5,
        "uncertainty": 4,
        "probe": "Replay one peak hour of logins against the IdP",
        "probe_cost": "2 days",
    } | changes
    return assumption_add(plan_id=plan.pk, actor=actor, **values)


def falsify(assumption: Assumption, actor: Any, evidence: str = "load test: 503s at 200 rps"):
    return assumption_status_set(
        assumption_id=assumption.pk, status="falsified", evidence=evidence, actor=actor
    )


def decide(plan: Plan, actor: Any, decided: str = "persist", **changes: Any) -> Decision:
    return decision_record(actor=actor, plan_id=plan.pk, decided=decided, **(WHAT | changes))
