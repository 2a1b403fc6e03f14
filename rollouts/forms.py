from typing import Any

from django import forms

from rollouts.models import Decision, Plan
from rollouts.services.steps import PLAN_ACTIONS, STEP_ACTIONS


class StepActionForm(forms.Form):
    action = forms.ChoiceField(choices=[(a, a) for a in STEP_ACTIONS if a != "complete"])
    reason = forms.CharField(max_length=300, required=False)


class PlanActionForm(forms.Form):
    action = forms.ChoiceField(choices=[(a, a) for a in PLAN_ACTIONS])
    reason = forms.CharField(max_length=300, required=False)


class TargetConfirmForm(forms.Form):
    target = forms.SlugField(max_length=60)
    reason = forms.CharField(
        max_length=300, error_messages={"required": "say why this target has converged"}
    )


class FlagRevertForm(forms.Form):
    seen_version = forms.IntegerField(min_value=1)
    reason = forms.CharField(max_length=300, required=False)


class FlagRestoreForm(forms.Form):
    version = forms.IntegerField(min_value=1)
    # A restore undoes someone's change: the history and the ledger say why.
    reason = forms.CharField(max_length=300, label="Why")


def flag_restore_forms(
    rows: list[dict[str, Any]], *, current_id: int | None, refused: FlagRestoreForm | None = None
) -> dict[str, Any] | None:
    """Give each history row its restore form (ids unique per row); a refused form goes back to
    its own row, which is returned."""
    refused_row = None
    for row in rows:
        version = row["version"]
        is_refused = (
            refused is not None
            and refused.cleaned_data.get("version") == version.number
            and version.pk != current_id
        )
        form = refused if is_refused else FlagRestoreForm(initial={"version": version.number})
        form.auto_id = f"restore-v{version.number}-%s"
        row["restore_form"] = form
        if is_refused:
            refused_row = row
    return refused_row


class FlagChangeForm(forms.Form):
    enabled = forms.BooleanField(required=False)
    rollout_percentage = forms.DecimalField(min_value=0, max_value=100, decimal_places=2)
    reason = forms.CharField(max_length=300)


class ReconcileForm(forms.Form):
    decision = forms.ChoiceField(choices=[("accept", "accept into the path"), ("revert", "revert")])
    reason = forms.CharField(max_length=300)


class DeployWebhookForm(forms.Form):
    service = forms.CharField(max_length=80)
    version = forms.CharField(max_length=80)
    target = forms.SlugField(max_length=60)


def _yes(value: str) -> bool:
    return value == "yes"


class BudgetOverrideForm(forms.Form):
    """The decision that starts a step its error budget gate holds."""

    believed = forms.CharField(
        max_length=2000,
        label="What we believed",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    observed = forms.CharField(
        max_length=2000,
        label="What reality shows",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    why = forms.CharField(
        max_length=2000,
        label="Why start anyway",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    would_choose_again = forms.TypedChoiceField(
        label=Decision.DECISIVE_QUESTION,
        choices=[("yes", "yes"), ("no", "no")],
        coerce=_yes,
        widget=forms.RadioSelect,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Fixed ids: the page's live refresh holds off while any of these has text in it.
        kwargs.setdefault("auto_id", "override-%s")
        super().__init__(*args, **kwargs)


# --- assumptions and the decision log -------------------------------------------------------------
# Text fields are optional here on purpose: the services refuse what is missing in words a person
# can act on ("say why you decided this"), and the form keeps what was typed.


def _optional_id(label: str, **kwargs: Any) -> forms.IntegerField:
    return forms.IntegerField(required=False, min_value=1, label=label, **kwargs)


class AssumptionForm(forms.Form):
    statement = forms.CharField(
        required=False,
        max_length=2000,
        label="The plan assumes",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    # Plain integers: the service names the field and the range when a score is outside 1-5.
    impact = forms.IntegerField(
        label="Impact if false (1-5)", widget=forms.NumberInput(attrs={"min": 1, "max": 5})
    )
    uncertainty = forms.IntegerField(
        label="Uncertainty (1-5)", widget=forms.NumberInput(attrs={"min": 1, "max": 5})
    )
    probe = forms.CharField(
        required=False,
        max_length=2000,
        label="Probe: the cheapest test that would show it false",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    probe_cost = forms.CharField(required=False, max_length=100, label='Probe cost (e.g. "2 days")')
    probe_step = _optional_id("Probe step (its verification decides it)", widget=forms.Select)

    def __init__(self, *args: Any, steps: list | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "assumption-%s")
        super().__init__(*args, **kwargs)
        self.fields["probe_step"].widget.choices = [("", "none")] + [
            (s.pk, f"{s.key}{' (probe)' if s.kind == 'probe' else ''}") for s in steps or []
        ]


class AssumptionStatusForm(forms.Form):
    """What the evidence shows about one assumption, recorded by a person."""

    assumption = forms.IntegerField(min_value=1, label="Assumption", widget=forms.Select)
    status = forms.ChoiceField(
        label="It is", choices=[("holding", "holding"), ("falsified", "falsified")]
    )
    evidence = forms.CharField(
        required=False,
        max_length=2000,
        label="Evidence",
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def __init__(self, *args: Any, assumptions: list | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "assumption-status-%s")
        super().__init__(*args, **kwargs)
        self.fields["assumption"].widget.choices = [
            (a.pk, f"rank {a.rank} · {a.status} · {a.statement[:70]}") for a in assumptions or []
        ]


class AssumptionPolicyForm(forms.Form):
    policy = forms.ChoiceField(choices=Plan.AssumptionPolicy.choices)


class DecisionForm(forms.Form):
    """One entry of a plan's decision log."""

    believed = forms.CharField(
        required=False,
        max_length=4000,
        label="What we believed",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    observed = forms.CharField(
        required=False,
        max_length=4000,
        label="What reality showed",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    decided = forms.ChoiceField(
        label="Decided",
        choices=[(c, c) for c in ("adapt", "persist", "kill")],
        widget=forms.RadioSelect,
    )
    why = forms.CharField(
        required=False,
        max_length=4000,
        label="Why",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    would_choose_again = forms.TypedChoiceField(
        label=Decision.DECISIVE_QUESTION,
        choices=[("yes", "yes"), ("no", "no")],
        coerce=_yes,
        widget=forms.RadioSelect,
        error_messages={"required": "answer the decisive question: yes or no"},
    )
    assumption = _optional_id("Prompted by assumption", widget=forms.Select)
    step = _optional_id("Prompted by step", widget=forms.Select)
    evaluation = _optional_id("Evaluation", widget=forms.HiddenInput)
    corrects = _optional_id("Corrects entry", widget=forms.Select)

    def __init__(
        self,
        *args: Any,
        steps: list | None = None,
        assumptions: list | None = None,
        decisions: list | None = None,
        **kwargs: Any,
    ) -> None:
        # Fixed ids: the page's live refresh holds off while any text field has text in it.
        kwargs.setdefault("auto_id", "decision-%s")
        super().__init__(*args, **kwargs)
        self.fields["assumption"].widget.choices = [("", "none")] + [
            (a.pk, f"rank {a.rank} · {a.status} · {a.statement[:70]}") for a in assumptions or []
        ]
        self.fields["step"].widget.choices = [("", "none")] + [(s.pk, s.key) for s in steps or []]
        self.fields["corrects"].widget.choices = [("", "nothing: a new decision")] + [
            (d.pk, f"#{d.pk} {d.label or d.decided} ({d.created_at:%Y-%m-%d %H:%M})")
            for d in decisions or []
        ]
