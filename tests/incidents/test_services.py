from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import InvalidInput, TransitionRefused
from incidents.models import (
    ActionItem,
    BreakGlassSwitch,
    Change,
    Incident,
    RoleAssignment,
    TimelineEntry,
)
from incidents.services import (
    MAX_NARRATION,
    action_item_add,
    break_glass_flip,
    change_start,
    change_verify,
    command_handover,
    hypothesis_close,
    hypothesis_state,
    incident_declare,
    incident_flag_revert,
    incident_status_change,
    incident_system_note,
    narration_post,
    role_assign,
)
from ledger.models import LedgerEntry
from live.models import StreamEvent
from rollouts.models import Flag, Plan, Step
from rollouts.services.flags import flag_change

pytestmark = pytest.mark.django_db

# The `incident` fixture's timeline: declared by ada (SEV2), who commands it.
DECLARED = [
    (1, "status", "SEV2 declared by ada: Checkout 500s in eu-west"),
    (2, "role", "ada is incident commander"),
]
# ... and its ledger: the declaration, then ada's command.
DECLARED_LEDGER = ["incident.declared", "incident.role_assigned"]


def _timeline(incident: Incident) -> list[tuple[int, str, str]]:
    return list(
        TimelineEntry.objects.filter(incident=incident)
        .order_by("seq")
        .values_list("seq", "kind", "text")
    )


def _ledger(incident: Incident) -> list[str]:
    """The actions of the ledger entries that name this incident, in chain order."""
    return list(
        LedgerEntry.objects.filter(incident_id=incident.pk)
        .order_by("seq")
        .values_list("action", flat=True)
    )


def _payload(incident: Incident, action: str) -> dict:
    [payload] = LedgerEntry.objects.filter(incident_id=incident.pk, action=action).values_list(
        "payload", flat=True
    )
    return payload


def _fresh(incident: Incident) -> Incident:
    return Incident.objects.get(pk=incident.pk)


def _nothing_stored() -> None:
    assert Incident.objects.count() == 0
    assert TimelineEntry.objects.count() == 0
    assert RoleAssignment.objects.count() == 0
    assert not LedgerEntry.objects.filter(action__startswith="incident.").exists()


def _move(incident: Incident, actor, *statuses: str) -> None:
    for status in statuses:
        incident_status_change(incident_id=incident.pk, status=status, actor=actor)


def _hypothesis(incident: Incident, actor, statement: str = "eu-west DB pool exhausted"):
    return hypothesis_state(incident_id=incident.pk, statement=statement, actor=actor)


def _drain(incident: Incident, actor, description: str = "Drain eu-west") -> Change:
    return change_start(
        incident_id=incident.pk,
        description=description,
        expected_effect="5xx below 1% within 5 min",
        revert_plan="undrain eu-west",
        actor=actor,
    )


def _flag_off(incident: Incident, actor) -> Change:
    """A flag change: checkout-v2 off (from v2 to v3); its revert is v2."""
    return change_start(
        incident_id=incident.pk,
        description="Turn checkout-v2 off",
        expected_effect="5xx below 1% within 5 min",
        revert_plan="",
        actor=actor,
        flag_key="checkout-v2",
        flag_changes={"enabled": False},
    )


# --- declare -------------------------------------------------------------------------------------


def test_incident_declare__commander_sev1__commands_it_with_10_minute_narration(commander):
    incident = incident_declare(
        title="  Checkout 500s in eu-west ",
        severity=1,
        actor=commander,
        services=["web", " checkout ", "", "web"],
    )

    stored = _fresh(incident)
    assert (stored.title, stored.severity, stored.status) == (
        "Checkout 500s in eu-west",
        1,
        "declared",
    )
    assert stored.narration_minutes == 10
    assert stored.services == ["checkout", "web"]
    assert stored.declared_by == commander and stored.source == "console"
    assert stored.last_seq == 2 and stored.last_narration_at is None
    assert stored.mitigated_at is None and stored.resolved_at is None
    assert list(stored.roles.values_list("user__username", "role", "renounced_at")) == [
        ("ada", "commander", None)
    ]
    assert _timeline(stored) == [
        (1, "status", "SEV1 declared by ada: Checkout 500s in eu-west"),
        (2, "role", "ada is incident commander"),
    ]
    assert _ledger(stored) == DECLARED_LEDGER
    assert _payload(stored, "incident.declared") == {
        "incident": stored.pk,
        "title": "Checkout 500s in eu-west",
        "severity": "SEV1",
        "source": "console",
        "services": ["checkout", "web"],
    }


def test_incident_declare__commander__command_has_its_own_ledger_entry_like_a_handover(
    commander, commander_2
):
    incident = incident_declare(title="Checkout 500s", severity=2, actor=commander)
    command_handover(incident_id=incident.pk, to_username="bob", actor=commander)

    # The ledger alone says who commanded from when: ada from the declaration, then bob.
    entries = LedgerEntry.objects.filter(incident_id=incident.pk).order_by("seq")
    assert [(e.action, e.actor_id, e.payload) for e in entries] == [
        ("incident.declared", commander.pk, _payload(incident, "incident.declared")),
        (
            "incident.role_assigned",
            commander.pk,
            {"incident": incident.pk, "user": "ada", "role": "commander"},
        ),
        (
            "incident.command_handed_over",
            commander.pk,
            {"incident": incident.pk, "from": "ada", "to": "bob"},
        ),
    ]


def test_incident_declare__responder__declared_without_a_commander(responder):
    incident = incident_declare(title="Search slow", severity=3, actor=responder)

    stored = _fresh(incident)
    assert stored.narration_minutes == 60 and stored.declared_by == responder
    assert stored.roles.count() == 0
    assert _timeline(stored) == [(1, "status", "SEV3 declared by cy: Search slow")]
    assert _ledger(stored) == ["incident.declared"]


def test_incident_declare__flag_key_and_earlier_detection__linked_and_kept(commander, changed_flag):
    detected = timezone.now() - timedelta(minutes=7)

    incident = incident_declare(
        title="Checkout 500s",
        severity=4,
        actor=commander,
        detected_at=detected,
        flag_keys=["checkout-v2"],
    )

    stored = _fresh(incident)
    assert stored.detected_at == detected and stored.declared_at > detected
    assert list(stored.flags.all()) == [changed_flag]
    assert stored.narration_minutes is None
    assert [kind for _, kind, _ in _timeline(stored)] == ["status", "role"]
    assert _ledger(stored) == DECLARED_LEDGER


