"""What holds a step's start from outside its plan: the error budget gate (a step may require that
an SLO has more than a share of its error budget left) and plan holds (an open incident on the
plan's services). Pure reads; `rollouts.rules` turns either into the reason a step cannot start."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from core.text import percent_text
from rollouts.models import Plan, Step
from signals.models import SLO
from signals.slos import SLOStatus, slo_statuses

GATE = "error budget gate"
# Only a step that could start now is held by its gate; the gate is not checked again later.
STARTABLE = {Step.Status.PENDING, Step.Status.READY}


def _left_text(percent: float, threshold: Decimal) -> str:
    """-12.4999 -> "-12.5%": one decimal, or two where one would look equal to the threshold."""
    for digits in (1, 2):
        rounded = round(percent, digits)
        if rounded != float(threshold) or percent == float(threshold):
            break
    if rounded == 0:
        return "0%"
    return f"{rounded:.{digits}f}".rstrip("0").rstrip(".") + "%"


@dataclass(frozen=True)
class BudgetGate:
    """A step's gate read against its SLO's status now."""

    step: Step
    status: SLOStatus

    @property
    def slo(self) -> SLO:
        return self.status.slo

    @property
    def min_remaining(self) -> Decimal:
        return self.step.budget_min_remaining or Decimal(0)

    @property
    def closed(self) -> bool:
        return gate_closed(self.status.budget_remaining, self.min_remaining)

    @property
    def reason(self) -> str | None:
        """Why the gate holds the step, or None when it is open."""
        if not self.closed:
            return None
        return budget_gate_reason(self.step, self.status)

    @property
    def text(self) -> str:
        return budget_gate_text(self.step, self.status)

    @property
    def detail(self) -> str:
        """The text without the SLO's name, for where the name is already shown (a link)."""
        return self.text.removeprefix(f"{self.slo.name}: ")


def gate_closed(budget_remaining: float | None, min_remaining: Decimal) -> bool:
    """A gate needing more than `min_remaining` percent, against a remaining share of the
    budget. Without data the budget is unchanged, so the gate stays open."""
    return budget_remaining is not None and budget_remaining * 100 <= float(min_remaining)


def plans_whose_gates_moved(
    *, slo_id: int, budget_before: float | None, budget_after: float | None
) -> list[Plan]:
    """Active plans with a step that could start and whose gate on `slo_id` opened or closed as
    the SLO's remaining budget went from `budget_before` to `budget_after`."""
    if budget_before == budget_after:  # most ticks: nothing to look up
        return []
    gated = Step.objects.filter(
        budget_slo_id=slo_id, status__in=STARTABLE, plan__status=Plan.Status.ACTIVE
    ).select_related("plan")
    moved = {
        step.plan_id: step.plan
        for step in gated
        if gate_closed(budget_before, step.budget_min_remaining or Decimal(0))
        != gate_closed(budget_after, step.budget_min_remaining or Decimal(0))
    }
    return list(moved.values())


def budget_gate_reason(step: Step, status: SLOStatus) -> str:
    """ "error budget gate: login-availability has -12.5% of its budget left; this step needs
    more than 25%": the words the Start button and a refused start both show."""
    remaining, needs = status.budget_remaining, step.budget_min_remaining or Decimal(0)
    left = "no data" if remaining is None else _left_text(remaining * 100, needs)
    return (
        f"{GATE}: {status.slo.name} has {left} of its budget left; "
        f"this step needs more than {percent_text(needs)}"
    )


def budget_gate_text(step: Step, status: SLOStatus) -> str:
    """The gate's state for the step page, open or closed: "login-availability: 63% left,
    needs > 25%"."""
    remaining, needs = status.budget_remaining, step.budget_min_remaining or Decimal(0)
    if remaining is None:
        return (
            f"{status.slo.name}: no data: the budget is unchanged (needs > {percent_text(needs)})"
        )
    left = _left_text(remaining * 100, needs)
    return f"{status.slo.name}: {left} left, needs > {percent_text(needs)}"


def partner_reason(partner: Step, reason: str) -> str:
    """A lockstep partner's closed gate, as the reason the steps starting with it are held."""
    detail = reason.removeprefix(f"{GATE}: ").replace("this step needs", f"{partner.key} needs")
    return f"{GATE} (lockstep partner {partner.key}): {detail}"


def _slos(steps: list[Step]) -> dict[int, SLO]:
    loaded = {s.budget_slo_id: s.budget_slo for s in steps if Step.budget_slo.is_cached(s)}
    missing = {s.budget_slo_id for s in steps} - set(loaded)
    if missing:
        loaded |= {slo.pk: slo for slo in SLO.objects.filter(pk__in=missing)}
    return loaded


def budget_gates(steps: Iterable[Step]) -> dict[int, BudgetGate]:
    """Step id -> its gate read now, for every gated step given whatever its status. One
    `slo_statuses` call over the distinct SLOs (and one query for SLOs not already loaded)."""
    gated = [s for s in steps if s.budget_slo_id is not None]
    if not gated:
        return {}
    slos = _slos(gated)
    statuses = {status.slo.pk: status for status in slo_statuses(slos.values())}
    return {s.pk: BudgetGate(step=s, status=statuses[s.budget_slo_id]) for s in gated}


def blockers_of(gates: dict[int, BudgetGate]) -> dict[int, str]:
    """Step id -> why its gate holds it now, for the gated steps that could start (pending or
    ready) and whose SLO has data with at most the required share of its budget left."""
    return {
        step_id: gate.reason
        for step_id, gate in gates.items()
        if gate.step.status in STARTABLE and gate.reason is not None
    }


def budget_gate_blockers(steps: Iterable[Step]) -> dict[int, str]:
    """Step id -> why its error budget gate holds it now (see `blockers_of`), computed for all
    `steps` with one `slo_statuses` call over their distinct SLOs."""
    return blockers_of(budget_gates(s for s in steps if s.status in STARTABLE))


@dataclass(frozen=True)
class PlanHold:
    """Something outside the plan that holds every start in it until it lets go."""

    label: str  # "INC-12 (accounts-api, SEV2)"
    url: str


HoldSource = Callable[[list[Plan]], dict[int, list[PlanHold]]]
_hold_sources: list[HoldSource] = []


def plan_hold_source_register(source: HoldSource) -> None:
    """Apps above rollouts (incidents) say what holds plans; rollouts may not import them."""
    if source not in _hold_sources:
        _hold_sources.append(source)


def plan_holds(plans: Iterable[Plan]) -> dict[int, list[PlanHold]]:
    """Plan id -> what holds its starts now (empty when nothing does)."""
    plans = list(plans)
    holds: dict[int, list[PlanHold]] = {plan.pk: [] for plan in plans}
    for source in _hold_sources:
        for plan_id, found in source(plans).items():
            holds[plan_id].extend(found)
    return holds


def plan_hold_reason(holds: Iterable[PlanHold]) -> str | None:
    labels = [hold.label for hold in holds]
    if not labels:
        return None
    return (
        f"held by {', '.join(labels)}: no step starts until the incident resolves or its "
        "commander releases the plan"
    )
