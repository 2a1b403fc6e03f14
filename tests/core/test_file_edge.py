"""Plan files and OpenSLO files: a NUL or a lone surrogate written as a YAML escape is refused
with its path, at preview and at apply, and nothing is stored."""

from pathlib import Path

import pytest

from rollouts.models import Plan
from signals.models import SLO
from tests.rollouts.plan_factories import plan_yaml, step_doc

pytestmark = pytest.mark.django_db

ESCAPES = {"NUL": ("\\0", "NUL character"), "lone surrogate": ("\\ud800", "lone surrogate")}
SLO_FILE = Path(__file__).resolve().parents[2] / "examples" / "openslo" / "login-availability.yaml"


def _plan_with(escape: str) -> str:
    text = plan_yaml(step_doc("a", title="TITLE"))
    return text.replace("title: TITLE", f'title: "Step {escape} a"')


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_plan_file__unstorable_text__refused_with_its_path_at_preview_and_apply(
    client, role_user, case
):
    escape, words = ESCAPES[case]
    client.force_login(role_user("tpm"))
    text = _plan_with(escape)
    for action in (
        {"action": "preview", "text": text},
        {"action": "apply", "previewed": text, "base": "new"},
    ):
        response = client.post("/plans/import/", action)
        assert response.status_code == 400, action["action"]
        html = response.content.decode()
        assert "spec.steps[0].title" in html and words in html
    assert not Plan.objects.exists()


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_openslo_file__unstorable_text__refused_with_its_path(client, role_user, case):
    escape, words = ESCAPES[case]
    client.force_login(role_user("tpm"))
    text = SLO_FILE.read_text().replace(
        "displayName: Login availability", f'displayName: "Login {escape} availability"'
    )
    response = client.post("/slos/import", {"text": text})
    assert response.status_code == 400
    html = response.content.decode()
    assert "documents[0].metadata.displayName" in html and words in html
    assert not SLO.objects.exists()
