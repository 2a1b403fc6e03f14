"""Evaluating verifications and convergence predicates, and acting on their verdicts.

Reading metrics is I/O and happens outside any transaction (`verification_measure`); recording
the verdict locks the plan, then the run, so a duplicate or late task can never act twice
(`evaluation_record`). The on-fail action runs in the same transaction as the evaluation that
failed the run, and the run's status changes exactly once under that lock: one failing
evaluation, one action.
"""

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import django.dispatch
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import TransitionRefused
from core.text import percent_text
from ledger.services import ledger_append
from live.broadcast import stream_touch
from rollouts.models import Evaluation, Flag, Plan, Step, StepTarget, Verification
from rollouts.services.assumptions import assumption_probe_concluded
from rollouts.services.flags import flag_change
from rollouts.services.steps import plan_transition, step_target_confirm, step_transition
from rollouts.verification_spec import (
    CONVERGENCE_VALUE,
    canary_parse,
    compiled_condition,
    stored_measurements,
)
from signals.canary import CanaryJudgement, canary_judge
from signals.conditions import ConditionEvaluationError, condition_evaluate
from signals.measurements import (
    MeasurementSpec,
    Reading,
    measurement_read,
    measurement_spec_parse,
    measurement_values,
)
from signals.prometheus import PrometheusError
from signals.selectors import QueryInvalid

# Sent after a step failed with on_fail "fail_and_page" (the incident console subscribes).
step_paged = django.dispatch.Signal()
# Distributions kept with an evaluation for its chart: enough to see the shape, small to store.
KEPT_DISTRIBUTION_VALUES = 400


@dataclass
class Measured:
    """What one evaluation read: per measurement a canary and maybe a baseline reading."""

    readings: dict[str, dict[str, Reading]] = field(default_factory=dict)
    canary: CanaryJudgement | None = None
    # metric -> (baseline values, canary values), the order canary_judge and the chart take
    distributions: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    canary_problem: str = ""
    canary_retryable: bool = False
    # When measuring began: the evaluation's duration, and a breach's detection when no
    # breaching sample marked it earlier.
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=timezone.now)

    @property
    def retryable(self) -> bool:
        return self.canary_retryable or any(
            r.retryable for sides in self.readings.values() for r in sides.values()
        )


def _conditions(verification: Verification):
    names = frozenset(verification.measurements)
    return (
        compiled_condition(verification.pass_condition, names),
        compiled_condition(verification.fail_condition, names),
    )


def verification_measure(
    verification: Verification, *, fail_only: bool = False, at: datetime | None = None
) -> Measured:
    """Read every measurement the conditions need (only the fail condition's for a breaching
    sample), and the canary distributions. No transaction: sources may be slow."""
    measured = Measured()
    passing, failing = _conditions(verification)
    wanted = failing if fail_only else None
    canary_names = wanted.measurements if wanted else passing.measurements | failing.measurements
    baseline_names = wanted.baseline if wanted else passing.baseline | failing.baseline
    measurements = stored_measurements(verification.measurements)
    for name in sorted(canary_names | baseline_names):
        spec = measurements[name]
        sides = {}
        if name in canary_names:
            sides["canary"] = measurement_read(spec, at=at)
        if name in baseline_names:
            sides["baseline"] = measurement_read(spec, baseline=True, at=at)
        measured.readings[name] = sides
    if verification.canary and not fail_only:
        _measure_canary(verification.canary, measured, at=at)
    return measured


