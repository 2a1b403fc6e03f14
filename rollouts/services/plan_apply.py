"""Apply a plan file: diff it against the stored plan, then write the difference in one transaction."""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from core.errors import TransitionRefused
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.models import Decision, Flag, Plan, Step, StepTarget, Target
from rollouts.plan_spec import (
    PlanSpec,
    StepSpec,
    plan_spec_from_plan,
    plan_spec_parse,
    step_metric_sources,
)
from rollouts.services.flags import flag_create
from signals.models import SLO, MetricSource
from signals.services import prometheus_source_names

# A step in one of these has a history (flag versions, ledger entries, convergence) that a file
# must not rewrite.
UNSTARTED = {Step.Status.PENDING, Step.Status.READY, Step.Status.SKIPPED}
# Unique (plan, position) is checked row by row, so renumbering goes through positions no real
# plan reaches.
_PARKING_OFFSET = 1_000_000
# Names listed when a gate names an unknown SLO.
_KNOWN_SHOWN = 30

# file field name -> StepSpec attribute
STEP_FIELDS: dict[str, str] = {
    "title": "title",
    "owner": "owner",
    "kind": "kind",
    "targets": "targets",
    "lockstep": "lockstep",
    "service": "service",
    "flag.key": "flag_key",
    "flag.percentage": "flag_percentage",
    "revert.rollback_command": "rollback_command",
    "revert.runbook": "runbook",
    "verification.pass": "pass_condition",
    "verification.fail": "fail_condition",
    "verification.on_fail": "on_fail",
    "verification.on_fail_percentage": "on_fail_percentage",
    "verification.measurements": "measurements",
    "verification.analysis": "analysis",
    "verification.canary": "canary",
    "convergence": "convergence",
    "budget_gate.slo": "budget_slo",
    "budget_gate.min_remaining": "budget_min_remaining",
}
# What a started step did; changing it afterwards would make the record lie.
FROZEN_ONCE_STARTED = {"kind", "flag.key", "flag.percentage"}
PLAN_FIELDS = ("name", "goal", "owner", "teams")