def test_incident_declare__alertmanager_without_actor__labelled_and_uncommanded():
    incident = incident_declare(
        title="HighErrorRate checkout",
        severity=2,
        actor=None,
        source=Incident.Source.ALERTMANAGER,
        actor_label="alertmanager",
    )

    stored = _fresh(incident)
    assert stored.source == "alertmanager" and stored.declared_by is None
    assert stored.roles.count() == 0
    assert _timeline(stored) == [
        (1, "status", "SEV2 declared by alertmanager: HighErrorRate checkout")
    ]
    assert stored.timeline.get().author_label == "alertmanager"
    [entry] = LedgerEntry.objects.filter(incident_id=stored.pk)
    assert (entry.action, entry.actor_id, entry.actor_label) == (
        "incident.declared",
        None,
        "alertmanager",
    )


def test_incident_declare__viewer__refused_and_nothing_stored(viewer):
    with pytest.raises(TransitionRefused) as refused:
        incident_declare(title="Checkout 500s", severity=1, actor=viewer)

    assert str(refused.value) == "dee may not declare incidents"
    _nothing_stored()


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"title": "   "}, "an incident needs a title"),
        ({"severity": 7}, "severity must be SEV1, SEV2, SEV3 or SEV4"),
        (
            {"detected_at": timezone.now() + timedelta(hours=1)},
            "detected_at cannot be in the future",
        ),
        ({"plan_keys": ["no-such-plan"]}, "unknown plan or flag: no-such-plan"),
        ({"flag_keys": ["no-such-flag"]}, "unknown plan or flag: no-such-flag"),
    ],
    ids=["empty-title", "severity-7", "detected-in-future", "unknown-plan", "unknown-flag"],
)
def test_incident_declare__invalid_input__refused_and_nothing_stored(commander, fields, words):
    with pytest.raises(InvalidInput) as refused:
        incident_declare(**{"title": "Checkout 500s", "severity": 1, "actor": commander, **fields})

    assert str(refused.value) == words
    _nothing_stored()


def test_incident_declare__console__pushes_the_live_console_once_after_commit(pushes, commander):
    with pushes.commit():
        incident = incident_declare(title="Checkout 500s in eu-west", severity=2, actor=commander)
    [event] = StreamEvent.objects.filter(stream_id=incident.stream)
    assert event.event.split(",")[0] == "incident.declared" and event.state
    [(seq, html)] = pushes.on(incident.stream)  # every touch of the declaration: one frame
    assert seq == event.seq and "Checkout 500s in eu-west" in html


# --- narration -----------------------------------------------------------------------------------


def test_narration_post__responder__next_entry_and_last_narration_at(incident, responder):
    entry = narration_post(
        incident_id=incident.pk, text="5xx at 4% in eu-west only", actor=responder
    )

    stored = _fresh(incident)
    assert (entry.seq, entry.kind, entry.author, entry.author_label) == (
        3,
        "narration",
        responder,
        "cy",
    )
    assert entry.corrects is None
    assert stored.last_seq == 3 and stored.last_narration_at == entry.created_at
    assert _timeline(stored) == [*DECLARED, (3, "narration", "5xx at 4% in eu-west only")]
    # Narration is the incident's record; the platform's ledger records state changes only.
    assert _ledger(stored) == DECLARED_LEDGER


def test_narration_post__html_and_script__stored_verbatim(incident, responder):
    text = '<script>alert("x")</script> <b onclick="steal()">bold</b> & <img src=x onerror=1>'

    narration_post(incident_id=incident.pk, text=text, actor=responder)

    assert TimelineEntry.objects.get(incident=incident, seq=3).text == text
    assert _timeline(incident)[-1] == (3, "narration", text)


def test_narration_post__exactly_the_limit__stored(incident, responder):
    text = "x" * MAX_NARRATION

    narration_post(incident_id=incident.pk, text=text, actor=responder)

    assert _timeline(incident)[-1] == (3, "narration", text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "say something: the narration is empty"),
        ("  \n ", "say something: the narration is empty"),
        ("x" * (MAX_NARRATION + 1), "narration is limited to 2000 characters"),
    ],
    ids=["empty", "blank", "2001-chars"],
)
def test_narration_post__empty_or_too_long__refused(incident, responder, text, words):
    with pytest.raises(InvalidInput) as refused:
        narration_post(incident_id=incident.pk, text=text, actor=responder)

    assert str(refused.value) == words
    stored = _fresh(incident)
    assert stored.last_seq == 2 and stored.last_narration_at is None
    assert _timeline(stored) == DECLARED
    assert _ledger(stored) == DECLARED_LEDGER


def test_narration_post__viewer__refused(incident, viewer):
    with pytest.raises(TransitionRefused) as refused:
        narration_post(incident_id=incident.pk, text="I see it too", actor=viewer)

    assert str(refused.value) == "dee may not narrate incidents"
    assert _timeline(incident) == DECLARED
    assert _fresh(incident).last_narration_at is None


def test_narration_post__correction__points_at_the_entry_and_keeps_it(incident, responder):
    original = narration_post(
        incident_id=incident.pk, text="DB primary failed over at 14:02", actor=responder
    )

    correction = narration_post(
        incident_id=incident.pk,
        text="Correction: the failover was at 14:12",
        actor=responder,
        corrects_seq=3,
    )

    assert correction.seq == 4 and correction.corrects == original
    assert list(original.corrections.all()) == [correction]
    assert TimelineEntry.objects.get(pk=original.pk).text == "DB primary failed over at 14:02"
    assert _timeline(incident) == [
        *DECLARED,
        (3, "narration", "DB primary failed over at 14:02"),
        (4, "narration", "Correction: the failover was at 14:12"),
    ]
    assert _ledger(incident) == DECLARED_LEDGER


def test_narration_post__correcting_a_missing_entry__refused(incident, responder):
    with pytest.raises(InvalidInput) as refused:
        narration_post(incident_id=incident.pk, text="Correction", actor=responder, corrects_seq=9)

    assert str(refused.value) == "there is no timeline entry #9 to correct"
    stored = _fresh(incident)
    assert stored.last_seq == 2 and stored.last_narration_at is None
    assert _timeline(stored) == DECLARED


def test_narration_post__other_entries__only_narration_moves_last_narration_at(
    incident, commander, responder
):
    _move(incident, commander, "investigating")
    _hypothesis(incident, commander)
    incident_system_note(incident_id=incident.pk, text="HighErrorRate firing", kind="alert")
    assert _fresh(incident).last_narration_at is None

    said = narration_post(incident_id=incident.pk, text="looking at the pool", actor=responder)
    _move(incident, commander, "mitigated")
    incident_system_note(incident_id=incident.pk, text="HighErrorRate resolved", kind="alert")

    stored = _fresh(incident)
    assert stored.last_narration_at == said.created_at
    assert _timeline(stored) == [
        *DECLARED,
        (3, "status", "status declared → investigating"),
        (4, "hypothesis", "Hypothesis: eu-west DB pool exhausted"),
        (5, "alert", "HighErrorRate firing"),
        (6, "narration", "looking at the pool"),
        (7, "status", "status investigating → mitigated"),
        (8, "alert", "HighErrorRate resolved"),
    ]
    assert stored.timeline.get(seq=5).author_label == "stepwise"


