"""The postmortem page and its Markdown export, drafted from an incident run through the services."""

import re
from datetime import timedelta

import pytest

from incidents.models import Incident
from incidents.postmortem import TO_BE_WRITTEN, postmortem_build, postmortem_markdown
from incidents.services import (
    action_item_add,
    change_start,
    change_verify,
    command_handover,
    hypothesis_close,
    hypothesis_state,
    incident_declare,
    incident_status_change,
    narration_post,
)
from rollouts.models import Plan, Step
from rollouts.services.flags import flag_change, flag_create
from tests.core.test_markdown_exports import assert_inert, hostile_everywhere

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert('pm')</script> then reload"
SCRIPT_IN_MARKDOWN = "&lt;script&gt;alert('pm')&lt;/script&gt; then reload"


@pytest.fixture
def story(commander, commander_2, responder, changed_flag) -> Incident:
    """checkout-v2 was at 50 % (v2) before; during the incident ada turns it to 0 % (v3), it does
    not help and goes back (v4); ada hands command to bob, who mitigates and resolves. Milestones
    are then pinned: detected 5 min before the declaration, mitigated 20 min and resolved 65 min
    after detection."""
    plan = Plan.objects.create(key="checkout", name="Checkout v2", owner="payments")
    step = Step.objects.create(
        plan=plan,
        key="ramp-50",
        title="Ramp to 50%",
        owner_team="web",
        kind="flag_ramp",
        position=1,
    )
    incident = incident_declare(
        title="Checkout 500s in eu-west",
        severity=2,
        actor=commander,
        services=["checkout-api"],
        flag_keys=["checkout-v2"],
        plan_keys=["checkout"],
        step_ids=[step.pk],
    )
    narration_post(
        incident_id=incident.pk, text="5xx at 4% | only eu-west, rest normal", actor=commander
    )
    narration_post(incident_id=incident.pk, text=SCRIPT, actor=responder)
    hypothesis = hypothesis_state(
        incident_id=incident.pk,
        statement="The 50% ramp of checkout-v2 broke carts",
        actor=commander,
    )
    change = change_start(
        incident_id=incident.pk,
        description="checkout-v2 | to 0%",
        expected_effect="5xx below 0.5% within 5 minutes",
        revert_plan="",
        flag_key="checkout-v2",
        flag_changes={"rollout_percentage": 0},
        actor=commander,
    )
    change_verify(
        incident_id=incident.pk,
        change_id=change.pk,
        better=False,
        note="still 4% after 6 min",
        actor=commander,
    )
    hypothesis_close(
        incident_id=incident.pk, hypothesis_id=hypothesis.pk, confirmed=False, actor=commander
    )
    command_handover(incident_id=incident.pk, to_username="bob", actor=commander)
    incident_status_change(incident_id=incident.pk, status="mitigated", actor=commander_2)
    incident_status_change(incident_id=incident.pk, status="resolved", actor=commander_2)
    action_item_add(
        incident_id=incident.pk,
        title="Alert on checkout 5xx per region",
        owner="payments",
        actor=responder,
    )
    declared = Incident.objects.get(pk=incident.pk).declared_at
    Incident.objects.filter(pk=incident.pk).update(
        detected_at=declared - timedelta(minutes=5),
        mitigated_at=declared + timedelta(minutes=15),
        resolved_at=declared + timedelta(minutes=60),
    )
    return Incident.objects.get(pk=incident.pk)