def _measure_canary(doc: dict[str, Any], measured: Measured, *, at: datetime | None) -> None:
    spec, _ = canary_parse(doc)
    if spec is None:  # validated when saved; a stored document that no longer parses is an error
        measured.canary_problem = "the stored canary check no longer parses"
        return
    inputs = []
    for metric, measurement in spec.metrics:
        try:
            canary = measurement_values(measurement, at=at)
            baseline = measurement_values(measurement, baseline=True, at=at)
        except (PrometheusError, QueryInvalid) as exc:
            measured.canary_problem = f"canary metric {metric.name}: {exc}"
            measured.canary_retryable = getattr(exc, "retryable", False)
            return
        measured.distributions[metric.name] = (
            baseline[-KEPT_DISTRIBUTION_VALUES:],
            canary[-KEPT_DISTRIBUTION_VALUES:],
        )
        inputs.append((metric, baseline, canary))
    measured.canary = canary_judge(
        metrics=inputs,
        confidence=spec.confidence,
        pass_score=spec.pass_score,
        marginal_score=spec.marginal_score,
    )


def _values(measured: Measured, side: str) -> dict[str, float | None]:
    return {name: sides[side].value for name, sides in measured.readings.items() if side in sides}


def _show(measured: Measured) -> str:
    parts = []
    for name, sides in measured.readings.items():
        for side, reading in sides.items():
            label = name if side == "canary" else f"baseline.{name}"
            parts.append(f"{label}={reading.value:.6g}" if reading.value is not None else label)
    return ", ".join(parts)


def evaluation_verdict(
    verification: Verification, measured: Measured, *, fail_only: bool = False
) -> tuple[str, str] | None:
    """(outcome, reason). An error is never a pass; missing data is inconclusive, never a pass.
    With `fail_only` (a breaching sample) only a failure is a verdict, else None."""
    errors = [
        f"{name}{'' if side == 'canary' else ' (baseline)'}: {r.problem}"
        for name, sides in measured.readings.items()
        for side, r in sides.items()
        if r.error
    ]
    if errors or measured.canary_problem:
        if fail_only:
            return None  # a breaching sample acts on a failure; errors wait for the interval
        return Evaluation.Outcome.ERROR, "; ".join(errors) or measured.canary_problem
    passing, failing = _conditions(verification)
    canary, baseline = _values(measured, "canary"), _values(measured, "baseline")
    judgement = measured.canary
    try:
        if condition_evaluate(failing, canary, baseline):
            return Evaluation.Outcome.FAIL, (
                f"fail condition held: {failing.text} ({_show(measured)})"
            )
    except ConditionEvaluationError as exc:
        if fail_only:
            return None
        if judgement is not None and judgement.verdict == "fail":
            return Evaluation.Outcome.FAIL, f"canary check failed: {judgement.reason}"
        return Evaluation.Outcome.INCONCLUSIVE, f"not enough data: {_no_data(exc, measured)}"
    if judgement is not None and judgement.verdict == "fail":
        return Evaluation.Outcome.FAIL, f"canary check failed: {judgement.reason}"
    if fail_only:
        return None
    try:
        passed = condition_evaluate(passing, canary, baseline)
    except ConditionEvaluationError as exc:
        return Evaluation.Outcome.INCONCLUSIVE, f"not enough data: {_no_data(exc, measured)}"
    if judgement is not None and judgement.verdict == "marginal":
        return Evaluation.Outcome.INCONCLUSIVE, f"canary check marginal: {judgement.reason}"
    if passed:
        return Evaluation.Outcome.PASS, f"pass condition held: {passing.text} ({_show(measured)})"
    return Evaluation.Outcome.INCONCLUSIVE, (
        f"neither condition held ({_show(measured)}): insufficient evidence either way"
    )


def _no_data(exc: Exception, measured: Measured) -> str:
    problems = [
        f"{name}: {r.problem}"
        for name, sides in measured.readings.items()
        for r in sides.values()
        if r.value is None and r.problem
    ]
    return "; ".join(problems) or str(exc)


def verifications_claim_due(
    *, now: datetime | None = None, limit: int = 500
) -> list[tuple[int, int]]:
    """Running verifications whose interval is up, as (id, measured-so-far) tokens, each
    claimed by moving its due time one interval on, so a beat tick never enqueues it twice."""
    now = now or timezone.now()
    due = list(
        Verification.objects.filter(status=Verification.Status.RUNNING, next_due_at__lte=now)
        .order_by("next_due_at")
        .values_list("pk", "measured", "interval_seconds")[:limit]
    )
    claimed = []
    for pk, measured, interval in due:
        moved = Verification.objects.filter(
            pk=pk, status=Verification.Status.RUNNING, measured=measured, next_due_at__lte=now
        ).update(next_due_at=now + timedelta(seconds=interval))
        if moved:
            claimed.append((pk, measured))
    return claimed