# --- status --------------------------------------------------------------------------------------


def test_incident_status_change__whole_path__timestamps_timeline_and_ledger(incident, commander):
    incident_status_change(incident_id=incident.pk, status="investigating", actor=commander)
    stored = _fresh(incident)
    assert stored.status == "investigating" and stored.mitigated_at is None

    incident_status_change(
        incident_id=incident.pk, status="mitigated", actor=commander, reason="drained eu-west"
    )
    stored = _fresh(incident)
    assert stored.status == "mitigated" and stored.mitigated_at is not None
    assert stored.resolved_at is None
    mitigated_at = stored.mitigated_at

    incident_status_change(incident_id=incident.pk, status="resolved", actor=commander)
    stored = _fresh(incident)
    assert stored.status == "resolved" and stored.resolved_at >= mitigated_at
    assert stored.mitigated_at == mitigated_at and not stored.is_open

    incident_status_change(incident_id=incident.pk, status="postmortem", actor=commander)
    stored = _fresh(incident)
    assert stored.status == "postmortem" and stored.mitigated_at == mitigated_at

    assert _timeline(stored) == [
        *DECLARED,
        (3, "status", "status declared → investigating"),
        (4, "status", "status investigating → mitigated: drained eu-west"),
        (5, "status", "status mitigated → resolved"),
        (6, "status", "status resolved → postmortem"),
    ]
    assert stored.timeline.get(seq=4).data == {"from": "investigating", "to": "mitigated"}
    assert _ledger(stored) == [
        *DECLARED_LEDGER,
        "incident.investigating",
        "incident.mitigated",
        "incident.resolved",
        "incident.postmortem",
    ]
    assert _payload(stored, "incident.mitigated") == {
        "incident": stored.pk,
        "from": "investigating",
        "to": "mitigated",
        "reason": "drained eu-west",
    }


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ((), "postmortem"),
        (("investigating",), "declared"),
        (("investigating",), "investigating"),
        (("resolved", "postmortem"), "investigating"),
    ],
    ids=["declared-to-postmortem", "back-to-declared", "same-status", "out-of-postmortem"],
)
def test_incident_status_change__not_allowed__refused_with_the_words(
    incident, commander, path, status
):
    _move(incident, commander, *path)
    before = _fresh(incident)

    with pytest.raises(TransitionRefused) as refused:
        incident_status_change(incident_id=incident.pk, status=status, actor=commander)

    assert str(refused.value) == f"INC-{incident.pk} is {before.status}; it cannot become {status}"
    stored = _fresh(incident)
    assert (stored.status, stored.last_seq, stored.resolved_at) == (
        before.status,
        before.last_seq,
        before.resolved_at,
    )
    assert len(_ledger(stored)) == len(DECLARED_LEDGER) + len(path)


def test_incident_status_change__unknown_status__invalid(incident, commander):
    with pytest.raises(InvalidInput, match="unknown status 'closed'"):
        incident_status_change(incident_id=incident.pk, status="closed", actor=commander)

    assert _fresh(incident).status == "declared"
    assert _timeline(incident) == DECLARED


def test_incident_status_change__resolve_with_change_in_progress__refused(incident, commander):
    _hypothesis(incident, commander)
    _drain(incident, commander)

    with pytest.raises(TransitionRefused) as refused:
        incident_status_change(incident_id=incident.pk, status="resolved", actor=commander)

    assert str(refused.value) == (
        "change “Drain eu-west” is still in progress: verify it (hold or revert) before resolving"
    )
    stored = _fresh(incident)
    assert (stored.status, stored.resolved_at, stored.mitigated_at) == ("declared", None, None)
    assert [kind for _, kind, _ in _timeline(stored)] == ["status", "role", "hypothesis", "change"]
    assert "incident.resolved" not in _ledger(stored)


def test_incident_status_change__reopen_resolved__clears_resolved_at(incident, commander):
    _move(incident, commander, "investigating", "resolved")
    assert _fresh(incident).resolved_at is not None

    incident_status_change(
        incident_id=incident.pk, status="investigating", actor=commander, reason="errors are back"
    )

    stored = _fresh(incident)
    assert stored.status == "investigating" and stored.resolved_at is None and stored.is_open
    assert _timeline(stored)[-1] == (
        5,
        "status",
        "status resolved → investigating: errors are back",
    )
    assert _ledger(stored)[-2:] == ["incident.resolved", "incident.investigating"]


def test_incident_status_change__responder__refused(incident, responder):
    with pytest.raises(TransitionRefused) as refused:
        incident_status_change(incident_id=incident.pk, status="investigating", actor=responder)

    assert str(refused.value) == "cy may not change the incident's status"
    assert _fresh(incident).status == "declared"
    assert _timeline(incident) == DECLARED
    assert _ledger(incident) == DECLARED_LEDGER


# --- command and roles ---------------------------------------------------------------------------


def test_command_handover__to_another_commander__one_row_ends_one_begins(
    incident, commander, commander_2
):
    assignment = command_handover(incident_id=incident.pk, to_username="bob", actor=commander)

    rows = list(RoleAssignment.objects.filter(incident=incident, role="commander").order_by("pk"))
    assert [r.user for r in rows] == [commander, commander_2]
    assert rows[0].renounced_at is not None and rows[0].renounced_at == rows[1].assumed_at
    assert rows[1] == assignment and rows[1].renounced_at is None
    assert (
        RoleAssignment.objects.filter(
            incident=incident, role="commander", renounced_at__isnull=True
        ).count()
        == 1
    )
    assert _timeline(incident) == [
        *DECLARED,
        (3, "role", "bob is now incident commander (was ada)"),
    ]
    assert _ledger(incident) == [*DECLARED_LEDGER, "incident.command_handed_over"]
    assert _payload(incident, "incident.command_handed_over") == {
        "incident": incident.pk,
        "from": "ada",
        "to": "bob",
    }


def test_command_handover__uncommanded_incident__was_nobody(responder, commander_2):
    incident = incident_declare(title="Search slow", severity=3, actor=responder)

    command_handover(incident_id=incident.pk, to_username="bob", actor=commander_2)

    assert list(incident.roles.values_list("user__username", "renounced_at")) == [("bob", None)]
    assert _timeline(incident)[-1] == (2, "role", "bob is now incident commander (was nobody)")


def test_role_assignment__second_active_commander__database_refuses(incident, commander_2):
    with pytest.raises(IntegrityError), transaction.atomic():
        RoleAssignment.objects.create(incident=incident, user=commander_2, role="commander")

    assert incident.roles.filter(role="commander").count() == 1


