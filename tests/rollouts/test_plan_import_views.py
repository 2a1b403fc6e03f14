import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile

from ledger.models import LedgerEntry
from rollouts.models import Plan
from rollouts.services.plan_apply import plan_apply
from tests.rollouts.plan_factories import example_text, plan_yaml, step_doc

# The example plan gates two steps on the login SLO, which must exist to apply it.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("example_slos")]

IMPORT = "/plans/import/"


def _preview(client, text: str, **extra):
    return client.post(IMPORT, {"action": "preview", "text": text}, **extra)


def test_plan_import__viewer__previews_but_has_no_apply_button_and_cannot_apply(client, role_user):
    client.force_login(role_user("viewer"))
    assert client.get(IMPORT).status_code == 200

    preview = _preview(client, example_text())
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "New plan identity-migration" in html and 'data-testid="apply"' not in html

    response = client.post(IMPORT, {"action": "apply", "previewed": example_text(), "base": "new"})
    assert response.status_code == 403
    assert not Plan.objects.exists() and not LedgerEntry.objects.exists()


def test_plan_import__invalid_text__400_every_problem_with_line_nothing_written(client, role_user):
    client.force_login(role_user("tpm"))
    text = plan_yaml(
        step_doc("a", depends_on=["b"]), step_doc("b", depends_on=["a"], kind="probe2")
    )

    response = _preview(client, text)

    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was applied. 2 problems:" in html
    assert "spec.steps[0].depends_on[0]: cycle: a -&gt; b -&gt; a (line 20)" in html
    assert "spec.steps[1].kind: must be one of" in html and "(line 35)" in html
    assert text.splitlines()[0] in html  # the text is kept for fixing
    assert not Plan.objects.exists()


def test_plan_import__preview_then_apply__diff_shown_then_written_and_redirected(client, role_user):
    client.force_login(role_user("tpm"))
    preview = _preview(client, example_text())
    assert preview.status_code == 200 and not Plan.objects.exists()
    form = preview.context["form"]
    assert form.initial["base"] == "new"

    response = client.post(
        IMPORT,
        {"action": "apply", "previewed": form.initial["previewed"], "base": form.initial["base"]},
    )

    assert response.status_code == 302 and response["Location"] == "/plans/identity-migration/"
    assert Plan.objects.get(key="identity-migration").steps.count() == 10
    assert LedgerEntry.objects.filter(action="plan.applied").count() == 1


def test_plan_import__changed_plan__field_level_diff_rendered(client, role_user):
    plan_apply(text=plan_yaml(step_doc("a"), step_doc("b")), actor=None)
    client.force_login(role_user("tpm"))

    response = _preview(client, plan_yaml(step_doc("a", title="Renamed"), step_doc("c")))

    html = response.content.decode()
    assert "Changes to plan checkout" in html
    assert (
        'title: <span class="before">&#x27;Step a&#x27;</span> → <span class="after">&#x27;Renamed&#x27;</span>'
        in html
    )
    assert 'step <strong class="before">b</strong> is removed' in html
    assert "step <strong>c</strong>: Step c" in html


def test_plan_import__same_file_again__no_changes_and_no_apply_button(client, role_user):
    plan_apply(text=example_text(), actor=None)
    client.force_login(role_user("tpm"))
    html = _preview(client, example_text()).content.decode()
    assert 'data-testid="no-changes"' in html and 'data-testid="apply"' not in html
    assert 'href="/plans/identity-migration/export.yaml"' in html


def test_plan_import__plan_changed_after_preview__409_and_not_applied(client, role_user):
    plan_apply(text=plan_yaml(step_doc("a")), actor=None)
    client.force_login(role_user("tpm"))
    wanted = plan_yaml(step_doc("a"), step_doc("b"))
    base = _preview(client, wanted).context["form"].initial["base"]
    plan_apply(text=plan_yaml(step_doc("a", title="meanwhile")), actor=None)

    response = client.post(IMPORT, {"action": "apply", "previewed": wanted, "base": base})

    assert response.status_code == 409 and b"changed since the preview" in response.content
    assert not Plan.objects.get().steps.filter(key="b").exists()


def test_plan_import__upload__previewed_like_pasted_text(client, role_user):
    client.force_login(role_user("tpm"))
    upload = SimpleUploadedFile("plan.yaml", example_text().encode(), "application/yaml")
    response = client.post(IMPORT, {"action": "preview", "upload": upload})
    assert response.status_code == 200 and b"New plan identity-migration" in response.content


@pytest.mark.parametrize(
    "data",
    [
        {"action": "preview", "text": ""},
        {"action": "preview", "upload": SimpleUploadedFile("x.yaml", b"\xff\xfe\x00\x81")},
        {"action": "preview", "text": "\x00\x01 not yaml ::: [["},
        {"action": "apply", "previewed": "", "base": "new"},
        {"action": "apply", "previewed": "kind: Plan", "base": "x" * 200},
    ],
)
def test_plan_import__bad_input__400_with_reason_never_500(client, role_user, data):
    client.force_login(role_user("tpm"))
    response = client.post(IMPORT, data)
    assert response.status_code == 400
    assert b'data-testid="import-errors"' in response.content


def test_plan_import__htmx_preview__only_the_result_partial(client, role_user):
    client.force_login(role_user("tpm"))
    response = _preview(
        client, example_text(), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="import-result"
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="import-result"') and "<html" not in html
    assert 'name="previewed"' in html and 'name="base"' in html


def test_plan_import__htmx_apply__hx_redirect_to_the_plan(client, role_user):
    client.force_login(role_user("tpm"))
    response = client.post(
        IMPORT,
        {"action": "apply", "previewed": example_text(), "base": "new"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="import-result",
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/plans/identity-migration/"


def test_plan_export__any_viewer__yaml_download_that_reapplies_as_no_op(client, role_user):
    plan_apply(text=example_text(), actor=None)
    client.force_login(role_user("viewer"))

    response = client.get("/plans/identity-migration/export.yaml")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="identity-migration.yaml"'
    text = response.content.decode()
    assert yaml.safe_load(text)["spec"]["steps"][5]["flag"] == {"key": "new-login", "percentage": 5}
    assert not plan_apply(text=text, actor=None, dry_run=True).changed


def test_plan_export__unknown_plan__404(client, role_user):
    client.force_login(role_user("viewer"))
    assert client.get("/plans/nope/export.yaml").status_code == 404


def test_plan_import__anonymous__redirected_to_login(client):
    response = client.get(IMPORT)
    assert response.status_code == 302 and "/login/" in response["Location"]
