"""The leadership decisions page: every call across programs, filtered, counted per week."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from rollouts.models import Decision
from rollouts.services.decisions import decision_record

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _decide(plan, tpm, decided: str, why: str = "the numbers say so") -> Decision:
    return decision_record(
        actor=tpm,
        plan_id=plan.pk,
        believed="the new login is ready",
        observed="half the sign-ins on it fail",
        decided=decided,
        why=why,
        would_choose_again=decided != "kill",
    )


def test_decisions_page__two_teams__filters_totals_and_chart(client, role_user, make_plan):
    tpm = role_user("tpm")
    identity = make_plan([{"key": "a"}], key="identity")
    payments = make_plan([{"key": "b"}], key="payments")
    payments.owner = "payments"
    payments.save(update_fields=["owner"])
    _decide(identity, tpm, "adapt")
    _decide(identity, tpm, "persist")
    _decide(payments, tpm, "adapt", why="payments moved the window")
    # An old call, written directly: decisions are append-only (PostgreSQL refuses an UPDATE),
    # and the service stamps the current time.
    Decision.objects.create(
        plan=payments,
        author=tpm,
        believed="the window holds",
        observed="it held",
        decided="persist",
        why="an old call",
        created_at=timezone.now() - timedelta(days=200),
    )
    client.force_login(role_user("viewer"))

    everything = client.get(reverse("decisions"), {"period": "all"})
    recent = client.get(reverse("decisions"))
    payments_only = client.get(reverse("decisions"), {"team": "payments", "period": "all"})
    adapts = client.get(reverse("decisions"), {"decided": "adapt"})

    assert everything.status_code == 200
    assert len(everything.context["view"].decisions) == 4
    assert everything.context["view"].totals == {"adapt": 2, "persist": 2}
    assert len(recent.context["view"].decisions) == 3  # the 200-day-old call is outside 90d
    assert {d.plan.key for d in payments_only.context["view"].decisions} == {"payments"}
    assert {d.decided for d in adapts.context["view"].decisions} == {"adapt"}
    body = everything.content.decode()
    assert 'id="chart-decisions"' in body
    assert "payments moved the window" in body
    assert Decision.DECISIVE_QUESTION in body


def test_decisions_page__bad_period__falls_back_to_90_days(client, role_user):
    client.force_login(role_user("viewer"))
    page = client.get(reverse("decisions"), {"period": "forever"})
    assert page.status_code == 200
    assert page.context["period"] == "90d"
    assert 'data-testid="empty-state"' in page.content.decode()


@pytest.mark.parametrize(
    "params", [{"team": "pay\x00ments"}, {"decided": "\x00"}, {"decided": "nope"}]
)
def test_decisions_page__filter_outside_its_choices__dropped_not_an_error(
    client, role_user, make_plan, params
):
    tpm = role_user("tpm")
    _decide(make_plan([{"key": "a"}], key="payments"), tpm, "persist")
    client.force_login(role_user("viewer"))

    page = client.get(reverse("decisions"), params)

    assert page.status_code == 200
    assert len(page.context["view"].decisions) == 1


def test_decisions_page__filters_match_nothing__says_so_with_a_way_back(
    client, role_user, make_plan
):
    _decide(make_plan([{"key": "a"}], key="payments"), role_user("tpm"), "persist")
    client.force_login(role_user("viewer"))

    body = client.get(reverse("decisions"), {"decided": "kill"}).content.decode()

    assert "No decision matches these filters" in body and "No decisions yet" not in body


def test_decisions_page__persist_adapt_persist_in_minutes__thrashing_shown_with_the_calls(
    client, role_user, make_plan
):
    tpm = role_user("tpm")
    plan, calm = make_plan([{"key": "a"}]), make_plan([{"key": "b"}], key="calm")
    calls = [_decide(plan, tpm, d) for d in ("persist", "adapt", "persist")]
    _decide(calm, tpm, "persist")
    client.force_login(role_user("viewer"))

    html = client.get(reverse("decisions")).content.decode()

    section = html[html.index('data-testid="plans-thrashing"') :].split("</section>", 1)[0]
    assert plan.name in section and calm.name not in section
    assert "flip-flopped within " in section
    assert " s: " + ", ".join(f"#{c.pk} {c.decided}" for c in calls) in section
