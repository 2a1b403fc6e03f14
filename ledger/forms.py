from django import forms

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
    plan = forms.IntegerField(required=False, min_value=1)
    step = forms.IntegerField(required=False, min_value=1)
    incident = forms.IntegerField(required=False, min_value=1)

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
