"""Several people on one console at once: the incident row lock makes each action happen once."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections

from core.errors import TransitionRefused
from incidents.models import Change, Incident, TimelineEntry
from incidents.services import change_start, hypothesis_state, incident_flag_revert, narration_post
from ledger.models import LedgerEntry

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _all_at_once(work: Callable[[int], Any], n: int) -> tuple[list, list[str], list[str]]:
    """Run work(0..n-1) on n threads released together: (results, refusals, crashes)."""
    start = threading.Barrier(n)
    done, refused, crashed = [], [], []

    def run(i: int) -> None:
        try:
            start.wait()
            done.append(work(i))
        except TransitionRefused as exc:
            refused.append(str(exc))
        except Exception as exc:
            crashed.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done, refused, crashed


def _kinds(incident: Incident) -> list[str]:
    return list(incident.timeline.order_by("seq").values_list("kind", flat=True))


def _ledger(incident: Incident) -> list[str]:
    return list(
        LedgerEntry.objects.filter(incident_id=incident.pk)
        .order_by("seq")
        .values_list("action", flat=True)
    )


def test_incident_flag_revert__six_commanders_same_seen_version__reverted_once(
    incident, commander, changed_flag, role_user
):
    hypothesis_state(incident_id=incident.pk, statement="checkout-v2 breaks EU", actor=commander)
    commanders = [role_user("commander", username=f"ic{i}") for i in range(6)]

    done, refused, crashed = _all_at_once(
        lambda i: incident_flag_revert(
            incident_id=incident.pk, flag_key="checkout-v2", seen_version=2, actor=commanders[i]
        ),
        6,
    )

    assert crashed == []
    [change] = done
    version, winner = change.flag_version, change.started_by.username
    assert version.number == 3 and version.restored_from.number == 1
    assert version.author == change.started_by
    assert changed_flag.versions.count() == 3
    assert list(Change.objects.all()) == [change]
    # The others are told who reverted, not only that a change is now in progress.
    assert len(refused) == 5
    assert all(
        r.startswith(f"checkout-v2 is already at v3 (changed by {winner}: ") for r in refused
    )
    assert _kinds(incident) == ["status", "role", "hypothesis", "change"]
    assert incident.timeline.get(seq=4).author_label == winner
    assert _ledger(incident)[-2:] == ["flag.reverted", "incident.change_started"]
    assert _ledger(incident).count("flag.reverted") == 1


def test_change_start__six_at_once__one_change_in_progress(
    incident, commander, changed_flag, role_user
):
    hypothesis_state(incident_id=incident.pk, statement="checkout-v2 breaks EU", actor=commander)
    commanders = [role_user("commander", username=f"ic{i}") for i in range(6)]

    done, refused, crashed = _all_at_once(
        lambda i: change_start(
            incident_id=incident.pk,
            description=f"Turn checkout-v2 off ({i})",
            expected_effect="5xx below 1%",
            revert_plan="",
            actor=commanders[i],
            flag_key="checkout-v2",
            flag_changes={"enabled": False},
        ),
        6,
    )

    assert crashed == []
    [change] = done
    assert list(Change.objects.filter(status="in_progress")) == [change]
    assert Change.objects.count() == 1
    assert len(refused) == 5
    assert all(r.startswith(f"change “{change.description}” is in progress") for r in refused)
    # The losers were refused before touching the flag: one new version, the winner's.
    assert changed_flag.versions.count() == 3
    assert change.flag_version.number == 3 and change.flag_version.author == change.started_by
    assert _kinds(incident) == ["status", "role", "hypothesis", "change"]
    assert _ledger(incident).count("incident.change_started") == 1


def test_narration_post__twenty_at_once__numbered_without_gaps(incident, role_user):
    responders = [role_user("responder", username=f"r{i}") for i in range(4)]

    done, refused, crashed = _all_at_once(
        lambda i: narration_post(
            incident_id=incident.pk, text=f"update {i}", actor=responders[i % 4]
        ),
        20,
    )

    assert crashed == [] and refused == []
    assert len(done) == 20
    entries = list(TimelineEntry.objects.filter(incident=incident).order_by("seq"))
    assert [e.seq for e in entries] == list(range(1, 23))
    assert sorted(e.text for e in entries[2:]) == sorted(f"update {i}" for i in range(20))
    assert {e.kind for e in entries[2:]} == {"narration"}
    stored = Incident.objects.get(pk=incident.pk)
    assert stored.last_seq == 22
    assert stored.last_narration_at == entries[-1].created_at
    assert _ledger(incident) == ["incident.declared", "incident.role_assigned"]