def verification_evaluate(
    *,
    verification_id: int,
    trigger: str = Evaluation.Trigger.MANUAL,
    token: int | None = None,
    at: datetime | None = None,
) -> Evaluation | None:
    """Measure and record one evaluation now (tasks split the two to retry a flaky source)."""
    verification = Verification.objects.filter(pk=verification_id).first()
    if verification is None or verification.status != Verification.Status.RUNNING:
        return None
    fail_only = trigger == Evaluation.Trigger.INGEST
    measured = verification_measure(verification, fail_only=fail_only, at=at)
    return evaluation_record(
        verification_id=verification_id, measured=measured, trigger=trigger, token=token
    )


@transaction.atomic
def evaluation_record(
    *, verification_id: int, measured: Measured, trigger: str, token: int | None = None
) -> Evaluation | None:
    """Record the verdict, conclude the run when a limit is crossed, and act on it.

    `token` is the run's `measured` count when the evaluation was claimed: a task delivered
    twice, or overtaken by another evaluation, records nothing. A breaching-sample evaluation
    is recorded only when it fails.
    """
    if trigger not in Evaluation.Trigger.values:
        raise ValueError(f"unknown trigger {trigger!r}")
    plan_id = (
        Verification.objects.filter(pk=verification_id)
        .values_list("step__plan_id", flat=True)
        .first()
    )
    if plan_id is None:
        return None
    # The plan first, as every step transition locks it: the on-fail action below takes the
    # plan's locks, and a person's transition takes this run's lock (to cancel it).
    Plan.objects.select_for_update().filter(pk=plan_id).first()
    verification = Verification.objects.select_for_update().filter(pk=verification_id).first()
    if verification is None or verification.status != Verification.Status.RUNNING:
        return None
    if token is not None and verification.measured != token:
        return None
    verdict = evaluation_verdict(
        verification, measured, fail_only=trigger == Evaluation.Trigger.INGEST
    )
    if verdict is None:
        return None
    outcome, reason = verdict
    previous = (
        verification.evaluations.order_by("-sequence").values_list("outcome", flat=True).first()
    )
    verification.measured += 1
    evaluation = Evaluation.objects.create(
        verification=verification,
        sequence=verification.measured,
        trigger=trigger,
        outcome=outcome,
        readings={
            name: {side: r.to_dict() for side, r in sides.items()}
            for name, sides in measured.readings.items()
        },
        canary=(
            {**measured.canary.to_dict(), "distributions": measured.distributions}
            if measured.canary
            else {}
        ),
        reason=reason[:500],
        duration_seconds=time.monotonic() - measured.started,
    )
    _count(verification, outcome)
    step = Step.objects.select_related("plan", "flag").get(pk=verification.step_id)
    concluded = _conclusion(verification)
    if concluded is None:
        verification.save()
    else:
        status, conclusion = concluded
        verification.status, verification.conclusion = status, conclusion[:500]
        verification.concluded_by, verification.finished_at = evaluation, timezone.now()
        verification.next_due_at = None
        verification.save()
        ledger_append(
            action=f"verification.{status}",
            subject=step,
            actor=None,
            actor_label="stepwise",
            payload={
                "step": step.key,
                "verification": verification.pk,
                "evaluation": evaluation.pk,
                "sequence": evaluation.sequence,
                "trigger": trigger,
                "conclusion": conclusion,
                "readings": evaluation.readings,
                "pass": verification.pass_condition,
                "fail": verification.fail_condition,
                # Every number the canary's verdict rested on (score, p-values, shifts), and
                # the settings committed before the run, not only the words of its reason.
                **(
                    {
                        "canary": {
                            k: v for k, v in evaluation.canary.items() if k != "distributions"
                        }
                        | {"committed": verification.canary}
                    }
                    if evaluation.canary
                    else {}
                ),
            },
            plan_id=step.plan_id,
            step_id=step.pk,
        )
        # Before acting, so the ledger reads: run concluded, assumption settled, what it did.
        assumption_probe_concluded(verification=verification, step=step, evaluation=evaluation)
        flag_before = _flag_current(step)
        verification.action = _act(verification, step, evaluation)[:300]
        verification.save(update_fields=["action"])
        if flag_before != _flag_current(step):
            _revert_timed(verification, evaluation, measured)
    # News is pushed: a run that concluded, or an outcome unlike the last. A routine evaluation
    # that repeats the last outcome pushes nothing; the step page polls its run while it is open.
    if concluded is not None or outcome != previous:
        stream_touch(stream=f"step:{step.pk}", event=f"evaluation.{outcome}")
    return evaluation


