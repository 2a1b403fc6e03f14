from django import forms

from signals.services import SECRET_REF

MAX_FILE_BYTES = 512 * 1024


class OpenSLOImportForm(forms.Form):
    text = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "mono"}),
        label="OpenSLO YAML",
    )
    file = forms.FileField(required=False, label="or a file")

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:  # a field's own error (an empty upload, a NUL byte) says it better
            return data
        upload = data.get("file")
        if upload is not None:
            if upload.size > MAX_FILE_BYTES:
                raise forms.ValidationError(f"the file is larger than {MAX_FILE_BYTES // 1024} KiB")
            try:
                data["text"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError("the file is not UTF-8 text") from None
        if not (data.get("text") or "").strip():
            raise forms.ValidationError("paste OpenSLO YAML or choose a file")
        return data


class MetricSourceForm(forms.Form):
    """A Prometheus source's settings; `name` only when registering (a name stays)."""

    name = forms.CharField(max_length=100, help_text="what SLOs and steps call it, e.g. prometheus")
    url = forms.CharField(
        max_length=200, label="URL", help_text="base URL of the Prometheus HTTP API"
    )
    timeout_seconds = forms.FloatField(
        initial=5.0, min_value=0.1, max_value=60, label="Timeout (seconds)"
    )
    verify_tls = forms.BooleanField(required=False, initial=True, label="Verify TLS certificates")
    auth_scheme = forms.ChoiceField(
        choices=[("", "none"), ("bearer", "bearer token"), ("basic", "basic auth")],
        required=False,
        label="Authentication",
    )
    auth_username = forms.CharField(
        max_length=200, required=False, label="Username", help_text="basic auth only"
    )
    auth_secret_ref = forms.CharField(
        max_length=200,
        required=False,
        label="Secret",
        help_text="an environment variable holding the token or password, e.g. env:PROM_TOKEN; "
        "Stepwise never stores credentials",
    )

    def __init__(self, *args: object, editing: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if editing:
            del self.fields["name"]

    def clean_auth_secret_ref(self) -> str:
        value = self.cleaned_data["auth_secret_ref"].strip()
        if value and not SECRET_REF.fullmatch(value):
            raise forms.ValidationError(
                "give a reference to an environment variable, like env:PROM_TOKEN; Stepwise "
                "does not store credentials (what was given is not shown back)"
            )
        return value

    def full_clean(self) -> None:
        super().full_clean()
        # What is not a reference may be the secret itself: the page must not show it again.
        key = self.add_prefix("auth_secret_ref")
        if self.is_bound and "auth_secret_ref" in self.errors:
            self.data = self.data.copy()
            self.data[key] = ""


class MetricSourceTestForm(forms.Form):
    query = forms.CharField(
        max_length=2000,
        required=False,
        label="PromQL",
        help_text="one number; empty runs count(up)",
    )