@pytest.mark.parametrize(
    ("to_username", "error", "words"),
    [
        ("cy", TransitionRefused, "cy cannot command incidents (not a commander)"),
        ("ada", TransitionRefused, "ada already commands INC-{pk}"),
        ("ghost", InvalidInput, "no user named 'ghost'"),
    ],
    ids=["to-a-responder", "to-oneself", "unknown-user"],
)
def test_command_handover__not_to_a_new_commander__refused(
    incident, commander, responder, to_username, error, words
):
    with pytest.raises(error) as refused:
        command_handover(incident_id=incident.pk, to_username=to_username, actor=commander)

    assert str(refused.value) == words.format(pk=incident.pk)
    assert list(incident.roles.values_list("user__username", "role", "renounced_at")) == [
        ("ada", "commander", None)
    ]
    assert _timeline(incident) == DECLARED
    assert _ledger(incident) == DECLARED_LEDGER


def test_command_handover__responder__refused(incident, responder, commander_2):
    with pytest.raises(TransitionRefused, match=r"^cy may not hand over command$"):
        command_handover(incident_id=incident.pk, to_username="bob", actor=responder)

    assert incident.roles.get().user.username == "ada"
    assert _timeline(incident) == DECLARED


def test_role_assign__scribe__recorded(incident, commander, responder):
    role_assign(incident_id=incident.pk, username="cy", role="scribe", actor=commander)

    assert list(incident.roles.values_list("user__username", "role")) == [
        ("ada", "commander"),
        ("cy", "scribe"),
    ]
    assert _timeline(incident)[-1] == (3, "role", "cy is Scribe")
    assert _ledger(incident) == [*DECLARED_LEDGER, "incident.role_assigned"]


def test_role_assign__commander__refused_command_moves_by_handover(
    incident, commander, commander_2
):
    with pytest.raises(InvalidInput, match="command is handed over"):
        role_assign(incident_id=incident.pk, username="bob", role="commander", actor=commander)

    assert incident.roles.count() == 1 and _timeline(incident) == DECLARED


# --- hypotheses ----------------------------------------------------------------------------------


def test_hypothesis_state__none_open__stated(incident, commander):
    hypothesis = _hypothesis(incident, commander)

    assert (hypothesis.status, hypothesis.author, hypothesis.closed_at) == ("open", commander, None)
    assert _timeline(incident) == [
        *DECLARED,
        (3, "hypothesis", "Hypothesis: eu-west DB pool exhausted"),
    ]
    assert incident.timeline.get(seq=3).data == {"hypothesis": hypothesis.pk}
    assert _ledger(incident) == [*DECLARED_LEDGER, "incident.hypothesis"]


def test_hypothesis_state__one_already_open__refused(incident, commander):
    _hypothesis(incident, commander)

    with pytest.raises(TransitionRefused) as refused:
        _hypothesis(incident, commander, "bad deploy of checkout")

    assert str(refused.value) == (
        "hypothesis “eu-west DB pool exhausted” is still open: confirm or reject it first"
    )
    assert list(incident.hypotheses.values_list("statement", flat=True)) == [
        "eu-west DB pool exhausted"
    ]
    assert len(_timeline(incident)) == 3
    assert _ledger(incident) == [*DECLARED_LEDGER, "incident.hypothesis"]


def test_hypothesis_close__rejected__next_one_may_be_stated(incident, commander):
    first = _hypothesis(incident, commander)

    hypothesis_close(
        incident_id=incident.pk, hypothesis_id=first.pk, confirmed=False, actor=commander
    )
    second = _hypothesis(incident, commander, "bad deploy of checkout")

    first.refresh_from_db()
    assert first.status == "rejected" and first.closed_at is not None
    assert second.status == "open"
    assert _timeline(incident)[2:] == [
        (3, "hypothesis", "Hypothesis: eu-west DB pool exhausted"),
        (4, "hypothesis", "Hypothesis rejected: eu-west DB pool exhausted"),
        (5, "hypothesis", "Hypothesis: bad deploy of checkout"),
    ]
    assert _ledger(incident)[len(DECLARED_LEDGER) :] == [
        "incident.hypothesis",
        "incident.hypothesis_rejected",
        "incident.hypothesis",
    ]


def test_hypothesis_close__change_in_progress__refused(incident, commander):
    hypothesis = _hypothesis(incident, commander)
    _drain(incident, commander)

    with pytest.raises(TransitionRefused) as refused:
        hypothesis_close(
            incident_id=incident.pk, hypothesis_id=hypothesis.pk, confirmed=True, actor=commander
        )

    assert str(refused.value) == "a change under this hypothesis is in progress: verify it first"
    hypothesis.refresh_from_db()
    assert hypothesis.status == "open" and hypothesis.closed_at is None
    assert [kind for _, kind, _ in _timeline(incident)][-2:] == ["hypothesis", "change"]
    assert "incident.hypothesis_confirmed" not in _ledger(incident)


# --- changes -------------------------------------------------------------------------------------


def test_change_start__under_open_hypothesis__in_progress_with_its_revert(incident, commander):
    hypothesis = _hypothesis(incident, commander)

    change = _drain(incident, commander)

    stored = Change.objects.get()
    assert stored == change and stored.hypothesis == hypothesis
    assert (stored.status, stored.started_by, stored.flag, stored.flag_version) == (
        "in_progress",
        commander,
        None,
        None,
    )
    assert (stored.expected_effect, stored.revert_plan) == (
        "5xx below 1% within 5 min",
        "undrain eu-west",
    )
    assert _timeline(incident)[-1] == (
        4,
        "change",
        "Change: Drain eu-west — expect: 5xx below 1% within 5 min — revert: undrain eu-west",
    )
    assert _ledger(incident)[-1] == "incident.change_started"
    assert _payload(incident, "incident.change_started") == {
        "incident": incident.pk,
        "change": change.pk,
        "description": "Drain eu-west",
        "revert": "undrain eu-west",
    }


def test_change_start__no_open_hypothesis__refused(incident, commander):
    with pytest.raises(TransitionRefused) as refused:
        _drain(incident, commander)

    assert str(refused.value) == "state a hypothesis first: a change tests one"
    assert Change.objects.count() == 0
    assert _timeline(incident) == DECLARED
    assert _ledger(incident) == DECLARED_LEDGER


@pytest.mark.parametrize(
    ("missing", "words"),
    [
        ("revert_plan", "every change names its revert before it starts"),
        ("expected_effect", "say what effect you expect, so it can be verified"),
        ("description", "describe the change"),
    ],
    ids=["no-revert", "no-expected-effect", "no-description"],
)
def test_change_start__missing_field__refused(incident, commander, missing, words):
    _hypothesis(incident, commander)
    fields = {
        "description": "Drain eu-west",
        "expected_effect": "5xx below 1% within 5 min",
        "revert_plan": "undrain eu-west",
        missing: "  ",
    }

    with pytest.raises(InvalidInput) as refused:
        change_start(incident_id=incident.pk, actor=commander, **fields)

    assert str(refused.value) == words
    assert Change.objects.count() == 0
    assert len(_timeline(incident)) == 3
    assert "incident.change_started" not in _ledger(incident)