def _flag_current(step: Step) -> int | None:
    if step.flag_id is None:
        return None
    return Flag.objects.filter(pk=step.flag_id).values_list("current_id", flat=True).first()


def _revert_timed(verification: Verification, evaluation: Evaluation, measured: Measured) -> None:
    """How long after the breach was detected its action changed the flag: from the first
    breaching sample no evaluation had judged yet, else from when this evaluation began."""
    detected = (
        verification.breach_pending_since
        if evaluation.trigger == Evaluation.Trigger.INGEST and verification.breach_pending_since
        else measured.started_at
    )
    evaluation.revert_seconds = max(0.0, (timezone.now() - detected).total_seconds())
    evaluation.save(update_fields=["revert_seconds"])


def _count(verification: Verification, outcome: str) -> None:
    if outcome == Evaluation.Outcome.ERROR:
        verification.errors += 1
        verification.consecutive_errors += 1
        return
    verification.consecutive_errors = 0
    if outcome == Evaluation.Outcome.PASS:
        verification.passed += 1
    elif outcome == Evaluation.Outcome.FAIL:
        verification.failed += 1
    else:
        verification.inconclusive += 1


def _conclusion(v: Verification) -> tuple[str, str] | None:
    """Argo's rules: a limit is crossed when the count goes over it (limit 0: the first one)."""
    if v.failed > v.failure_limit:
        return Verification.Status.FAILED, (
            f"{v.failed} failed evaluation{'s' if v.failed != 1 else ''} "
            f"(failure limit {v.failure_limit})"
        )
    if v.consecutive_errors > v.consecutive_error_limit:
        return Verification.Status.ERROR, (
            f"{v.consecutive_errors} errors in a row (limit {v.consecutive_error_limit})"
        )
    if v.inconclusive > v.inconclusive_limit:
        return Verification.Status.INCONCLUSIVE, (
            f"{v.inconclusive} inconclusive evaluation{'s' if v.inconclusive != 1 else ''} "
            f"(limit {v.inconclusive_limit}): a person decides"
        )
    if v.passed + v.failed + v.inconclusive >= v.count:
        if not v.passed:
            # Tolerated failures and inconclusive results are not evidence that the step works.
            return Verification.Status.INCONCLUSIVE, (
                f"{v.count} evaluations and none passed: a person decides"
            )
        return Verification.Status.SUCCESSFUL, (f"{v.passed} of {v.count} evaluations passed")
    return None


