import pytest

from ledger.models import LedgerEntry
from ledger.services import ledger_append

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["viewer", "responder", "commander", "tpm"])
def test_ledger_list__each_role__sees_entries_and_navigation(client, role_user, role):
    ledger_append(action="plan.created", subject_type="plan", subject_id=4, plan_id=4)
    client.force_login(role_user(role))
    html = client.get("/ledger/").content.decode()
    assert "plan.created" in html
    for section in ("Portfolio", "Incidents", "Flags", "SLOs", "Decisions", "Ledger"):
        assert f">{section}</a>" in html
    assert ('name="summary"' in html) == (role != "viewer")


def test_ledger_record__viewer__403_and_nothing_written(client, role_user):
    client.force_login(role_user("viewer"))
    response = client.post("/ledger/record", {"kind": "note", "summary": "x"})
    assert response.status_code == 403
    assert not LedgerEntry.objects.exists()


def test_ledger_record__responder_htmx__entry_appended_and_fresh_form(client, role_user):
    user = role_user("responder")
    client.force_login(user)
    response = client.post(
        "/ledger/record",
        {"kind": "out_of_band_change", "subject": "service:api", "summary": "hotfix"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    entry = LedgerEntry.objects.get()
    assert (entry.action, entry.actor_label, entry.payload) == (
        "manual.out_of_band_change",
        user.username,
        {"summary": "hotfix"},
    )


def test_ledger_record__missing_summary__400_form_error_and_nothing_written(client, role_user):
    client.force_login(role_user("tpm"))
    response = client.post("/ledger/record", {"kind": "note", "summary": ""})
    assert response.status_code == 400
    assert b"This field is required" in response.content
    response = client.post(
        "/ledger/record", {"kind": "bogus", "summary": "x"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    assert not LedgerEntry.objects.exists()


def test_ledger_list__filters_and_pages__newest_first(client, role_user):
    for i in range(60):
        ledger_append(
            action="flag.changed" if i % 2 else "step.started",
            subject_type="flag",
            subject_id=i,
            plan_id=1 + i % 3,
        )
    client.force_login(role_user("viewer"))
    page = client.get("/ledger/").context["page"]
    assert page.paginator.count == 60 and [e.seq for e in page][:2] == [60, 59]
    filtered = client.get("/ledger/?action=flag.changed&plan=2").context["page"]
    assert filtered.paginator.count == 10
    assert all(e.action == "flag.changed" and e.plan_id == 2 for e in filtered)
    assert client.get("/ledger/?page=2").context["page"].number == 2
    assert client.get("/ledger/?page=999").status_code == 200


def test_ledger_list__malformed_filter__page_still_renders_with_reason(client, role_user):
    client.force_login(role_user("viewer"))
    response = client.get("/ledger/?plan=abc")
    assert response.status_code == 200
    assert b"Filter ignored" in response.content


def test_ledger_list__htmx_filter__returns_only_the_table_partial(client, role_user):
    ledger_append(action="plan.created", subject_type="plan")
    client.force_login(role_user("viewer"))
    html = client.get(
        "/ledger/?action=plan", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="ledger-table"
    ).content.decode()
    assert html.lstrip().startswith('<section id="ledger-table"') and "<nav" not in html


def test_ledger_verify_view__tampered_row__shows_which_entry(client, role_user):
    from django.db import connection

    ledger_append(action="a.b", subject_type="t")
    ledger_append(action="a.c", subject_type="t")
    client.force_login(role_user("viewer"))
    assert b"Chain intact: 2 entries verified" in client.get("/ledger/verify").content
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE ledger_ledgerentry SET subject_id = 'x' WHERE seq = 2")
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = DEFAULT")
    assert b"Chain broken at ledger entry seq 2" in client.get("/ledger/verify").content