def test_postmortem_build__resolved_incident__every_section_from_the_record(story):
    pm = postmortem_build(story)

    assert (pm["title"], pm["severity"], pm["status"]) == (
        "Checkout 500s in eu-west",
        "SEV2",
        "resolved",
    )
    assert pm["services"] == ["checkout-api"]
    assert [(c["user"], c["until"] is not None) for c in pm["commanders"]] == [
        ("ada", True),
        ("bob", False),
    ]
    assert pm["impact"] == {"text": TO_BE_WRITTEN, "written": False}
    assert pm["root_cause"] == {"text": TO_BE_WRITTEN, "written": False}
    assert [(d["key"], d["text"]) for d in pm["durations"]] == [
        ("mttd", "5 min 00 s"),
        ("mttm", "20 min 00 s"),
        ("mttr", "1 h 05 min"),
    ]
    narration = [e for e in pm["timeline"] if e["kind"] == "narration"]
    assert [e["text"] for e in narration] == ["5xx at 4% | only eu-west, rest normal", SCRIPT]
    assert not any(e["system"] for e in narration)
    roles = [e for e in pm["timeline"] if e["kind"] == "role"]
    assert [e["text"] for e in roles] == [
        "ada is incident commander",
        "bob is now incident commander (was ada)",
    ]
    assert all(e["system"] for e in roles)
    assert [e["seq"] for e in pm["timeline"]] == list(range(1, story.last_seq + 1))
    assert [(h["statement"], h["status"]) for h in pm["hypotheses"]] == [
        ("The 50% ramp of checkout-v2 broke carts", "rejected")
    ]
    [change] = pm["changes"]
    assert change["description"] == "checkout-v2 | to 0%"
    assert change["expected_effect"] == "5xx below 0.5% within 5 minutes"
    assert change["revert_plan"] == "restore checkout-v2 v2 (on at 50%)"
    assert (change["verdict"], change["verified_by"], change["note"]) == (
        "not better: reverted",
        "ada",
        "still 4% after 6 min",
    )
    assert change["flag"] == "checkout-v2 v3"
    # v1 and v2 were made before the incident: only the flip and its revert are listed.
    assert [(v["flag"], v["number"], v["state"], v["change"]) for v in pm["flag_versions"]] == [
        ("checkout-v2", 3, "on 0%", 1),
        ("checkout-v2", 4, "on 50%", None),
    ]
    assert all(v["by_incident"] for v in pm["flag_versions"])
    assert [p["key"] for p in pm["plans"]] == ["checkout"]
    assert [(s["plan"], s["key"]) for s in pm["steps"]] == [("checkout", "ramp-50")]
    actions = [e["action"] for e in pm["ledger"]]
    assert actions[0] == "incident.declared"
    for action in (
        "incident.change_started",
        "incident.change_reverted",
        "incident.command_handed_over",
        "incident.resolved",
        "incident.action_item",
    ):
        assert action in actions
    assert [(a["title"], a["owner"], a["done"]) for a in pm["action_items"]] == [
        ("Alert on checkout 5xx per region", "payments", False)
    ]


def test_postmortem_build__open_incident__unreached_milestones_have_no_duration(incident):
    pm = postmortem_build(incident)

    assert [d["text"] for d in pm["durations"]][1:] == ["—", "—"]
    assert pm["changes"] == [] and pm["flag_versions"] == [] and pm["action_items"] == []


def test_postmortem_build__written_impact_and_root_cause__shown_as_written(story):
    Incident.objects.filter(pk=story.pk).update(
        impact="4% of eu-west checkouts failed", root_cause=""
    )
    pm = postmortem_build(Incident.objects.get(pk=story.pk))

    assert pm["impact"] == {"text": "4% of eu-west checkouts failed", "written": True}
    assert pm["root_cause"]["written"] is False


def test_postmortem_build__another_incident_flips_a_flag__not_in_this_postmortem(
    story, commander, tpm
):
    flag_create(key="other-flag", description="", kind="release", owner="web", actor=tpm)
    other = incident_declare(title="Search slow", severity=3, actor=commander)
    hypothesis_state(incident_id=other.pk, statement="ranking is slow", actor=commander)
    change_start(
        incident_id=other.pk,
        description="turn other-flag on",
        expected_effect="p99 down",
        revert_plan="",
        flag_key="other-flag",
        flag_changes={"enabled": True},
        actor=commander,
    )
    # A board change to a flag the incident is linked to, while it is open, is listed.
    flag_change(
        flag_key="checkout-v2",
        changes={"rollout_percentage": 25},
        actor=tpm,
        reason="ramp down by hand",
        source="board",
    )

    versions = postmortem_build(story)["flag_versions"]

    assert [(v["flag"], v["number"]) for v in versions] == [
        ("checkout-v2", 3),
        ("checkout-v2", 4),
        ("checkout-v2", 5),
    ]
    assert versions[-1]["by_incident"] is False


