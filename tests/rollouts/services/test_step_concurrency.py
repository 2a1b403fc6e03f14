import threading

import pytest
from django.db import connections

from core.errors import TransitionRefused
from ledger.models import LedgerEntry
from rollouts.services.flags import flag_revert
from rollouts.services.steps import step_transition

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _race(n: int, fn) -> tuple[list, list[str]]:
    barrier, won, refused, crashed = threading.Barrier(n), [], [], []

    def run(i: int) -> None:
        try:
            barrier.wait()
            won.append(fn(i))
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
    assert crashed == []
    return won, refused


def test_step_start__six_people_click_at_once__exactly_one_start(make_plan):
    plan = make_plan([{"key": "gw", "flag": "gw-policy", "percentage": 5}])
    step = plan.steps.get()
    won, refused = _race(6, lambda i: step_transition(step_id=step.pk, action="start", actor=None))
    assert len(won) == 1 and len(refused) == 5
    assert all("step is running" in r for r in refused)
    assert LedgerEntry.objects.filter(action="step.running").count() == 1
    assert step.flag.versions.count() == 2


def test_flag_revert__four_browsers_click_at_once__exactly_one_revert_others_told_who(
    make_plan, role_user
):
    plan = make_plan([{"key": "ramp", "flag": "checkout", "percentage": 25}])
    step_transition(step_id=plan.steps.get().pk, action="start", actor=None)
    commander = role_user("commander")
    won, refused = _race(
        4,
        lambda i: flag_revert(
            flag_key="checkout", seen_version=2, actor=commander, reason="", source="board"
        ),
    )
    assert len(won) == 1 and len(refused) == 3
    assert all(f"already at v3 (changed by {commander.username}" in r for r in refused)