@pytest.mark.parametrize("placeholder", ["n/a", "N/A", "none", "-", "TBD", "nothing.", "?"])
def test_change_start__placeholder_revert__refused_say_how_it_is_undone(
    incident, commander, placeholder
):
    _hypothesis(incident, commander)

    with pytest.raises(InvalidInput) as refused:
        change_start(
            incident_id=incident.pk,
            description="Restart the checkout pods",
            expected_effect="5xx below 1% within 5 min",
            revert_plan=f" {placeholder} ",
            actor=commander,
        )

    assert str(refused.value) == (
        f"“{placeholder}” is not a revert: say how this change is undone before it starts (when "
        "nothing needs undoing, say why, e.g. “nothing to undo: the warm-up only reads”)"
    )
    assert Change.objects.count() == 0
    assert "incident.change_started" not in _ledger(incident)


def test_change_start__flag_change_with_placeholder_revert__refused_flag_untouched(
    incident, commander, changed_flag
):
    _hypothesis(incident, commander)

    with pytest.raises(InvalidInput, match="“n/a” is not a revert"):
        change_start(
            incident_id=incident.pk,
            description="Turn checkout-v2 off",
            expected_effect="5xx below 1%",
            revert_plan="n/a",
            actor=commander,
            flag_key="checkout-v2",
            flag_changes={"enabled": False},
        )

    assert changed_flag.versions.count() == 2 and Change.objects.count() == 0


def test_change_start__revert_saying_why_nothing_needs_undoing__started(incident, commander):
    _hypothesis(incident, commander)

    change = change_start(
        incident_id=incident.pk,
        description="Warm the token cache",
        expected_effect="token errors below 0.5%",
        revert_plan="nothing to undo: the warm-up only reads",
        actor=commander,
    )

    assert change.revert_plan == "nothing to undo: the warm-up only reads"


def test_change_start__one_in_progress__refused_naming_it(incident, commander):
    _hypothesis(incident, commander)
    first = _drain(incident, commander)

    with pytest.raises(TransitionRefused) as refused:
        _drain(incident, commander, "Restart checkout pods")

    assert str(refused.value) == (
        "change “Drain eu-west” is in progress: verify it (hold or revert) before starting another"
    )
    assert list(Change.objects.all()) == [first]
    assert len(_timeline(incident)) == 4
    assert _ledger(incident).count("incident.change_started") == 1


def test_change_start__responder__refused(incident, commander, responder):
    _hypothesis(incident, commander)

    with pytest.raises(TransitionRefused, match=r"^cy may not make changes$"):
        _drain(incident, responder)

    assert Change.objects.count() == 0 and len(_timeline(incident)) == 3


def test_change_start__flag_change__flag_flipped_and_revert_is_previous_version(
    incident, commander, changed_flag
):
    _hypothesis(incident, commander)

    change = _flag_off(incident, commander)

    changed_flag.refresh_from_db()
    v3 = changed_flag.current
    assert (v3.number, v3.enabled, v3.source, v3.author) == (3, False, "incident", commander)
    assert v3.reason == f"INC-{incident.pk}: Turn checkout-v2 off"
    assert (change.flag, change.flag_version) == (changed_flag, v3)
    assert change.revert_plan == "restore checkout-v2 v2 (on at 50%)"
    assert list(incident.flags.all()) == [changed_flag]
    entry = incident.timeline.get(seq=4)
    assert (entry.kind, entry.text) == (
        "change",
        "Change: Turn checkout-v2 off — checkout-v2: on at 50% (v2) → off (v3) — "
        "expect: 5xx below 1% within 5 min — revert: restore checkout-v2 v2 (on at 50%)",
    )
    assert entry.data == {"change": change.pk, "flag": "checkout-v2", "from": 2, "version": 3}
    assert _ledger(incident)[-1] == "incident.change_started"


def test_change_verify__better__held(incident, commander):
    _hypothesis(incident, commander)
    change = _drain(incident, commander)

    change_verify(
        incident_id=incident.pk,
        change_id=change.pk,
        better=True,
        actor=commander,
        note="5xx at 0.2%",
    )

    change.refresh_from_db()
    assert (change.status, change.verified_by, change.verification_note) == (
        "held",
        commander,
        "5xx at 0.2%",
    )
    assert change.verified_at is not None
    assert _timeline(incident)[-1] == (
        5,
        "verification",
        "Drain eu-west — better: holding: 5xx at 0.2%",
    )
    assert incident.timeline.get(seq=5).data == {"change": change.pk, "better": True}
    assert _ledger(incident)[-1] == "incident.change_held"


def test_change_verify__not_better_flag_change__flag_back_to_previous_version(
    incident, commander, changed_flag
):
    _hypothesis(incident, commander)
    change = _flag_off(incident, commander)

    change_verify(
        incident_id=incident.pk,
        change_id=change.pk,
        better=False,
        actor=commander,
        note="no effect",
    )

    change.refresh_from_db()
    assert (change.status, change.verified_by) == ("reverted", commander)
    changed_flag.refresh_from_db()
    v2, v4 = changed_flag.versions.get(number=2), changed_flag.current
    assert (v4.number, v4.restored_from, v4.source, v4.author) == (4, v2, "incident", commander)
    assert (v4.enabled, v4.rollout_percentage) == (True, Decimal("50.00"))
    assert _timeline(incident)[-1] == (
        5,
        "revert",
        "Turn checkout-v2 off — not better: reverted "
        "(checkout-v2 restored: off (v3) → on at 50% (v4)): no effect",
    )
    # The flag's own entries carry the incident, so its ledger view has the before and after.
    assert _ledger(incident)[-4:] == [
        "flag.changed",
        "incident.change_started",
        "flag.restored",
        "incident.change_reverted",
    ]
    assert (
        LedgerEntry.objects.filter(action="flag.restored", subject_id=str(changed_flag.pk)).count()
        == 1
    )


def test_change_verify__not_better_manual_change__marked_reverted(incident, commander):
    _hypothesis(incident, commander)
    change = _drain(incident, commander)

    change_verify(incident_id=incident.pk, change_id=change.pk, better=False, actor=commander)

    change.refresh_from_db()
    assert change.status == "reverted"
    assert _timeline(incident)[-1] == (5, "revert", "Drain eu-west — not better: reverted")
    assert _ledger(incident)[-1] == "incident.change_reverted"


def test_change_verify__twice__refused_naming_who(incident, commander, commander_2):
    _hypothesis(incident, commander)
    change = _drain(incident, commander)
    change_verify(incident_id=incident.pk, change_id=change.pk, better=True, actor=commander)

    with pytest.raises(TransitionRefused) as refused:
        change_verify(incident_id=incident.pk, change_id=change.pk, better=False, actor=commander_2)

    assert str(refused.value) == "that change was already better: held by ada"
    change.refresh_from_db()
    assert (change.status, change.verified_by) == ("held", commander)
    assert len(_timeline(incident)) == 5
    assert _ledger(incident).count("incident.change_held") == 1
    assert "incident.change_reverted" not in _ledger(incident)


