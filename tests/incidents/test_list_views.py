"""The incident list: filters, postmortem links, and the MTTD / MTTM / MTTR summary and chart."""

from datetime import UTC, datetime, timedelta

import pytest

from incidents.charts import PER_INCIDENT_LIMIT, durations_figure
from incidents.models import Incident
from incidents.postmortem import incident_durations
from incidents.services import incident_declare, incident_status_change

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _incident(actor, title: str, severity: int, *statuses: str, **times: int) -> Incident:
    """Declared through the service and moved through `statuses`; then its milestones are pinned
    to T0 + the given minutes (detected=0 unless told), as test setup."""
    incident = incident_declare(title=title, severity=severity, actor=actor)
    for status in statuses:
        incident_status_change(incident_id=incident.pk, status=status, actor=actor)
    pinned = {f"{k}_at": T0 + timedelta(minutes=m) for k, m in times.items()}
    pinned.setdefault("detected_at", T0)
    Incident.objects.filter(pk=incident.pk).update(**pinned)
    return Incident.objects.get(pk=incident.pk)


@pytest.fixture
def three(commander) -> dict[str, Incident]:
    return {
        "open1": _incident(commander, "Login down", 1, declared=1),
        "resolved2": _incident(
            commander, "Slow search", 2, "resolved", declared=2, mitigated=10, resolved=30
        ),
        "mitigated2": _incident(commander, "Cart errors", 2, "mitigated", declared=4, mitigated=20),
    }


def _titles(response) -> list[str]:
    return sorted(i.title for i in response.context["incidents"])


@pytest.mark.parametrize(
    ("query", "titles"),
    [
        ("", ["Cart errors", "Login down"]),
        ("?status=open", ["Cart errors", "Login down"]),
        ("?status=resolved", ["Slow search"]),
        ("?status=mitigated", ["Cart errors"]),
        ("?status=all", ["Cart errors", "Login down", "Slow search"]),
        ("?status=open&severity=2", ["Cart errors"]),
        ("?status=all&severity=2", ["Cart errors", "Slow search"]),
        ("?status=all&severity=1", ["Login down"]),
        ("?status=resolved&severity=1", []),
    ],
)
def test_incident_list__filters__select_the_right_rows(client, viewer, three, query, titles):
    client.force_login(viewer)
    response = client.get("/incidents/" + query)

    assert _titles(response) == titles
    assert response.content.decode().count('data-testid="incident-row"') == len(titles)


def test_incident_list__rows__link_to_their_postmortem_and_show_the_durations(
    client, viewer, three
):
    client.force_login(viewer)
    page = client.get("/incidents/?status=all&severity=2").content.decode()

    assert f'href="/incidents/{three["resolved2"].pk}/postmortem"' in page
    assert f'href="/incidents/{three["mitigated2"].pk}/postmortem"' in page
    assert 'data-testid="mttx"' in page
    assert "plotly-6.9.0.min.js" in page


def test_incident_durations__two_resolved_incidents__median_and_p90_in_minutes(commander):
    first = _incident(commander, "A", 2, "resolved", declared=2, mitigated=10, resolved=30)
    second = _incident(commander, "B", 2, "resolved", declared=4, mitigated=20, resolved=90)

    durations = incident_durations([second, first])

    assert [r["id"] for r in durations["rows"]] == [first.pk, second.pk]  # by declaration
    assert [(r["mttd"], r["mttm"], r["mttr"]) for r in durations["rows"]] == [
        (2, 10, 30),
        (4, 20, 90),
    ]
    # p90 interpolates between the two: low + 0.9 * (high - low)
    assert [(s["key"], s["count"], s["median"], s["p90"]) for s in durations["summary"]] == [
        ("mttd", 2, 3.0, pytest.approx(3.8)),
        ("mttm", 2, 15.0, pytest.approx(19.0)),
        ("mttr", 2, 60.0, pytest.approx(84.0)),
    ]


def test_incident_durations__milestone_not_reached__left_out_not_zero(commander):
    durations = incident_durations([_incident(commander, "A", 3, declared=6)])

    assert durations["rows"][0]["mttm"] is None
    assert [(s["key"], s["count"], s["median"]) for s in durations["summary"]] == [
        ("mttd", 1, 6.0),
        ("mttm", 0, None),
        ("mttr", 0, None),
    ]


def test_incident_list_durations__two_incidents__summary_numbers_and_chart(
    client, viewer, commander
):
    _incident(commander, "A", 2, "resolved", declared=2, mitigated=10, resolved=30)
    _incident(commander, "B", 2, "resolved", declared=4, mitigated=20, resolved=90)
    client.force_login(viewer)

    page = client.get("/incidents/?status=resolved").content.decode()

    assert 'data-testid="mttx-mttd" data-median="3.0" data-p90="3.8" data-count="2"' in page
    assert 'data-testid="mttx-mttm" data-median="15.0" data-p90="19.0" data-count="2"' in page
    assert 'data-testid="mttx-mttr" data-median="60.0" data-p90="84.0" data-count="2"' in page
    assert 'id="incident-durations"' in page and "data-figure=" in page
    assert 'data-testid="mttx-empty"' not in page


def test_incident_list_durations__filters_match_nothing__empty_state_without_chart(
    client, viewer, three
):
    client.force_login(viewer)

    page = client.get("/incidents/?status=resolved&severity=1").content.decode()

    assert 'data-testid="mttx-empty"' in page
    assert 'id="incident-durations"' not in page and "data-figure=" not in page


def test_incident_list_durations__open_incidents__only_what_they_reached(client, viewer, three):
    client.force_login(viewer)

    page = client.get("/incidents/").content.decode()  # open by default, like the list

    assert 'data-testid="mttx-mttd" data-median="2.5" data-p90="3.7" data-count="2"' in page
    assert 'data-testid="mttx-mttm" data-median="20.0" data-p90="20.0" data-count="1"' in page
    assert 'data-testid="mttx-mttr" data-median="" data-p90="" data-count="0"' in page


def _row(i: int, declared: datetime, mttm: float | None) -> dict:
    return {
        "id": i,
        "title": f"incident {i}",
        "severity": "SEV2",
        "declared_at": declared,
        "mttd": 2.0,
        "mttm": mttm,
        "mttr": None,
    }


def test_durations_figure__few_incidents__one_point_each_and_gaps_for_unreached():
    rows = [_row(1, T0, 10.0), _row(2, T0 + timedelta(days=1), None)]

    fig = durations_figure(rows)

    by_name = {t.name: t for t in fig.data}
    assert sorted(by_name) == ["MTTD (to declare)", "MTTM (to mitigate)"]  # nobody resolved
    assert list(by_name["MTTD (to declare)"].y) == [2.0, 2.0]
    assert list(by_name["MTTM (to mitigate)"].y) == [10.0]
    assert all(t.mode == "markers+lines" for t in fig.data)


def test_durations_figure__more_than_the_limit__weekly_medians():
    # T0 is a Monday: 20 incidents that week, the rest the week after.
    rows = [
        _row(i, T0 + timedelta(days=7 * (i >= 20), hours=i), 10.0 if i < 20 else 30.0)
        for i in range(PER_INCIDENT_LIMIT + 1)
    ]

    fig = durations_figure(rows)

    mttm = next(t for t in fig.data if t.name == "MTTM (to mitigate)")
    assert [str(x) for x in mttm.x] == ["2026-03-02", "2026-03-09"]
    assert list(mttm.y) == [10.0, 30.0]
    assert list(mttm.customdata) == [20, PER_INCIDENT_LIMIT + 1 - 20]
