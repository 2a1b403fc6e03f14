from django import forms

from accounts.roles import MACHINE_ROLES


class IntegrationTokenForm(forms.Form):
    name = forms.CharField(
        max_length=63,
        help_text="what the integration is, e.g. node-exporter-eu; its service user is svc-<role>-<name>",
    )
    # Any text is accepted here: whether it is a role an integration may hold is the service's
    # rule (integration_token_create), and a retired role must get the service's words.
    role = forms.CharField(
        max_length=40,
        widget=forms.Select(
            choices=[("", "choose a role…")]
            + [(name, f"{name}: {role.purpose}") for name, role in MACHINE_ROLES.items()]
        ),
    )
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        label="Expires in (days)",
        help_text="empty: never expires",
    )


class TokenRevokeForm(forms.Form):
    reason = forms.CharField(max_length=300)