def test_change_verify__after_verify__next_change_may_start_and_incident_resolve(
    incident, commander
):
    _hypothesis(incident, commander)
    first = _drain(incident, commander)
    change_verify(incident_id=incident.pk, change_id=first.pk, better=False, actor=commander)

    second = _drain(incident, commander, "Raise DB pool to 200")
    change_verify(incident_id=incident.pk, change_id=second.pk, better=True, actor=commander)
    incident_status_change(incident_id=incident.pk, status="resolved", actor=commander)

    assert list(Change.objects.values_list("description", "status")) == [
        ("Drain eu-west", "reverted"),
        ("Raise DB pool to 200", "held"),
    ]
    assert _fresh(incident).status == "resolved"
    assert [kind for _, kind, _ in _timeline(incident)][2:] == [
        "hypothesis",
        "change",
        "revert",
        "change",
        "verification",
        "status",
    ]


def test_change_start__flag_change_that_changes_nothing__refused_flag_untouched(
    incident, commander, changed_flag
):
    _hypothesis(incident, commander)
    with pytest.raises(InvalidInput, match=r"already on at 50% \(v2\): the change would change"):
        change_start(
            incident_id=incident.pk,
            description="Make sure checkout-v2 is on",
            expected_effect="nothing changes for users",
            revert_plan="",
            actor=commander,
            flag_key="checkout-v2",
            flag_changes={"enabled": True},  # already so, since the TPM's v2
        )
    assert Change.objects.count() == 0
    changed_flag.refresh_from_db()
    assert changed_flag.current.number == 2


def test_change_verify__flag_changed_by_someone_since__revert_refused_naming_them(
    incident, commander, changed_flag, tpm
):
    _hypothesis(incident, commander)
    change = change_start(
        incident_id=incident.pk,
        description="Checkout v2 to 10%",
        expected_effect="errors drop",
        revert_plan="",
        actor=commander,
        flag_key="checkout-v2",
        flag_changes={"rollout_percentage": 10},
    )
    flag_change(
        flag_key="checkout-v2",
        changes={"rollout_percentage": 20},
        actor=tpm,
        reason="ramp on",
        source="board",
    )
    with pytest.raises(TransitionRefused, match="already at v4"):
        change_verify(incident_id=incident.pk, change_id=change.pk, better=False, actor=commander)
    change.refresh_from_db()
    assert change.status == Change.Status.IN_PROGRESS
    assert Flag.objects.get(key="checkout-v2").current.rollout_percentage == Decimal("20.00")


# --- console flag revert -------------------------------------------------------------------------
# The one-click revert is a change under the open hypothesis, verified like any other.

REVERT_LINE = (
    "Change: checkout-v2 reverted: on at 50% (v2) → off (v3) — expect: things improve once "
    "checkout-v2 is off again (as in v1) — revert: restore checkout-v2 v2 (on at 50%)"
)


def _revert(incident: Incident, actor, seen_version: int = 2, **extra) -> Change:
    return incident_flag_revert(
        incident_id=incident.pk,
        flag_key="checkout-v2",
        seen_version=seen_version,
        actor=actor,
        **extra,
    )


def test_incident_flag_revert__open_hypothesis__a_change_under_it_with_its_own_revert(
    incident, commander, changed_flag
):
    hypothesis = _hypothesis(incident, commander)

    change = _revert(incident, commander)

    changed_flag.refresh_from_db()
    version = changed_flag.current
    v1 = changed_flag.versions.get(number=1)
    assert (version.number, version.restored_from, version.source, version.author) == (
        3,
        v1,
        "incident",
        commander,
    )
    assert version.enabled is False and version.rollout_percentage == Decimal("0.00")
    assert version.reason == f"INC-{incident.pk}: one-click revert from the incident console"
    assert Change.objects.get() == change
    assert (change.hypothesis, change.status, change.started_by) == (
        hypothesis,
        "in_progress",
        commander,
    )
    assert (change.flag, change.flag_version) == (changed_flag, version)
    assert change.description == "Revert checkout-v2 v2 (on at 50%) → off"
    assert change.expected_effect == "things improve once checkout-v2 is off again (as in v1)"
    assert change.revert_plan == "restore checkout-v2 v2 (on at 50%)"
    assert list(incident.flags.all()) == [changed_flag]
    assert _timeline(incident)[-1] == (4, "change", REVERT_LINE)
    assert incident.timeline.get(seq=4).data == {
        "change": change.pk,
        "flag": "checkout-v2",
        "from": 2,
        "version": 3,
        "one_click_revert": True,
    }
    assert _ledger(incident) == [
        *DECLARED_LEDGER,
        "incident.hypothesis",
        "flag.reverted",
        "incident.change_started",
    ]
    assert _payload(incident, "incident.change_started") == {
        "incident": incident.pk,
        "change": change.pk,
        "description": "Revert checkout-v2 v2 (on at 50%) → off",
        "revert": "restore checkout-v2 v2 (on at 50%)",
        "flag": "checkout-v2",
        "from": 2,
        "version": 3,
        "one_click_revert": True,
    }


def test_incident_flag_revert__expected_effect_given__kept(incident, commander, changed_flag):
    _hypothesis(incident, commander)

    change = _revert(incident, commander, expected_effect="  cart 5xx below 1% in 5 min ")

    assert change.expected_effect == "cart 5xx below 1% in 5 min"
    assert "— expect: cart 5xx below 1% in 5 min —" in _timeline(incident)[-1][2]


def test_incident_flag_revert__no_open_hypothesis__refused_flag_untouched(
    incident, commander, changed_flag
):
    with pytest.raises(TransitionRefused) as refused:
        _revert(incident, commander)

    assert str(refused.value) == "state a hypothesis first: a revert tests one too"
    assert changed_flag.versions.count() == 2 and Change.objects.count() == 0
    assert _timeline(incident) == DECLARED
    assert _ledger(incident) == DECLARED_LEDGER


def test_incident_flag_revert__change_in_progress__refused_like_a_second_change(
    incident, commander, changed_flag
):
    _hypothesis(incident, commander)
    drain = _drain(incident, commander)

    with pytest.raises(TransitionRefused) as refused:
        _revert(incident, commander)

    assert str(refused.value) == (
        "change “Drain eu-west” is in progress: verify it (hold or revert) before starting another"
    )
    assert changed_flag.versions.count() == 2
    assert list(Change.objects.all()) == [drain]
    assert "flag.reverted" not in _ledger(incident)


