from django import forms

from incidents.models import Incident, RoleAssignment


class DeclareForm(forms.Form):
    title = forms.CharField(max_length=200)
    severity = forms.TypedChoiceField(
        choices=Incident.Severity.choices, coerce=int, initial=Incident.Severity.SEV2
    )
    summary = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    services = forms.CharField(required=False, help_text="comma-separated")
    plans = forms.CharField(required=False, help_text="plan keys, comma-separated")
    flags = forms.CharField(required=False, help_text="flag keys, comma-separated")

    @staticmethod
    def split(value: str) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()]


class NarrationForm(forms.Form):
    text = forms.CharField(max_length=2000)
    corrects = forms.IntegerField(required=False, min_value=1)


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=Incident.Status.choices)
    reason = forms.CharField(max_length=300, required=False)


class TriageForm(forms.Form):
    severity = forms.TypedChoiceField(choices=Incident.Severity.choices, coerce=int)
    services = forms.CharField(max_length=500, required=False, help_text="comma-separated")
    reason = forms.CharField(max_length=300, required=False)

    def clean_services(self) -> list[str]:
        return [s for s in self.cleaned_data["services"].split(",") if s.strip()]


class HypothesisForm(forms.Form):
    statement = forms.CharField(max_length=500)


class HypothesisCloseForm(forms.Form):
    hypothesis = forms.IntegerField()
    confirmed = forms.TypedChoiceField(choices=[("1", "confirmed"), ("0", "rejected")], coerce=int)


class ChangeForm(forms.Form):
    """A change; with a flag key and new settings, a flag change (`flag_changes` for the
    service). The revert may be left out here only because the service decides: a flag change's
    revert defaults to restoring the flag's previous version; any other change is refused."""

    description = forms.CharField(max_length=500)
    expected_effect = forms.CharField(max_length=500)
    revert_plan = forms.CharField(max_length=500, required=False)
    flag_key = forms.SlugField(max_length=100, required=False)
    flag_enabled = forms.ChoiceField(
        choices=[("", "as now"), ("on", "on"), ("off", "off")], required=False
    )
    flag_percentage = forms.DecimalField(
        min_value=0, max_value=100, decimal_places=2, required=False
    )

    def clean(self) -> dict:
        data = super().clean()
        changes: dict = {}
        if data.get("flag_enabled"):
            changes["enabled"] = data["flag_enabled"] == "on"
        if data.get("flag_percentage") is not None:
            changes["rollout_percentage"] = data["flag_percentage"]
        key = data.get("flag_key", "")
        if changes and not key:
            raise forms.ValidationError("pick the flag these settings are for")
        if key and not changes:
            raise forms.ValidationError(
                f"say what {key} becomes: turn it on or off, or give a rollout percentage"
            )
        data["flag_changes"] = changes
        return data


class ChangeVerifyForm(forms.Form):
    change = forms.IntegerField()
    better = forms.TypedChoiceField(choices=[("1", "better"), ("0", "not better")], coerce=int)
    note = forms.CharField(max_length=500, required=False)


class FlagRevertForm(forms.Form):
    flag = forms.SlugField(max_length=100)
    seen_version = forms.IntegerField(min_value=1)
    expected_effect = forms.CharField(max_length=500, required=False)


class PlanReleaseForm(forms.Form):
    plan = forms.SlugField(max_length=80)
    reason = forms.CharField(
        max_length=300,
        error_messages={"required": "say why the plan may go on during the incident"},
    )


class BreakGlassForm(forms.Form):
    switch = forms.IntegerField()
    on = forms.TypedChoiceField(choices=[("1", "on"), ("0", "off")], coerce=int)


class HandoverForm(forms.Form):
    username = forms.CharField(max_length=150)


class RoleForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(
        choices=[c for c in RoleAssignment.Role.choices if c[0] != RoleAssignment.Role.COMMANDER]
    )


class DecisionForm(forms.Form):
    label = forms.CharField(max_length=100)
    believed = forms.CharField(max_length=2000)
    observed = forms.CharField(max_length=2000)
    why = forms.CharField(max_length=2000)


class ActionItemForm(forms.Form):
    title = forms.CharField(max_length=300)
    owner = forms.CharField(max_length=150)
    due_on = forms.DateField(required=False)


class ActionItemDoneForm(forms.Form):
    item = forms.IntegerField(min_value=1)
    done = forms.TypedChoiceField(
        choices=[("yes", "yes"), ("no", "no")], coerce=lambda v: v == "yes"
    )


class PostmortemForm(forms.Form):
    summary = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    impact = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    root_cause = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
