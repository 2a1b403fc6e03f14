"""Every change to a feature flag: a new immutable version, a ledger entry, a push to browsers."""

from collections import defaultdict
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Prefetch

from core.errors import InvalidInput, NotFound, TransitionRefused
from core.invalidation import invalidation_publish
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.flag_config import FLAGS_TOPIC
from rollouts.models import (
    Deviation,
    Flag,
    FlagConfigRevision,
    FlagVersion,
    Plan,
    Step,
    StepTarget,
)
from rollouts.rules import dependency_blocker, exposure_raise_blocker, revert_raise_refusal

FLAGS_STREAM = "flags"
_RULE_OPS = {"in", "not_in", "eq", "neq", "starts_with", "ends_with", "gt", "lt"}


def _percentage(value: Any, *, field: str = "rollout percentage") -> Decimal:
    try:
        pct = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidInput(f"{field} must be a number from 0 to 100, not {value!r}") from exc
    if not pct.is_finite() or not Decimal(0) <= pct <= Decimal(100):
        raise InvalidInput(f"{field} must be from 0 to 100, not {value}")
    return pct.quantize(Decimal("0.01"))


def flag_settings_validate(settings: dict[str, Any]) -> dict[str, Any]:
    """Normalize a flag configuration, or raise InvalidInput naming every problem."""
    problems: list[str] = []
    variants = settings.get("variants") or {"on": True, "off": False}
    if (
        not isinstance(variants, dict)
        or not variants
        or not all(isinstance(k, str) and k for k in variants)
    ):
        problems.append("variants must map names to values")
        variants = {"on": True, "off": False}
    on_variant = settings.get("on_variant", "on")
    off_variant = settings.get("off_variant", "off")
    for label, name in (("on_variant", on_variant), ("off_variant", off_variant)):
        if name not in variants:
            problems.append(f"{label} {name!r} is not one of the variants ({', '.join(variants)})")
    try:
        pct = _percentage(settings.get("rollout_percentage", 0))
    except InvalidInput as exc:
        problems.append(str(exc))
        pct = Decimal(0)
    rules = settings.get("rules") or []
    if not isinstance(rules, list):
        problems.append("rules must be a list")
        rules = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            problems.append(f"rules[{i}] must be an object")
            continue
        if not isinstance(rule.get("attribute"), str) or not rule.get("attribute"):
            problems.append(f"rules[{i}].attribute is required")
        if rule.get("op") not in _RULE_OPS:
            problems.append(f"rules[{i}].op must be one of {', '.join(sorted(_RULE_OPS))}")
        if not isinstance(rule.get("values"), list) or not rule.get("values"):
            problems.append(f"rules[{i}].values must be a non-empty list")
        if rule.get("variant") not in variants:
            problems.append(f"rules[{i}].variant {rule.get('variant')!r} is not a variant")
    if problems:
        raise InvalidInput("; ".join(problems))
    return {
        "enabled": bool(settings.get("enabled", False)),
        "rollout_percentage": pct,
        "variants": variants,
        "on_variant": on_variant,
        "off_variant": off_variant,
        "rules": rules,
    }


def _next_config_revision() -> int:
    head, _ = FlagConfigRevision.objects.select_for_update().get_or_create(pk=1)
    head.revision += 1
    head.save(update_fields=["revision"])
    invalidation_publish(FLAGS_TOPIC, revision=head.revision)
    return head.revision


# Locks are taken without select_related: under READ COMMITTED a waiter re-reads the locked row
# but not a joined one, and would see the flag's new current version as missing.


def _owning_plan_step(flag: Flag) -> Step | None:
    """The step of a live plan that governs this flag: the earliest unfinished one, else the last."""
    steps = list(
        Step.objects.select_related("plan")
        .filter(flag=flag, plan__status__in=[Plan.Status.ACTIVE, Plan.Status.PAUSED])
        .order_by("plan_id", "position")
    )
    unfinished = [s for s in steps if s.status not in {"done", "skipped"}]
    return (unfinished or steps or [None])[0]