def _act(verification: Verification, step: Step, evaluation: Evaluation) -> str:
    """What the run's conclusion does to the step and plan; returns it in words."""
    cause = f"verification {verification.pk} #{evaluation.sequence}: {evaluation.reason}"
    try:
        if verification.status == Verification.Status.FAILED:
            return _on_fail(verification, step, cause, evaluation)
        if verification.status in {Verification.Status.ERROR, Verification.Status.INCONCLUSIVE}:
            why = f"{step.key}: verification {verification.status} ({verification.conclusion})"
            if step.plan.status == Plan.Status.ACTIVE:
                plan_transition(
                    plan_id=step.plan_id,
                    action="pause",
                    actor=None,
                    reason=why,
                    evaluation_id=evaluation.pk,
                )
                return f"paused the plan: {why}"
            return f"plan is {step.plan.status}; nothing to pause"
        return _advance_when_partners_verified(step)
    except TransitionRefused as exc:
        return f"could not act: {exc}"


def _on_fail(verification: Verification, step: Step, cause: str, evaluation: Evaluation) -> str:
    action = verification.on_fail
    if action == Step.OnFail.RESTORE_PREVIOUS_FLAG:
        step_transition(step_id=step.pk, action="revert", actor=None, reason=cause)
        return "restored the flag's version from when the step started and reverted the step"
    if action == Step.OnFail.SET_FLAG_PERCENTAGE:
        percentage = verification.on_fail_percentage
        started_at = step.attempt_flag_version
        if started_at is not None and percentage > started_at.exposure:
            # The declared action would leave the flag more exposed than before this attempt:
            # refuse it, fall back to where the attempt began, and get a person.
            refused = (
                f"on fail would set {step.flag.key} to {percent_text(percentage)}, more than "
                f"{started_at.settings_text()} (v{started_at.number}) when the step started"
            )
            step_transition(
                step_id=step.pk, action="revert", actor=None, reason=f"{cause}; {refused}"
            )
            _page(verification, step, f"{cause}; {refused}: reverted instead")
            return f"refused: {refused}; reverted the step and paged its owners"
        flag_change(
            flag_key=step.flag.key,
            changes={"rollout_percentage": percentage},
            actor=None,
            reason=f"{step.plan.key}/{step.key} failed verification; {cause}"[:300],
            source="plan",
            step=step,
        )
        step_transition(step_id=step.pk, action="fail", actor=None, reason=cause)
        return f"set {step.flag.key} to {percent_text(percentage)} and failed the step"
    step_transition(step_id=step.pk, action="fail", actor=None, reason=cause)
    if action == Step.OnFail.PAUSE_PLAN:
        plan = Plan.objects.get(pk=step.plan_id)
        if plan.status == Plan.Status.ACTIVE:
            plan_transition(
                plan_id=plan.pk,
                action="pause",
                actor=None,
                reason=cause,
                evaluation_id=evaluation.pk,
            )
        return "failed the step and paused the plan"
    _page(verification, step, cause)
    return "failed the step and paged its owners"


def _page(verification: Verification, step: Step, cause: str) -> None:
    ledger_append(
        action="step.paged",
        subject=step,
        actor=None,
        actor_label="stepwise",
        payload={"step": step.key, "verification": verification.pk, "reason": cause},
        plan_id=step.plan_id,
        step_id=step.pk,
    )
    transaction.on_commit(lambda: step_paged.send(sender=Step, step_id=step.pk, reason=cause))


def _advance_when_partners_verified(step: Step) -> str:
    """A successful run moves the step to converging; lockstep partners move together, so the
    group moves when the last partner's verification succeeds."""
    if step.plan.status != Plan.Status.ACTIVE:
        return f"verified; the plan is {step.plan.status}, so the step waits to advance"
    group = [step]
    if step.lockstep_group:
        group = list(Step.objects.filter(plan=step.plan, lockstep_group=step.lockstep_group))
    waiting = [
        member.key
        for member in group
        if (latest := member.verifications.order_by("-started_at", "-pk").first()) is None
        or latest.status != Verification.Status.SUCCESSFUL
    ]
    if waiting:
        return f"verified; waits for lockstep partners {', '.join(waiting)}"
    if step.status == Step.Status.RUNNING:
        step_transition(step_id=step.pk, action="advance", actor=None, reason="verification passed")
    step_transition(step_id=step.pk, action="advance", actor=None, reason="verification passed")
    return "advanced the step to converging"