def test_incident_flag_revert__not_better__change_verify_restores_the_version_it_reverted(
    incident, commander, changed_flag
):
    _hypothesis(incident, commander)
    change = _revert(incident, commander)

    change_verify(incident_id=incident.pk, change_id=change.pk, better=False, actor=commander)

    changed_flag.refresh_from_db()
    v2, v4 = changed_flag.versions.get(number=2), changed_flag.current
    assert (v4.number, v4.restored_from, v4.settings_text()) == (4, v2, "on at 50%")
    change.refresh_from_db()
    assert change.status == "reverted"
    assert _timeline(incident)[-1] == (
        5,
        "revert",
        "Revert checkout-v2 v2 (on at 50%) → off — not better: reverted "
        "(checkout-v2 restored: off (v3) → on at 50% (v4))",
    )
    assert _ledger(incident)[-2:] == ["flag.restored", "incident.change_reverted"]


def test_incident_flag_revert__better__held_then_the_next_change_may_start(
    incident, commander, changed_flag
):
    _hypothesis(incident, commander)
    change = _revert(incident, commander)
    change_verify(incident_id=incident.pk, change_id=change.pk, better=True, actor=commander)

    drain = _drain(incident, commander)

    assert changed_flag.versions.count() == 3
    assert _timeline(incident)[-2] == (
        5,
        "verification",
        "Revert checkout-v2 v2 (on at 50%) → off — better: holding (checkout-v2 stays off (v3))",
    )
    assert list(Change.objects.values_list("status", flat=True)) == ["held", "in_progress"]
    assert drain.status == "in_progress"


def test_incident_flag_revert__revert_of_the_revert__refused_bad_version_stays_off(
    incident, commander, changed_flag
):
    _hypothesis(incident, commander)
    first = _revert(incident, commander)
    change_verify(incident_id=incident.pk, change_id=first.pk, better=True, actor=commander)

    with pytest.raises(TransitionRefused) as refused:
        _revert(incident, commander, seen_version=3)

    assert "a revert never raises exposure" in str(refused.value)
    assert "would apply v2's settings (on at 50%, now off)" in str(refused.value)
    changed_flag.refresh_from_db()
    assert changed_flag.current.number == 3 and changed_flag.current.enabled is False
    assert list(Change.objects.all()) == [first]


def test_incident_flag_revert__same_seen_version_again__refused_naming_who(
    incident, commander, commander_2, changed_flag
):
    _hypothesis(incident, commander)
    _revert(incident, commander)

    with pytest.raises(TransitionRefused) as refused:
        _revert(incident, commander_2)

    # The flag is checked before "a change is in progress": bob learns that ada reverted it.
    assert str(refused.value).startswith("checkout-v2 is already at v3 (changed by ada")
    assert changed_flag.versions.count() == 3 and Change.objects.count() == 1
    assert [kind for _, kind, _ in _timeline(incident)] == [
        "status",
        "role",
        "hypothesis",
        "change",
    ]
    assert _ledger(incident).count("incident.change_started") == 1


def _ramped_by_a_plan_step(flag: Flag) -> None:
    """Test setup: an active plan whose step ramps `flag`, written directly."""
    plan = Plan.objects.create(key="checkout", name="Checkout", owner="web", status="active")
    Step.objects.create(
        plan=plan,
        key="ramp",
        title="ramp",
        owner_team="web",
        kind="flag_ramp",
        position=1,
        flag=flag,
        status="running",
    )


@pytest.mark.parametrize("plan_flag", [False, True], ids=["no-plan-step", "plan-step-flag"])
def test_incident_flag_revert__responder__refused(
    incident, commander, responder, changed_flag, plan_flag
):
    _hypothesis(incident, commander)
    if plan_flag:
        _ramped_by_a_plan_step(changed_flag)

    with pytest.raises(TransitionRefused) as refused:
        _revert(incident, responder)

    assert str(refused.value).startswith("cy may not ")
    changed_flag.refresh_from_db()
    assert changed_flag.current.number == 2 and changed_flag.versions.count() == 2
    assert Change.objects.count() == 0 and len(_timeline(incident)) == 3


def test_incident_flag_revert__tpm_flag_no_plan_step_owns__refused(
    incident, commander, tpm, changed_flag
):
    _hypothesis(incident, commander)

    with pytest.raises(TransitionRefused) as refused:
        _revert(incident, tpm)

    assert str(refused.value) == "eve may not revert flags that no plan step owns"
    assert changed_flag.versions.count() == 2 and Change.objects.count() == 0


def test_incident_flag_revert__tpm_flag_a_plan_step_ramps__a_change_the_commander_verifies(
    incident, commander, tpm, changed_flag
):
    _hypothesis(incident, commander)
    _ramped_by_a_plan_step(changed_flag)

    change = _revert(incident, tpm)
    change_verify(incident_id=incident.pk, change_id=change.pk, better=True, actor=commander)

    change.refresh_from_db()
    assert (change.started_by, change.verified_by, change.status) == (tpm, commander, "held")
    assert (change.flag_version.number, change.flag_version.author) == (3, tpm)
    assert incident.timeline.get(seq=4).text == REVERT_LINE
    assert incident.timeline.get(seq=4).author_label == "eve"


def test_incident_flag_revert__resolved_incident__refused(incident, commander, changed_flag):
    _move(incident, commander, "resolved")

    with pytest.raises(TransitionRefused) as refused:
        _revert(incident, commander)

    assert str(refused.value) == f"INC-{incident.pk} is resolved: reverting flags is closed"
    assert changed_flag.versions.count() == 2
    assert [kind for _, kind, _ in _timeline(incident)] == ["status", "role", "status"]
    assert "incident.change_started" not in _ledger(incident)


# --- break-glass ---------------------------------------------------------------------------------


def test_break_glass_flip__commander_on__flag_fully_on_and_loud(incident, commander, make_switch):
    switch = make_switch()

    version = break_glass_flip(
        incident_id=incident.pk, switch_id=switch.pk, on=True, actor=commander
    )

    flag = Flag.objects.get(key="shed-load")
    assert flag.current == version and flag.versions.count() == 2
    assert (version.enabled, version.rollout_percentage) == (True, Decimal("100.00"))
    assert (version.source, version.author) == ("incident", commander)
    assert version.reason == f"BREAK-GLASS during INC-{incident.pk}: shed load on"
    assert list(incident.flags.all()) == [flag]
    assert _timeline(incident) == [
        *DECLARED,
        (
            3,
            "break_glass",
            "BREAK-GLASS: shed load turned ON by ada (shed-load: off (v1) → on at 100% (v2))",
        ),
    ]
    assert _ledger(incident) == [*DECLARED_LEDGER, "flag.changed", "incident.break_glass"]
    assert _payload(incident, "incident.break_glass") == {
        "incident": incident.pk,
        "switch": "shed load",
        "flag": "shed-load",
        "on": True,
        "version": 2,
    }