def _waiting_ramp_steps(flag: Flag) -> list[str]:
    """ "plan/step waits for …" for each not-yet-started ramp of `flag` in a live plan whose
    dependencies (through skipped steps) have not converged."""
    ramps = list(
        Step.objects.filter(
            flag=flag,
            kind=Step.Kind.FLAG_RAMP,
            status__in=[Step.Status.PENDING, Step.Status.READY],
            plan__status__in=[Plan.Status.ACTIVE, Plan.Status.PAUSED],
        ).select_related("plan")
    )
    reasons = []
    for plan_id in {r.plan_id for r in ramps}:
        by_id = {
            s.pk: s
            for s in Step.objects.filter(plan_id=plan_id).prefetch_related(
                Prefetch("step_targets", queryset=StepTarget.objects.select_related("target"))
            )
        }
        deps: dict[int, list[int]] = defaultdict(list)
        for from_id, to_id in Step.depends_on.through.objects.filter(
            from_step__plan_id=plan_id
        ).values_list("from_step_id", "to_step_id"):
            deps[from_id].append(to_id)
        for ramp in (r for r in ramps if r.plan_id == plan_id):
            if waiting := dependency_blocker(by_id[ramp.pk], by_id=by_id, deps=deps):
                reasons.append(f"{ramp.plan.key}/{ramp.key} {waiting}")
    return sorted(reasons)


@transaction.atomic
def flag_version_create(
    *,
    flag: Flag,
    settings: dict[str, Any],
    actor: AbstractBaseUser | None,
    reason: str,
    source: str,
    step: Step | None = None,
    restored_from: FlagVersion | None = None,
    action: str = "flag.changed",
    incident_id: int | None = None,
    break_glass: bool = False,
    reconciles: Deviation | None = None,
) -> FlagVersion:
    """The one writer of FlagVersion. The caller holds the flag row lock.

    Refused (TransitionRefused), writing nothing, when the change exposes more while a plan step
    that ramps the flag still waits for dependencies to converge, unless it is that step's own
    ramp or a break-glass switch (pre-authorized, and loud).

    Side effects: bumps the flag-config revision; ledger entry `action` (with `incident_id`
    when made from an incident); a deviation (and its ledger entry) when the change did not
    come from the plan step that owns the flag, unless it `reconciles` a recorded deviation;
    pushes to the flags board and the owning plan on commit.
    """
    if not reason.strip():
        raise InvalidInput("say why the flag changes (reason)")
    normalized = flag_settings_validate(settings)
    before = flag.current
    number = (before.number + 1) if before else 1
    candidate = FlagVersion(flag=flag, number=number, **normalized)
    # Only a raise reads the plans that ramp this flag.
    if (
        step is None
        and not break_glass
        and candidate.exposes_more_than(before)
        and (
            refusal := exposure_raise_blocker(
                candidate, current=before, governing=_waiting_ramp_steps(flag)
            )
        )
    ):
        raise TransitionRefused(refusal)
    version = FlagVersion.objects.create(
        flag=flag,
        number=number,
        author=actor if getattr(actor, "is_authenticated", False) else None,
        reason=reason.strip()[:300],
        source=source,
        step=step,
        restored_from=restored_from,
        config_revision=_next_config_revision(),
        **normalized,
    )
    flag.current = version
    flag.save(update_fields=["current"])
    owner = _owning_plan_step(flag)
    payload = {
        "flag": flag.key,
        "from": before.number if before else None,
        "to": number,
        "before": before.settings_dict() if before else None,
        "after": version.settings_dict(),
        "reason": version.reason,
        "source": source,
        "revision": version.config_revision,
    }
    if restored_from:
        payload["restored_from"] = restored_from.number
    if break_glass:
        payload["break_glass"] = True
    if reconciles is not None:
        payload["reconciles"] = reconciles.pk
    ledger_append(
        action=action,
        subject=flag,
        actor=actor,
        payload=payload,
        plan_id=(step or owner).plan_id if (step or owner) else None,
        step_id=step.pk if step else None,
        incident_id=incident_id,
    )
    if owner is not None and step is None and reconciles is None:
        who = actor.get_username() if getattr(actor, "is_authenticated", False) else "stepwise"
        was = f"{before.settings_text()} (v{before.number})" if before else "nothing"
        deviation_record(
            plan=owner.plan,
            step=owner,
            kind=Deviation.Kind.FLAG_CHANGE,
            summary=(
                f"{who} changed {flag.key} from {was} to {version.settings_text()} (v{number}) "
                f"on the {version.get_source_display()}, outside step {owner.key}"
            ),
            detail={
                "flag": flag.key,
                "version": number,
                "from": before.number if before else None,
                "before": before.settings_dict() if before else None,
                "after": version.settings_dict(),
                "by": who,
                "source": source,
                "reason": version.reason,
            },
            flag_version=version,
            actor=actor,
        )
    stream_touch(stream=FLAGS_STREAM, event="flag.changed", ref=flag.pk)
    stream_touch(stream=flag.stream, event="flag.changed")
    return version


