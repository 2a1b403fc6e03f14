"""The incident rules as pure functions: the console that greys a control out and the service that
refuses the click call the same function, so both give the same reason."""

import re

from incidents.models import Change, Hypothesis
from rollouts.models import FlagVersion

# What people type when they mean "no revert". A change that cannot say how it is undone has no
# place in an incident; one that truly needs no undo says why ("nothing to undo: read-only").
PLACEHOLDER_REVERTS = frozenset(
    {
        "n/a",
        "na",
        "n.a",
        "not applicable",
        "none",
        "no",
        "nope",
        "nothing",
        "nil",
        "null",
        "tbd",
        "tba",
        "todo",
        "to do",
        "later",
        "idk",
        "no revert",
        "x",
    }
)


def change_blocker(
    *, hypothesis: Hypothesis | None, in_progress: Change | None, revert: bool = False
) -> str | None:
    """Why a change (or a one-click revert, which is a change) cannot start now, or None:
    one hypothesis at a time is tested by one change at a time."""
    if hypothesis is None:
        return (
            "state a hypothesis first: a revert tests one too"
            if revert
            else "state a hypothesis first: a change tests one"
        )
    if in_progress is not None:
        return (
            f"change “{in_progress.description}” is in progress: verify it (hold or revert) "
            "before starting another"
        )
    return None


def revert_plan_problem(text: str, *, flag_change: bool) -> str | None:
    """Why `text` is not a revert, or None. A flag change may leave it empty: its revert is
    restoring the version before it (`flag_revert_plan`)."""
    text = text.strip()
    if not text:
        return None if flag_change else "every change names its revert before it starts"
    said = re.sub(r"[\s.!]+$", "", text.lower())
    if not re.search(r"\w", said) or said in PLACEHOLDER_REVERTS:
        return (
            f"“{text}” is not a revert: say how this change is undone before it starts (when "
            "nothing needs undoing, say why, e.g. “nothing to undo: the warm-up only reads”)"
        )
    return None


def flag_revert_plan(version: FlagVersion) -> str:
    """ "restore new-login v6 (on at 5%)": the revert of a flag change made on top of `version`."""
    return f"restore {version.flag.key} v{version.number} ({version.settings_text()})"


def flag_move(before: FlagVersion, after: FlagVersion, *, verb: str = "") -> str:
    """ "new-login reverted: on at 25% (v7) → on at 5% (v8)": a flag line for the timeline."""
    head = f"{after.flag.key} {verb}".rstrip()
    return (
        f"{head}: {before.settings_text()} (v{before.number}) → "
        f"{after.settings_text()} (v{after.number})"
    )