class PlanApplyRefused(TransitionRefused):
    """The file is valid, but the stored plan's state forbids part of it; `reasons` lists each."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        return {"before": _plain(self.before), "after": _plain(self.after)}

    @property
    def before_text(self) -> str:
        return _show(self.before)

    @property
    def after_text(self) -> str:
        return _show(self.after)

    def __str__(self) -> str:
        return f"{self.field}: {self.before_text} -> {self.after_text}"


def _show(value: Any) -> str:
    value = _plain(value)
    if value in (None, "", []):
        return "(none)"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class StepChange:
    key: str
    fields: list[FieldChange]


@dataclass(frozen=True)
class DependencyChange:
    key: str
    added: list[str]
    removed: list[str]


@dataclass
class PlanDiff:
    plan_key: str
    created: bool = False
    plan_fields: list[FieldChange] = field(default_factory=list)
    steps_added: list[StepSpec] = field(default_factory=list)
    steps_removed: list[str] = field(default_factory=list)
    steps_changed: list[StepChange] = field(default_factory=list)
    dependencies: list[DependencyChange] = field(default_factory=list)
    order_before: list[str] = field(default_factory=list)
    order_after: list[str] = field(default_factory=list)
    flags_created: list[str] = field(default_factory=list)
    targets_created: list[str] = field(default_factory=list)

    @property
    def order_changed(self) -> bool:
        """Whether steps present before and after changed their relative order."""
        common = set(self.order_before) & set(self.order_after)
        return [k for k in self.order_before if k in common] != [
            k for k in self.order_after if k in common
        ]

    @property
    def sequence_changed(self) -> bool:
        return self.order_before != self.order_after

    @property
    def empty(self) -> bool:
        return not (
            self.created
            or self.plan_fields
            or self.steps_added
            or self.steps_removed
            or self.steps_changed
            or self.dependencies
            or self.sequence_changed
        )

    def summary(self) -> dict[str, Any]:
        """Plain JSON for the ledger."""
        data: dict[str, Any] = {"created": self.created}
        if self.plan_fields:
            data["plan"] = {c.field: c.as_dict() for c in self.plan_fields}
        if self.steps_added:
            data["steps_added"] = [s.key for s in self.steps_added]
        if self.steps_removed:
            data["steps_removed"] = self.steps_removed
        if self.steps_changed:
            data["steps_changed"] = {
                s.key: {c.field: c.as_dict() for c in s.fields} for s in self.steps_changed
            }
        if self.dependencies:
            data["dependencies"] = {
                d.key: {"added": d.added, "removed": d.removed} for d in self.dependencies
            }
        if self.order_changed:
            data["order"] = {"before": self.order_before, "after": self.order_after}
        if self.flags_created:
            data["flags_created"] = self.flags_created
        if self.targets_created:
            data["targets_created"] = self.targets_created
        return data

    def lines(self) -> list[str]:
        """The diff as a person reads it: + added, - removed, ~ changed."""
        if self.empty:
            return [f"plan {self.plan_key}: no changes"]
        out = [
            f"{'+' if self.created else '~'} plan {self.plan_key}{' (new)' if self.created else ''}"
        ]
        out += [f"    {c}" for c in self.plan_fields]
        for step in self.steps_added:
            detail = f"{step.kind}, owner {step.owner}"
            out.append(f"+ step {step.key}: {step.title} ({detail})")
        out += [f"- step {key}" for key in self.steps_removed]
        deps = {d.key: d for d in self.dependencies}
        for change in self.steps_changed:
            out.append(f"~ step {change.key}")
            out += [f"    {c}" for c in change.fields]
        for key, dep in deps.items():
            parts = [f"+{k}" for k in dep.added] + [f"-{k}" for k in dep.removed]
            out.append(f"~ step {key} depends_on: {' '.join(parts)}")
        if self.order_changed:
            out.append(f"~ order: {', '.join(self.order_before)} -> {', '.join(self.order_after)}")
        if self.flags_created:
            out.append(f"+ flags (created off): {', '.join(self.flags_created)}")
        if self.targets_created:
            out.append(f"+ targets: {', '.join(self.targets_created)}")
        return out


@dataclass
class PlanApplyResult:
    spec: PlanSpec
    diff: PlanDiff
    plan: Plan | None
    dry_run: bool
    applied: bool = False
    base_digest: str = ""
    decision: Decision | None = None

    @property
    def changed(self) -> bool:
        return not self.diff.empty

    @property
    def warnings(self) -> list[str]:
        return list(self.spec.warnings)


def _step_diff(before: StepSpec, after: StepSpec) -> list[FieldChange]:
    changes = []
    for name, attr in STEP_FIELDS.items():
        old, new = getattr(before, attr), getattr(after, attr)
        if name == "targets":
            if set(old) != set(new):
                changes.append(FieldChange(name, sorted(old), sorted(new)))
        elif old != new:
            changes.append(FieldChange(name, old, new))
    return changes


def plan_diff(*, stored: PlanSpec | None, wanted: PlanSpec) -> PlanDiff:
    """Pure: what applying `wanted` over `stored` changes (flags and targets are not looked up)."""
    diff = PlanDiff(plan_key=wanted.key, order_after=wanted.step_keys())
    if stored is None:
        diff.created = True
        diff.steps_added = list(wanted.steps)
        diff.plan_fields = [
            FieldChange(name, None, getattr(wanted, name))
            for name in PLAN_FIELDS
            if getattr(wanted, name)
        ]
        return diff
    diff.order_before = stored.step_keys()
    diff.plan_fields = [
        FieldChange(name, getattr(stored, name), getattr(wanted, name))
        for name in PLAN_FIELDS
        if getattr(stored, name) != getattr(wanted, name)
    ]
    old = {s.key: s for s in stored.steps}
    new = {s.key: s for s in wanted.steps}
    diff.steps_added = [s for s in wanted.steps if s.key not in old]
    diff.steps_removed = [k for k in old if k not in new]
    for step in wanted.steps:
        if step.key in old:
            if fields := _step_diff(old[step.key], step):
                diff.steps_changed.append(StepChange(step.key, fields))
            before, after = set(old[step.key].depends_on), set(step.depends_on)
            if before != after:
                diff.dependencies.append(
                    DependencyChange(step.key, sorted(after - before), sorted(before - after))
                )
    return diff


def _refusals(plan: Plan, diff: PlanDiff, statuses: dict[str, str]) -> list[str]:
    reasons = []
    started = {k for k, status in statuses.items() if status not in UNSTARTED}
    for key in diff.steps_removed:
        if key in started:
            reasons.append(
                f"step {key!r} is {statuses[key]}: a started step cannot be removed "
                "(keep it in the file)"
            )
    if plan.status != Plan.Status.DRAFT:
        for key in sorted(started - set(diff.steps_removed), key=diff.order_before.index):
            was, now = diff.order_before.index(key) + 1, diff.order_after.index(key) + 1
            if was != now:
                reasons.append(
                    f"step {key!r} is {statuses[key]} at position {was} and the file puts it at "
                    f"{now}: a plan that is {plan.status} cannot move started steps "
                    "(add new steps after them)"
                )
    for change in diff.steps_changed:
        if change.key in started:
            frozen = [c.field for c in change.fields if c.field in FROZEN_ONCE_STARTED]
            if frozen:
                reasons.append(
                    f"step {change.key!r} is {statuses[change.key]}: its {', '.join(frozen)} "
                    "cannot change once it has started; add a new step instead"
                )
    if plan.is_closed and diff.steps_added:
        reasons.append(
            f"the plan is {plan.status}: no steps can be added "
            f"({', '.join(s.key for s in diff.steps_added)})"
        )
    return reasons


def _missing_flags(spec: PlanSpec) -> list[str]:
    wanted = {s.flag_key for s in spec.steps if s.flag_key}
    existing = set(Flag.objects.filter(key__in=wanted).values_list("key", flat=True))
    return sorted(wanted - existing)


def _missing_targets(spec: PlanSpec) -> list[str]:
    wanted = {t for s in spec.steps for t in s.targets}
    existing = set(Target.objects.filter(name__in=wanted).values_list("name", flat=True))
    return sorted(wanted - existing)


def plan_apply(
    *,
    text: str,
    actor: AbstractBaseUser | AnonymousUser | None,
    dry_run: bool = False,
    actor_label: str | None = None,
    base_digest: str | None = None,
    decision_id: int | None = None,
) -> PlanApplyResult:
    """Make the plan the file declares real, or (dry_run) only say what that would change.

    Raises PlanSpecInvalid (every problem in the file, with path and line) or PlanApplyRefused
    (the stored plan's state forbids the change). Nothing is written in either case, nor when the
    file changes nothing. Otherwise, in one transaction: the plan, its steps, targets and
    dependencies; flags that steps name but that do not exist yet, created off via flag_create;
    ledger entries plan.applied (the diff) and, when the order or the dependencies change,
    plan.declared; and the plan page is re-rendered for its stream on commit.

    `base_digest` is the `base_digest` of an earlier dry run: when given, the apply is refused if
    the stored plan changed since, so what a person confirmed is what gets written.

    `decision_id` names the adapt decision this re-plan carries out: it must be an adapt on this
    plan that no later entry corrects (else PlanApplyRefused); plan.applied then names it.
    """
    spec = plan_spec_parse(text)
    if dry_run:
        plan = Plan.objects.filter(key=spec.key).first()
        decision = _adapt_decision(decision_id, plan, spec)
        stored = plan_spec_from_plan(plan) if plan else None
        diff = _diff_against(plan, stored, spec)
        return PlanApplyResult(
            spec=spec,
            diff=diff,
            plan=plan,
            dry_run=True,
            base_digest=_state_digest(stored),
            decision=decision,
        )
    try:
        with transaction.atomic():
            return _apply(
                spec,
                actor=actor,
                actor_label=actor_label,
                base_digest=base_digest,
                decision_id=decision_id,
            )
    except IntegrityError as exc:
        # Only a concurrent apply of the same new plan gets here: validation covers the rest.
        raise PlanApplyRefused(
            [f"plan {spec.key!r} changed while this file was applied; apply it again ({exc})"]
        ) from exc


def _adapt_decision(decision_id: int | None, plan: Plan | None, spec: PlanSpec) -> Decision | None:
    """The adapt decision a re-plan names, checked: None when none is named."""
    if decision_id is None:
        return None
    decision = Decision.objects.filter(pk=decision_id).first()
    if decision is None:
        raise PlanApplyRefused([f"no decision with id {decision_id}"])
    if plan is None or decision.plan_id != plan.pk:
        raise PlanApplyRefused(
            [
                f"decision {decision.pk} is not a decision on plan {spec.key!r}: a re-plan carries "
                "out an adapt decision on the same plan"
            ]
        )
    if decision.decided != Decision.Decided.ADAPT:
        raise PlanApplyRefused(
            [
                f"decision {decision.pk} decided {decision.decided}, not adapt: only an adapt "
                "decision re-plans"
            ]
        )
    if correction := decision.corrections.order_by("pk").first():
        raise PlanApplyRefused(
            [
                f"decision {decision.pk} was corrected by decision {correction.pk}; re-plan under "
                "the correction if it is an adapt"
            ]
        )
    return decision


def _state_digest(stored: PlanSpec | None) -> str:
    return stored.digest() if stored else "new"


def _sources_of(step: StepSpec) -> set[str]:
    return step_metric_sources(
        measurements=step.measurements, canary=step.canary, convergence=step.convergence
    )


def _unknown_sources(spec: PlanSpec, stored: PlanSpec | None) -> list[str]:
    """Prometheus sources are registered before a plan may query them. A retired source may be
    read only by a step that already read it: nothing new starts reading it."""
    already = {step.key: _sources_of(step) for step in (stored.steps if stored else ())}
    wanted: dict[str, list[str]] = {}
    retired_ok: dict[str, set[str]] = {}
    for step in spec.steps:
        for name in _sources_of(step):
            wanted.setdefault(name, []).append(step.key)
            if name in already.get(step.key, set()):
                retired_ok.setdefault(name, set()).add(step.key)
    found = {
        source.name: source
        for source in MetricSource.objects.filter(
            name__in=wanted, kind=MetricSource.Kind.PROMETHEUS
        )
    }
    known = ", ".join(prometheus_source_names()) or "none is registered"
    reasons = []
    for name, steps in sorted(wanted.items()):
        source = found.get(name)
        if source is None:
            why = "which is not a registered Prometheus source"
        elif source.is_retired and set(steps) - retired_ok.get(name, set()):
            steps = sorted(set(steps) - retired_ok.get(name, set()))
            why = "which is retired: no step may start reading it"
        else:
            continue
        reasons.append(
            f"step {', '.join(sorted(set(steps)))} reads metric source {name!r}, {why} "
            f"(Prometheus sources: {known})"
        )
    return reasons


def _unknown_slos(spec: PlanSpec) -> list[str]:
    """An error budget gate names an SLO that exists: a gate on nothing would never hold."""
    wanted: dict[str, list[str]] = {}
    for step in spec.steps:
        if step.budget_slo:
            wanted.setdefault(step.budget_slo, []).append(step.key)
    if not wanted:
        return []
    known = sorted(SLO.objects.values_list("name", flat=True))
    listed = ", ".join(known[:_KNOWN_SHOWN]) + (
        f" and {len(known) - _KNOWN_SHOWN} more" if len(known) > _KNOWN_SHOWN else ""
    )
    return [
        f"step {', '.join(steps)} gates on SLO {name!r}, which does not exist; "
        + (f"known SLOs: {listed}" if known else "no SLO is defined yet")
        for name, steps in sorted(wanted.items())
        if name not in known
    ]


def _diff_against(plan: Plan | None, stored: PlanSpec | None, spec: PlanSpec) -> PlanDiff:
    diff = plan_diff(stored=stored, wanted=spec)
    reasons = _unknown_sources(spec, stored) + _unknown_slos(spec)
    if plan is not None:
        statuses = dict(plan.steps.values_list("key", "status"))
        reasons += _refusals(plan, diff, statuses)
    if reasons:
        raise PlanApplyRefused(reasons)
    diff.flags_created = _missing_flags(spec)
    diff.targets_created = _missing_targets(spec)
    return diff


def _apply(
    spec: PlanSpec,
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    actor_label: str | None,
    base_digest: str | None,
    decision_id: int | None = None,
) -> PlanApplyResult:
    plan = Plan.objects.select_for_update().filter(key=spec.key).first()
    decision = _adapt_decision(decision_id, plan, spec)
    stored = plan_spec_from_plan(plan) if plan else None
    if base_digest is not None and base_digest != _state_digest(stored):
        raise PlanApplyRefused(
            [f"plan {spec.key!r} changed since the preview; preview again and review the new diff"]
        )
    diff = _diff_against(plan, stored, spec)
    digest = spec.digest()
    if diff.empty:
        if plan is not None and plan.spec_digest != digest:
            # The stored plan already says what the file says (e.g. it was seeded, then
            # exported): remember the file without calling it a change.
            Plan.objects.filter(pk=plan.pk).update(spec_digest=digest)
            plan.spec_digest = digest
        return PlanApplyResult(
            spec=spec,
            diff=diff,
            plan=plan,
            dry_run=False,
            base_digest=_state_digest(stored),
            decision=decision,
        )

    now = timezone.now()
    if plan is None:
        plan = Plan.objects.create(
            key=spec.key,
            name=spec.name,
            goal=spec.goal,
            owner=spec.owner,
            teams=list(spec.teams),
            spec_digest=digest,
            created_at=now,
            updated_at=now,
        )
    else:
        plan.name, plan.goal, plan.owner, plan.teams = (
            spec.name,
            spec.goal,
            spec.owner,
            list(spec.teams),
        )
        plan.spec_digest, plan.updated_at = digest, now
        plan.save(update_fields=["name", "goal", "owner", "teams", "spec_digest", "updated_at"])

    for key in diff.flags_created:
        first = next(s for s in spec.steps if s.flag_key == key)
        flag_create(
            key=key,
            description=f"Ramped by plan {spec.key} (created when the plan was applied).",
            kind=Flag.Kind.RELEASE,
            owner=first.owner,
            actor=actor,
            source="plan",
        )
    for name in diff.targets_created:
        Target.objects.create(name=name, kind=Target.Kind.REGION)

    _write_steps(plan, spec, diff)

    ledger_append(
        action="plan.applied",
        subject=plan,
        actor=actor,
        actor_label=actor_label,
        plan_id=plan.pk,
        payload={
            "digest": digest,
            **({"decision": decision.pk} if decision is not None else {}),
            **diff.summary(),
        },
    )
    if diff.created or diff.sequence_changed or diff.dependencies:
        ledger_append(
            action="plan.declared",
            subject=plan,
            actor=actor,
            actor_label=actor_label,
            plan_id=plan.pk,
            payload={
                "order": spec.step_keys(),
                "depends_on": {s.key: sorted(s.depends_on) for s in spec.steps},
            },
        )
    stream_touch(stream=plan.stream, event="plan.applied")
    return PlanApplyResult(
        spec=spec,
        diff=diff,
        plan=plan,
        dry_run=False,
        applied=True,
        base_digest=_state_digest(stored),
        decision=decision,
    )


def _step_values(step: StepSpec, flags: dict[str, Flag], slos: dict[str, SLO]) -> dict[str, Any]:
    return {
        "title": step.title,
        "owner_team": step.owner,
        "kind": step.kind,
        "lockstep_group": step.lockstep,
        "service": step.service,
        "flag": flags.get(step.flag_key),
        "flag_percentage": step.flag_percentage,
        "rollback_command": step.rollback_command,
        "runbook_url": step.runbook,
        "pass_condition": step.pass_condition,
        "fail_condition": step.fail_condition,
        "on_fail": step.on_fail,
        "on_fail_percentage": step.on_fail_percentage,
        "measurements": step.measurements,
        "canary": step.canary,
        "convergence": step.convergence,
        "budget_slo": slos.get(step.budget_slo),
        "budget_min_remaining": step.budget_min_remaining,
        **step.analysis,
    }


def _write_steps(plan: Plan, spec: PlanSpec, diff: PlanDiff) -> None:
    existing = {s.key: s for s in plan.steps.select_for_update()}
    flags = {f.key: f for f in Flag.objects.filter(key__in={s.flag_key for s in spec.steps})}
    slos = {o.name: o for o in SLO.objects.filter(name__in={s.budget_slo for s in spec.steps})}
    targets = {
        t.name: t
        for t in Target.objects.filter(name__in={t for s in spec.steps for t in s.targets})
    }

    if diff.steps_removed:
        try:
            Step.objects.filter(plan=plan, key__in=diff.steps_removed).delete()
        except ProtectedError as exc:
            raise PlanApplyRefused(
                [
                    f"step {s.key!r} has history recorded against it (flag versions or "
                    "decisions) and cannot be removed"
                    for s in {o.step for o in exc.protected_objects if hasattr(o, "step")}
                    if s is not None
                ]
                or ["a removed step has history that must be kept"]
            ) from exc
    renumber = diff.sequence_changed
    if renumber:
        for i, key in enumerate(
            k for k in diff.order_before if k in existing and k not in diff.steps_removed
        ):
            Step.objects.filter(pk=existing[key].pk).update(position=_PARKING_OFFSET + i)

    changed = {c.key: {f.field for f in c.fields} for c in diff.steps_changed}
    steps: dict[str, Step] = {}
    for position, step_spec in enumerate(spec.steps, start=1):
        values = _step_values(step_spec, flags, slos)
        step = existing.get(step_spec.key)
        if step is None:
            step = Step.objects.create(plan=plan, key=step_spec.key, position=position, **values)
        elif step_spec.key in changed or renumber:
            for name, value in values.items():
                setattr(step, name, value)
            step.position = position if renumber else step.position
            step.save(update_fields=[*values, "position"])
        steps[step.key] = step
        if step_spec.key not in existing or "targets" in changed.get(step_spec.key, ()):
            _write_targets(step, step_spec, targets)

    by_key = {s.key: s for s in spec.steps}
    for dep in diff.dependencies:
        steps[dep.key].depends_on.set([steps[k] for k in by_key[dep.key].depends_on])
    for step_spec in diff.steps_added:
        if step_spec.depends_on:
            steps[step_spec.key].depends_on.set([steps[k] for k in step_spec.depends_on])


def _write_targets(step: Step, step_spec: StepSpec, targets: dict[str, Target]) -> None:
    have = {st.target.name: st for st in step.step_targets.select_related("target")}
    wanted = set(step_spec.targets)
    stale = [st.pk for name, st in have.items() if name not in wanted]
    if stale:
        StepTarget.objects.filter(pk__in=stale).delete()
    for name in step_spec.targets:
        if name not in have:
            StepTarget.objects.create(step=step, target=targets[name])