def _flag_lock(flag_key: str) -> Flag:
    flag = Flag.objects.select_for_update().filter(key=flag_key).first()
    if flag is None:
        raise NotFound(f"no flag with key {flag_key!r}")
    return flag


@transaction.atomic
def flag_create(
    *,
    key: str,
    description: str,
    kind: str,
    owner: str,
    actor: AbstractBaseUser | None,
    source: str = "board",
) -> Flag:
    """Create a flag, off, as version 1. Ledger: flag.created."""
    if Flag.objects.filter(key=key).exists():
        raise InvalidInput(f"a flag with key {key!r} already exists")
    if kind not in Flag.Kind.values:
        raise InvalidInput(f"kind must be one of {', '.join(Flag.Kind.values)}")
    flag = Flag.objects.create(key=key, description=description, kind=kind, owner=owner)
    ledger_append(
        action="flag.created",
        subject=flag,
        actor=actor,
        payload={"key": key, "kind": kind, "owner": owner},
    )
    flag_version_create(
        flag=flag,
        settings={"enabled": False},
        actor=actor,
        reason="created",
        source=source,
        action="flag.versioned",
    )
    return flag


@transaction.atomic
def flag_change(
    *,
    flag_key: str,
    changes: dict[str, Any],
    actor: AbstractBaseUser | None,
    reason: str,
    source: str,
    step: Step | None = None,
    incident_id: int | None = None,
    break_glass: bool = False,
) -> FlagVersion:
    """Apply `changes` on top of the current version as a new version (see
    `flag_version_create` for what is refused)."""
    flag = _flag_lock(flag_key)
    unknown = set(changes) - {
        "enabled",
        "rollout_percentage",
        "variants",
        "on_variant",
        "off_variant",
        "rules",
    }
    if unknown:
        raise InvalidInput(f"unknown flag setting(s): {', '.join(sorted(unknown))}")
    settings = {**flag.current.settings_dict(), **changes}
    if settings == flag.current.settings_dict():
        return flag.current
    return flag_version_create(
        flag=flag,
        settings=settings,
        actor=actor,
        reason=reason,
        source=source,
        step=step,
        incident_id=incident_id,
        break_glass=break_glass,
    )


@transaction.atomic
def flag_restore(
    *,
    flag_key: str,
    version_number: int,
    actor: AbstractBaseUser | None,
    reason: str,
    source: str,
    step: Step | None = None,
    seen_version: int | None = None,
    incident_id: int | None = None,
    reconciles: Deviation | None = None,
) -> FlagVersion:
    """Make an earlier version's settings current again, on purpose and with a reason, as a new
    version. Ledger: flag.restored. With `seen_version`, refused when the flag has moved on from
    the version the caller acted on (someone changed it since: they are named)."""
    flag = _flag_lock(flag_key)
    earlier = flag.versions.filter(number=version_number).first()
    if earlier is None:
        raise InvalidInput(f"{flag_key} has no version {version_number}")
    if seen_version is not None and flag.current.number != seen_version:
        raise TransitionRefused(_moved_on(flag, seen_version))
    if earlier.pk == flag.current_id:
        raise TransitionRefused(f"v{version_number} is already the current version of {flag_key}")
    if not reason.strip():
        raise InvalidInput(f"say why you restore {flag_key} v{version_number}")
    return flag_version_create(
        flag=flag,
        settings=earlier.settings_dict(),
        actor=actor,
        reason=reason,
        source=source,
        step=step,
        restored_from=earlier,
        action="flag.restored",
        incident_id=incident_id,
        reconciles=reconciles,
    )