# --- convergence predicates ---------------------------------------------------------------------


def convergence_due_steps() -> list[int]:
    """Converging non-flag steps with a convergence predicate and a target still pending."""
    return list(
        Step.objects.filter(status=Step.Status.CONVERGING, plan__status=Plan.Status.ACTIVE)
        .exclude(convergence={})
        .filter(step_targets__state=StepTarget.State.PENDING)
        .values_list("pk", flat=True)
        .distinct()
    )


def convergence_check(*, step_id: int, at: datetime | None = None) -> list[str]:
    """Check the step's convergence predicate in every pending target; confirm those where it
    holds. Returns the targets confirmed. Each target keeps its last reading for the page."""
    step = Step.objects.filter(pk=step_id, status=Step.Status.CONVERGING).first()
    if step is None or not step.convergence:
        return []
    measurement: MeasurementSpec = measurement_spec_parse(
        CONVERGENCE_VALUE, step.convergence["measurement"]
    )
    condition = compiled_condition(step.convergence["condition"], frozenset({CONVERGENCE_VALUE}))
    confirmed = []
    for row in step.step_targets.filter(state=StepTarget.State.PENDING).select_related("target"):
        target = row.target.name
        reading = measurement_read(measurement.for_target(target), at=at)
        check: dict[str, Any] = {**reading.to_dict(), "checked_at": timezone.now().isoformat()}
        holds = False
        if reading.value is not None:
            try:
                holds = condition_evaluate(condition, {CONVERGENCE_VALUE: reading.value})
            except ConditionEvaluationError as exc:
                check["problem"] = str(exc)
        check["holds"] = holds
        StepTarget.objects.filter(pk=row.pk).update(last_check=check)
        if holds:
            try:
                step_target_confirm(
                    step_id=step.pk,
                    target=target,
                    actor=None,
                    source="convergence predicate",
                    evidence={
                        "condition": condition.text,
                        "value": reading.value,
                        "query": reading.query,
                    },
                )
            except TransitionRefused:
                break  # the step moved on meanwhile (reverted, failed): stop checking it
            confirmed.append(target)
    return confirmed


def breaches_mark(metrics: set[str]) -> list[tuple[int, int]]:
    """Running verifications whose fail condition reads one of these metrics, as (id, token)
    to evaluate at once. Each is marked as having a breach to judge (kept from the first
    unjudged one), so that `breaches_unjudged` finds it again if its task is lost with a
    worker."""
    rows = list(
        Verification.objects.filter(
            Q(status=Verification.Status.RUNNING), watches__metric__in=metrics
        )
        .values_list("pk", "measured")
        .distinct()
    )
    Verification.objects.filter(
        pk__in=[pk for pk, _ in rows], breach_pending_since__isnull=True
    ).update(breach_pending_since=timezone.now())
    return rows


# A breach's own task normally judges it within a second; older than this, its task is taken
# to be lost (a worker killed while holding it: Redis would redeliver it only after the
# visibility timeout, an hour) and the beat tick enqueues it again.
BREACH_REDELIVERY_SECONDS = 3.0


def breaches_unjudged(*, now: datetime | None = None) -> list[tuple[int, int]]:
    """(id, token) of running verifications with a breach no evaluation has judged for
    BREACH_REDELIVERY_SECONDS. A duplicate of a task still queued records nothing: both carry
    the same token, and the first evaluation to record moves it on."""
    cutoff = (now or timezone.now()) - timedelta(seconds=BREACH_REDELIVERY_SECONDS)
    return list(
        Verification.objects.filter(
            status=Verification.Status.RUNNING, breach_pending_since__lte=cutoff
        ).values_list("pk", "measured")
    )


def breach_judged(*, verification_id: int, since: datetime) -> None:
    """An evaluation that started at `since` has read every sample that arrived before it."""
    Verification.objects.filter(pk=verification_id, breach_pending_since__lte=since).update(
        breach_pending_since=None
    )
