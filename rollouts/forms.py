from django import forms

from rollouts.services.steps import PLAN_ACTIONS, STEP_ACTIONS


class StepActionForm(forms.Form):
    action = forms.ChoiceField(choices=[(a, a) for a in STEP_ACTIONS if a != "complete"])
    reason = forms.CharField(max_length=300, required=False)


class PlanActionForm(forms.Form):
    action = forms.ChoiceField(choices=[(a, a) for a in PLAN_ACTIONS])
    reason = forms.CharField(max_length=300, required=False)


class TargetConfirmForm(forms.Form):
    target = forms.SlugField(max_length=60)


class FlagRevertForm(forms.Form):
    seen_version = forms.IntegerField(min_value=1)
    reason = forms.CharField(max_length=300, required=False)


class FlagRestoreForm(forms.Form):
    version = forms.IntegerField(min_value=1)
    reason = forms.CharField(max_length=300, required=False)


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