def _moved_on(flag: Flag, seen_version: int) -> str:
    current = flag.current
    who = current.author.get_username() if current.author else "the system"
    return (
        f"{flag.key} is already at v{current.number} (changed by {who}: {current.reason}; now "
        f"{current.settings_text()}), not v{seen_version}; reload before reverting"
    )


@transaction.atomic
def flag_revert(
    *,
    flag_key: str,
    seen_version: int,
    actor: AbstractBaseUser | None,
    reason: str,
    source: str,
    incident_id: int | None = None,
) -> FlagVersion:
    """One-click revert to the version before `seen_version`.

    `seen_version` is the version the person was looking at: when several people click at once,
    the first wins and the others are refused with who reverted, instead of reverting twice.
    A revert never raises exposure: reverting a revert would re-apply what was reverted, so it
    is refused (restoring a version on purpose, with a reason, is `flag_restore`).
    """
    flag = _flag_lock(flag_key)
    current, previous = _revert_checked(flag, seen_version)
    return flag_version_create(
        flag=flag,
        settings=previous.settings_dict(),
        actor=actor,
        reason=reason or f"revert v{current.number} to v{previous.number}",
        source=source,
        restored_from=previous,
        action="flag.reverted",
        incident_id=incident_id,
    )


def _revert_checked(flag: Flag, seen_version: int) -> tuple[FlagVersion, FlagVersion]:
    """(current, the version a revert applies), or TransitionRefused: the flag moved on from
    `seen_version` (naming who moved it), has nothing earlier, or the revert would raise
    exposure."""
    current = flag.current
    if current.number != seen_version:
        raise TransitionRefused(_moved_on(flag, seen_version))
    previous = revert_target(flag)
    if previous is None:
        raise TransitionRefused(f"{flag.key} has no earlier version to revert to")
    if refusal := revert_raise_refusal(current=current, target=previous):
        raise TransitionRefused(refusal)
    return current, previous


@transaction.atomic
def flag_revert_check(*, flag_key: str, seen_version: int) -> tuple[FlagVersion, FlagVersion]:
    """What `flag_revert` would do, refused exactly as it would be, writing nothing: (current,
    the version it applies). It locks the flag row, so a `flag_revert` later in the caller's
    transaction applies exactly this."""
    return _revert_checked(_flag_lock(flag_key), seen_version)


def revert_target(flag: Flag) -> FlagVersion | None:
    """The version a one-click revert of `flag` applies: the one before the current."""
    return flag.versions.filter(number__lt=flag.current.number).order_by("-number").first()


@transaction.atomic
def deviation_record(
    *,
    plan: Plan,
    step: Step | None,
    kind: str,
    summary: str,
    detail: dict[str, Any],
    actor: AbstractBaseUser | None,
    flag_version: FlagVersion | None = None,
) -> Deviation:
    """Record a change made outside the plan's path. Ledger: deviation.recorded; plan stream."""
    deviation = Deviation.objects.create(
        plan=plan,
        step=step,
        kind=kind,
        summary=summary[:300],
        detail=detail,
        flag_version=flag_version,
    )
    ledger_append(
        action="deviation.recorded",
        subject=deviation,
        actor=actor,
        payload={"kind": kind, "summary": deviation.summary, **detail},
        plan_id=plan.pk,
        step_id=step.pk if step else None,
    )
    stream_touch(stream=plan.stream, event="deviation.recorded")
    return deviation
