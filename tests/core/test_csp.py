"""Every page carries the strict Content-Security-Policy and nothing on it needs an exception:
no inline script (data blocks aside), no inline event handler, no hx-on, no eval'd trigger."""

from html.parser import HTMLParser

import pytest
from django.core.management import call_command

from incidents.models import Incident
from stepwise.csp import POLICY

pytestmark = pytest.mark.django_db(transaction=True)


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in named and named.get("type") != "application/json"
        for name, value in attrs:
            if name.startswith("on") or name.startswith("hx-on") or name.startswith("data-hx-on"):
                self.problems.append(f"<{tag} {name}=…>")
            if name == "hx-trigger" and value and "[" in value:
                self.problems.append(f"<{tag} hx-trigger={value!r}> (a filter is eval'd)")
            if name in ("href", "src", "action") and (value or "").lower().startswith(
                "javascript:"
            ):
                self.problems.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append(f"inline script: {data.strip()[:80]!r}")


@pytest.fixture
def demo(client):
    call_command("seed_demo", verbosity=0)
    client.login(username="admin", password="stepwise-demo")
    return client


def test_every_page__strict_policy_and_nothing_inline(demo):
    incident = Incident.objects.order_by("pk").first()
    pages = [
        "/",
        "/plans/identity-migration/",
        "/plans/identity-migration/steps/login-5/",
        "/plans/identity-migration/decisions/",
        "/plans/import/",
        "/flags/",
        "/flags/new-login/",
        "/incidents/",
        "/slos/",
        "/slos/login-availability/",
        "/slos/import",
        "/metric-sources/",
        "/risk/",
        "/admin/",
        "/admin/ledger/ledgerentry/",
        "/admin/ledger/ledgerentry/1/change/",
        "/integrations/",
        "/decisions/",
        "/ledger/",
        "/password/",
    ]
    if incident:
        pages += [f"/incidents/{incident.pk}/", f"/incidents/{incident.pk}/postmortem"]
    checked = 0
    for path in pages:
        response = demo.get(path, follow=True)
        assert response.status_code == 200, path
        assert response["Content-Security-Policy"] == POLICY, path
        assert "'unsafe-inline'" not in POLICY.split("script-src")[1].split(";")[0]
        parser = _Scripts()
        parser.feed(response.content.decode())
        assert parser.problems == [], (path, parser.problems[:5])
        checked += 1
    assert checked == len(pages)
