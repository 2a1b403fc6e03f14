"""A right-to-left override (U+202E) in text someone wrote stays inside that text: every text
node carrying one is isolated (an isolating inline element), or nothing follows it in its block
for it to reorder (issue 13 item 9)."""

import json

import pytest

from tests.browser.conftest import login
from tests.browser.test_verification import _manage_shell

pytestmark = pytest.mark.browser
RLO = "\u202e"
INCIDENT = """
import json
from django.contrib.auth import get_user_model
from incidents.services import hypothesis_state, incident_declare, narration_post
commander = get_user_model().objects.get(username="commander")
incident = incident_declare(title=%(title)s, severity=3, actor=commander)
narration_post(incident_id=incident.pk, text=%(text)s, actor=commander)
hypothesis_state(incident_id=incident.pk, statement=%(text)s, actor=commander)
print(json.dumps({"id": incident.pk}))
"""
# For every text node with an override: is it isolated, or the last text of its block?
UNISOLATED = """
() => {
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.data.includes("\\u202e")) continue;
    let el = node.parentElement, isolated = false;
    while (el && getComputedStyle(el).display.startsWith("inline")) {
      if (["isolate", "isolate-override", "plaintext"].includes(getComputedStyle(el).unicodeBidi)) {
        isolated = true; break;
      }
      el = el.parentElement;
    }
    if (isolated || !el) continue;
    const rest = document.createRange();
    rest.setStartAfter(node); rest.setEndAfter(el.lastChild || el);
    if (rest.toString().trim()) bad.push(el.outerHTML.slice(0, 200));
  }
  return bad;
}
"""


def test_right_to_left_override__isolated_on_the_console_list_and_ledger(new_page, stepwise_server):
    made = _manage_shell(
        stepwise_server,
        INCIDENT
        % {
            "title": json.dumps(f"Checkout {RLO}gnilaef{RLO} errors"),
            "text": json.dumps(f"eu-west {RLO}5xx ta 4%"),
        },
    )
    page = new_page()
    login(page, "viewer")
    checked = 0
    for path in (f"/incidents/{made['id']}/", "/incidents/", "/ledger/"):
        page.goto(path)
        assert page.evaluate("() => document.body.innerText.includes('\\u202e')"), path
        assert page.evaluate(UNISOLATED) == [], path
        checked += 1
    assert checked == 3
