from django import forms

from ledger.references import reference_resolve
from ledger.selectors import LedgerFilter
from ledger.services import MANUAL_KINDS


class ManualEntryForm(forms.Form):
    kind = forms.ChoiceField(choices=list(MANUAL_KINDS.items()))
    subject = forms.CharField(
        max_length=64, required=False, help_text="e.g. service:checkout or flag:new-cache"
    )
    summary = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class LedgerFilterForm(forms.Form):
    action = forms.CharField(required=False, max_length=80)
    subject_type = forms.CharField(required=False, max_length=80)
    actor = forms.CharField(required=False, max_length=150)
    plan = forms.CharField(required=False, max_length=100, help_text="a plan key or id")
    step = forms.CharField(
        required=False, max_length=200, help_text="plan-key/step-key, or a step id"
    )
    incident = forms.CharField(required=False, max_length=20, help_text="INC-12, 12")

    def _reference(self, kind: str) -> int | None:
        text = self.cleaned_data[kind]
        if not text:
            return None
        try:
            return reference_resolve(kind=kind, text=text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_plan(self) -> int | None:
        return self._reference("plan")

    def clean_step(self) -> int | None:
        return self._reference("step")

    def clean_incident(self) -> int | None:
        return self._reference("incident")

    def to_filter(self) -> LedgerFilter:
        """The filter the form describes; an invalid form filters nothing (the page says why)."""
        if not self.is_valid():
            return LedgerFilter()
        d = self.cleaned_data
        return LedgerFilter(
            action=d["action"],
            subject_type=d["subject_type"],
            actor=d["actor"],
            plan_id=d["plan"],
            step_id=d["step"],
            incident_id=d["incident"],
        )