def _table_rows(markdown: str, header_start: str) -> list[list[str]]:
    """The cells of the table whose header starts with `header_start`, split on unescaped pipes."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip() for c in cells])
    return rows


def test_postmortem_markdown__resolved_incident__headings_change_table_and_timed_timeline(story):
    text = postmortem_markdown(postmortem_build(story))

    assert text.startswith(f"# INC-{story.pk} postmortem: Checkout 500s in eu-west\n")
    for heading in (
        "## Summary",
        "## Impact",
        "## Root cause",
        "## Durations",
        "## Command and roles",
        "## Timeline",
        "## Hypotheses",
        "## Changes",
        "## Flag versions during the incident",
        "## Linked plans and steps",
        "## Ledger entries",
        "## Action items",
    ):
        assert f"\n{heading}\n" in text
    assert "## Impact\n\n_to be written_\n" in text
    assert "- **Commander:** ada → bob" in text
    assert "| Time to resolve (MTTR) | detected → resolved | 1 h 05 min |" in text
    header, rule, row = _table_rows(text, "| # | Change")
    assert len(header) == len(row) == 10 and rule[0] == "---"
    # The pipe in the description is escaped, so the row keeps its ten cells.
    assert row[:6] == [
        "1",
        "checkout-v2 \\| to 0%",
        "The 50% ramp of checkout-v2 broke carts",
        "5xx below 0.5% within 5 minutes",
        "restore checkout-v2 v2 (on at 50%)",
        "checkout-v2 v3",
    ]
    assert row[7:] == ["not better: reverted", row[8], "still 4% after 6 min"]
    assert row[8].startswith("ada at ")
    timeline = text.split("## Timeline\n\n")[1].split("\n\n")[0].splitlines()
    assert len(timeline) == story.last_seq
    assert all(re.match(r"- \*\*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\*\* #\d+ ", b) for b in timeline)
    assert any(b.endswith("(role) _(system)_: ada is incident commander") for b in timeline)
    # Outside a table a pipe is plain text; HTML is shown, never run (core/markdown.py).
    assert any(b.endswith("(narration): 5xx at 4% | only eu-west, rest normal") for b in timeline)
    assert any(b.endswith(f"(narration): {SCRIPT_IN_MARKDOWN}") for b in timeline)
    assert "| checkout-v2 | v3 | on 0% | incident console (change 1) | ada |" in text
    assert "- [ ] Alert on checkout 5xx per region (owner: payments)" in text


def test_postmortem_page__commander__renders_every_section_and_escapes_narration(
    client, commander, story
):
    client.force_login(commander)
    response = client.get(f"/incidents/{story.pk}/postmortem")

    assert response.status_code == 200
    page = response.content.decode()
    for testid in (
        "pm-summary",
        "pm-durations",
        "pm-roles",
        "pm-timeline",
        "pm-hypotheses",
        "pm-changes",
        "pm-flag-versions",
        "pm-linked",
        "pm-action-items",
        "pm-ledger",
    ):
        assert f'data-testid="{testid}"' in page
    assert "1 h 05 min" in page and "20 min 00 s" in page
    assert "restore checkout-v2 v2 (on at 50%)" in page and "not better: reverted" in page
    assert "Alert on checkout 5xx per region" in page
    assert page.count('data-testid="pm-timeline-entry"') == story.last_seq
    assert "&lt;script&gt;alert(" in page
    assert "<script>alert" not in page
    assert f'href="/incidents/{story.pk}/postmortem.md"' in page
    assert f'action="/incidents/{story.pk}/action-items"' in page


def test_postmortem_markdown_view__download__attachment_with_markdown_type(
    client, commander, story
):
    client.force_login(commander)
    response = client.get(f"/incidents/{story.pk}/postmortem.md")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="INC-{story.pk}-postmortem.md"'
    body = response.content.decode()
    assert body.startswith(f"# INC-{story.pk} postmortem")
    assert SCRIPT_IN_MARKDOWN in body and SCRIPT not in body


@pytest.mark.parametrize("suffix", ["postmortem", "postmortem.md"])
def test_postmortem_views__unknown_incident__404(client, viewer, suffix):
    client.force_login(viewer)

    assert client.get(f"/incidents/999999/{suffix}").status_code == 404


def test_postmortem_page__viewer__reads_it_without_narrate_controls(client, viewer, story):
    client.force_login(viewer)
    response = client.get(f"/incidents/{story.pk}/postmortem")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Checkout 500s in eu-west" in page
    assert "may-narrate" not in page  # the action-item form is narrate-only
    assert client.get(f"/incidents/{story.pk}/postmortem.md").status_code == 200
    refused = client.post(
        f"/incidents/{story.pk}/action-items", {"title": "x", "owner": "y"}, HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 403


def test_postmortem_page__anonymous__sent_to_login(client, story):
    response = client.get(f"/incidents/{story.pk}/postmortem")

    assert response.status_code == 302 and "/login/" in response["Location"]


def test_postmortem_page__action_item_posted_from_the_form__listed_with_its_owner(
    client, responder, story
):
    client.force_login(responder)
    posted = client.post(
        f"/incidents/{story.pk}/action-items",
        {"title": "Runbook | for checkout rollback", "owner": "cy"},
        HTTP_HX_REQUEST="true",
    )
    assert posted.status_code == 200 and 'data-testid="action-ok"' in posted.content.decode()

    page = client.get(f"/incidents/{story.pk}/postmortem").content.decode()
    assert page.count('data-testid="pm-action-item"') == 2
    assert "Runbook | for checkout rollback" in page
    markdown = client.get(f"/incidents/{story.pk}/postmortem.md").content.decode()
    assert "- [ ] Runbook | for checkout rollback (owner: cy)" in markdown


def test_postmortem_page__action_item_with_due_date_marked_done__shown_and_in_markdown(
    client, responder, story
):
    from datetime import timedelta

    from django.utils import timezone

    from incidents.models import ActionItem

    due = timezone.localdate() + timedelta(days=3)
    client.force_login(responder)
    client.post(
        f"/incidents/{story.pk}/action-items",
        {"title": "Alert per region", "owner": "cy", "due_on": due.isoformat()},
        HTTP_HX_REQUEST="true",
    )
    item = ActionItem.objects.get(title="Alert per region")
    page = client.get(f"/incidents/{story.pk}/postmortem").content.decode()
    assert f"due {due.isoformat()}" in page
    assert f'data-testid="pm-action-toggle-{item.pk}">mark done' in page

    done = client.post(
        f"/incidents/{story.pk}/action-items/done",
        {"item": item.pk, "done": "yes"},
        HTTP_HX_REQUEST="true",
    )
    assert done.status_code == 200
    markdown = client.get(f"/incidents/{story.pk}/postmortem.md").content.decode()
    assert f"- [x] Alert per region (owner: cy, due {due.isoformat()})" in markdown


def test_postmortem_write__commander_after_resolve__saved_shown_and_ledgered(
    client, commander, story
):
    client.force_login(commander)
    response = client.post(
        f"/incidents/{story.pk}/postmortem/write",
        {"summary": "Logins failed", "impact": "3% of sign-ins for 40 min", "root_cause": "cache"},
    )
    assert response.status_code == 302
    story.refresh_from_db()
    assert (story.impact, story.root_cause) == ("3% of sign-ins for 40 min", "cache")
    page = client.get(f"/incidents/{story.pk}/postmortem").content.decode()
    assert "3% of sign-ins for 40 min" in page
    from ledger.models import LedgerEntry

    entry = LedgerEntry.objects.get(incident_id=story.pk, action="incident.postmortem_written")
    assert entry.payload["changed"] == ["impact", "root_cause", "summary"]


def test_postmortem_write__open_incident__refused_nothing_changed(client, commander, incident):
    client.force_login(commander)
    response = client.post(
        f"/incidents/{incident.pk}/postmortem/write",
        {"summary": "x", "impact": "y", "root_cause": "z"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 409
    assert "resolve it first" in response.content.decode()
    incident.refresh_from_db()
    assert incident.impact == ""


def test_postmortem_write__responder__403(client, responder, story):
    client.force_login(responder)
    response = client.post(
        f"/incidents/{story.pk}/postmortem/write", {"summary": "", "impact": "", "root_cause": ""}
    )
    assert response.status_code == 403


def test_postmortem_export__every_field_hostile__nothing_runs_or_links(story):
    data = hostile_everywhere(postmortem_build(story))
    data["generated_at"] = postmortem_build(story)["generated_at"]
    html = assert_inert(postmortem_markdown(data))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Every section is still there: the hostile text did not swallow the structure.
    assert len(re.findall(r"<h2>", html)) >= 12