def test_break_glass_flip__listed_responder__may_flip(incident, responder, make_switch):
    switch = make_switch(allowed=(responder,))

    break_glass_flip(incident_id=incident.pk, switch_id=switch.pk, on=True, actor=responder)

    current = Flag.objects.get(key="shed-load").current
    assert (current.number, current.enabled, current.author) == (2, True, responder)
    assert _timeline(incident)[-1] == (
        3,
        "break_glass",
        "BREAK-GLASS: shed load turned ON by cy (shed-load: off (v1) → on at 100% (v2))",
    )
    assert _ledger(incident)[-1] == "incident.break_glass"


def test_break_glass_flip__unlisted_responder__refused(
    incident, responder, commander_2, make_switch
):
    switch = make_switch(allowed=(commander_2,))

    with pytest.raises(TransitionRefused) as refused:
        break_glass_flip(incident_id=incident.pk, switch_id=switch.pk, on=True, actor=responder)

    assert str(refused.value) == "cy is not authorized for “shed load”"
    flag = Flag.objects.get(key="shed-load")
    assert flag.current.number == 1 and flag.current.enabled is False
    assert _timeline(incident) == DECLARED
    assert _ledger(incident) == DECLARED_LEDGER


def test_break_glass_define__viewer_named__refused_read_only_stays_read_only(viewer, responder):
    from incidents.services import break_glass_define
    from rollouts.services.flags import flag_create

    flag_create(
        key="shed-load", description="", kind=Flag.Kind.KILL_SWITCH, owner="sre", actor=None
    )
    with pytest.raises(InvalidInput, match="dee may only read"):
        break_glass_define(flag_key="shed-load", label="shed", actor=None, allowed=["dee", "cy"])
    assert not BreakGlassSwitch.objects.exists()
    break_glass_define(flag_key="shed-load", label="shed", actor=None, allowed=["cy"])


def test_break_glass_flip__viewer_listed_before_the_rule__still_refused(
    incident, viewer, make_switch
):
    switch = make_switch(allowed=(viewer,))
    with pytest.raises(TransitionRefused, match="dee is not authorized"):
        break_glass_flip(incident_id=incident.pk, switch_id=switch.pk, on=True, actor=viewer)


def test_break_glass_flip__resolved_incident__refused(incident, commander, make_switch):
    switch = make_switch()
    _move(incident, commander, "resolved")

    with pytest.raises(TransitionRefused) as refused:
        break_glass_flip(incident_id=incident.pk, switch_id=switch.pk, on=True, actor=commander)

    assert str(refused.value) == f"INC-{incident.pk} is resolved: break-glass is closed"
    assert Flag.objects.get(key="shed-load").versions.count() == 1
    assert [kind for _, kind, _ in _timeline(incident)] == ["status", "role", "status"]
    assert "incident.break_glass" not in _ledger(incident)


# --- action items --------------------------------------------------------------------------------


def test_action_item_add__title_and_owner__stored_and_ledgered(incident, responder):
    item = action_item_add(
        incident_id=incident.pk,
        title="Alert on checkout 5xx per region",
        owner="web-team",
        actor=responder,
    )

    assert list(ActionItem.objects.values_list("incident_id", "title", "owner", "done")) == [
        (incident.pk, "Alert on checkout 5xx per region", "web-team", False)
    ]
    assert item.pk == ActionItem.objects.get().pk
    assert _timeline(incident) == [
        *DECLARED,
        (3, "system", "action item: Alert on checkout 5xx per region (owner web-team)"),
    ]
    assert _ledger(incident) == [*DECLARED_LEDGER, "incident.action_item"]
    assert _payload(incident, "incident.action_item") == {
        "incident": incident.pk,
        "title": "Alert on checkout 5xx per region",
        "owner": "web-team",
        "due_on": None,
    }


def test_action_item__due_date_then_done_then_reopened__timeline_ledger_and_idempotent(
    incident, responder
):
    from datetime import timedelta

    from django.utils import timezone

    from incidents.services import action_item_done_set

    due = timezone.localdate() + timedelta(days=7)
    item = action_item_add(
        incident_id=incident.pk, title="Per-region alert", owner="web", due_on=due, actor=responder
    )
    assert item.due_on == due

    done = action_item_done_set(
        incident_id=incident.pk, item_id=item.pk, done=True, actor=responder
    )
    assert (done.done, done.done_by) == (True, responder) and done.done_at is not None
    again = action_item_done_set(
        incident_id=incident.pk, item_id=item.pk, done=True, actor=responder
    )
    assert again.done_at == done.done_at  # a second click changes nothing
    action_item_done_set(incident_id=incident.pk, item_id=item.pk, done=False, actor=responder)

    assert _timeline(incident)[-3:] == [
        (3, "system", f"action item: Per-region alert (owner web, due {due.isoformat()})"),
        (4, "system", "action item done: Per-region alert"),
        (5, "system", "action item reopened: Per-region alert"),
    ]
    assert _ledger(incident)[-3:] == [
        "incident.action_item",
        "incident.action_item_done",
        "incident.action_item_reopened",
    ]


def test_action_item__due_in_the_past_or_other_incidents_item__refused_nothing_written(
    incident, responder, commander
):
    from datetime import timedelta

    from django.utils import timezone

    from core.errors import NotFound
    from incidents.services import action_item_done_set, incident_declare

    with pytest.raises(InvalidInput, match="is in the past"):
        action_item_add(
            incident_id=incident.pk,
            title="late",
            owner="web",
            due_on=timezone.localdate() - timedelta(days=1),
            actor=responder,
        )
    assert not ActionItem.objects.exists()
    other = incident_declare(title="other", severity=3, actor=commander)
    item = action_item_add(incident_id=other.pk, title="x", owner="web", actor=responder)
    with pytest.raises(NotFound, match=f"INC-{incident.pk} has no action item {item.pk}"):
        action_item_done_set(incident_id=incident.pk, item_id=item.pk, done=True, actor=responder)
    assert not ActionItem.objects.get(pk=item.pk).done


@pytest.mark.parametrize(
    ("title", "owner"), [("", "web-team"), ("Alert per region", "  "), ("", "")]
)
def test_action_item_add__missing_title_or_owner__refused(incident, responder, title, owner):
    with pytest.raises(InvalidInput) as refused:
        action_item_add(incident_id=incident.pk, title=title, owner=owner, actor=responder)

    assert str(refused.value) == "an action item needs a title and an owner"
    assert ActionItem.objects.count() == 0
    assert _ledger(incident) == DECLARED_LEDGER


def test_action_item_add__viewer__refused(incident, viewer):
    with pytest.raises(TransitionRefused, match=r"^dee may not add action items$"):
        action_item_add(incident_id=incident.pk, title="Alert", owner="web", actor=viewer)

    assert ActionItem.objects.count() == 0
