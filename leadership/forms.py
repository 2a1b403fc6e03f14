from django import forms

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
