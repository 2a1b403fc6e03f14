"""Thin Celery tasks over the SLO rollup. Idempotent: a rollup starts where the last one ended,
under the SLO's row lock, so a redelivered or concurrent task writes nothing twice."""

import logging

from celery import shared_task

from signals.models import SLO
from signals.prometheus import PrometheusError
from signals.slos import slo_refresh

log = logging.getLogger(__name__)


@shared_task(name="signals.tasks.slos_tick", ignore_result=True)
def slos_tick() -> None:
    """Beat: roll up each SLO's closed minutes and evaluate its burn-rate alerts."""
    for slo_id in SLO.objects.values_list("pk", flat=True):
        slo_refresh_task.delay(slo_id)


@shared_task(name="signals.tasks.slo_refresh", acks_late=True, ignore_result=True)
def slo_refresh_task(slo_id: int) -> None:
    try:
        slo_refresh(slo_id=slo_id)
    except PrometheusError as exc:
        # The minutes stay un-rolled-up; the next tick starts from the same place.
        log.warning("SLO %s not rolled up: %s", slo_id, exc)
    except SLO.DoesNotExist:
        pass
