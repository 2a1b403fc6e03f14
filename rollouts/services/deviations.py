"""Out-of-band changes: deploys reported by webhook, and reconciling recorded deviations."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.errors import InvalidInput, NotFound, TransitionRefused
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.models import Deviation, Plan, Step
from rollouts.services.flags import deviation_record, flag_restore
from rollouts.services.steps import step_target_confirm


@transaction.atomic
def deploy_report(
    *, service: str, version: str, target: str, actor: AbstractBaseUser | None
) -> dict[str, Any]:
    """A deploy webhook: confirms the target of a running deploy step for that service, or records
    a deviation when a live plan has not reached that service's step yet."""
    service, version, target = service.strip(), version.strip(), target.strip()
    if not service or not version or not target:
        raise InvalidInput("service, version and target are all required")
    steps = list(
        Step.objects.select_related("plan")
        .filter(
            kind=Step.Kind.DEPLOY,
            service=service,
            plan__status__in=[Plan.Status.ACTIVE, Plan.Status.PAUSED],
        )
        .order_by("plan_id", "position")
    )
    entry = ledger_append(
        action="deploy.reported",
        subject_type="service",
        subject_id=service,
        actor=actor,
        payload={"service": service, "version": version, "target": target},
        plan_id=steps[0].plan_id if steps else None,
    )
    outcome: dict[str, Any] = {"ledger_seq": entry.seq, "confirmed": [], "deviations": []}
    for step in steps:
        if step.status in Step.ACTIVE and step.step_targets.filter(target__name=target).exists():
            step_target_confirm(
                step_id=step.pk,
                target=target,
                actor=actor,
                source="deploy webhook",
                evidence={"version": version},
            )
            outcome["confirmed"].append(f"{step.plan.key}/{step.key}")
        elif step.status in {Step.Status.PENDING, Step.Status.READY}:
            deviation = deviation_record(
                plan=step.plan,
                step=step,
                kind=Deviation.Kind.DEPLOY,
                summary=f"{service} {version} deployed to {target} before step {step.key} started",
                detail={"service": service, "version": version, "target": target},
                actor=actor,
            )
            outcome["deviations"].append(deviation.pk)
    return outcome


@transaction.atomic
def deviation_reconcile(
    *, deviation_id: int, decision: str, reason: str, actor: AbstractBaseUser
) -> Deviation:
    """Accept a deviation into the path (with a reason) or revert it (flag deviations only)."""
    deviation = Deviation.objects.select_for_update().filter(pk=deviation_id).first()
    if deviation is None:
        raise NotFound(f"no deviation {deviation_id}")
    if deviation.status != Deviation.Status.OPEN:
        who = deviation.resolved_by.get_username() if deviation.resolved_by else "someone"
        raise TransitionRefused(f"already {deviation.status} by {who}")
    if decision not in {"accept", "revert"}:
        raise InvalidInput("decision must be accept or revert")
    if not reason.strip():
        raise InvalidInput("say why")
    if decision == "revert":
        version = deviation.flag_version
        if version is None:
            raise TransitionRefused(
                "only a flag change can be reverted from here; undo a deploy with its rollback command"
            )
        previous = (
            version.flag.versions.filter(number__lt=version.number).order_by("-number").first()
        )
        if previous is None:
            raise TransitionRefused(f"{version.flag.key} has no version before v{version.number}")
        # Not a version of the owning step: a later revert of that step restores what was
        # current when its attempt started, and this restore is a person's call, not its ramp.
        flag_restore(
            flag_key=version.flag.key,
            version_number=previous.number,
            actor=actor,
            reason=f"reconcile: revert out-of-band v{version.number}: {reason}",
            source="plan",
            seen_version=version.number,
            reconciles=deviation,
        )
    deviation.status = (
        Deviation.Status.ACCEPTED if decision == "accept" else Deviation.Status.REVERTED
    )
    deviation.resolved_at, deviation.resolved_by, deviation.resolution_reason = (
        timezone.now(),
        actor,
        reason.strip()[:300],
    )
    deviation.save(update_fields=["status", "resolved_at", "resolved_by", "resolution_reason"])
    ledger_append(
        action=f"deviation.{deviation.status}",
        subject=deviation,
        actor=actor,
        payload={"summary": deviation.summary, "reason": deviation.resolution_reason},
        plan_id=deviation.plan_id,
        step_id=deviation.step_id,
    )
    stream_touch(stream=deviation.plan.stream, event="deviation.reconciled")
    return deviation
