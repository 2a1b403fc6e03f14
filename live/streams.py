"""Which streams exist, who may see them and how each is drawn. Apps register their stream kinds
in `ready()` from their own `streams.py`: those modules are the only code that renders a push."""

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.utils.html import escape

_STREAM_NAME = re.compile(r"^(?P<kind>[a-z][a-z_]{0,40})(?::(?P<key>[0-9]{1,18}))?$")

StateRenderer = Callable[[str], str]
RowsRenderer = Callable[[str, list[str]], str]


@dataclass(frozen=True)
class StreamKind:
    """`state(key)` draws everything the page shows of the stream (its rows included);
    `rows(key, refs)` draws the rows named by `refs` as they are now (an appended ledger entry, a
    changed flag). A kind has one or both."""

    permission: str
    state: StateRenderer | None = None
    rows: RowsRenderer | None = None


_KINDS: dict[str, StreamKind] = {}


class StreamNameInvalid(ValueError):
    pass


def stream_kind_register(
    *,
    kind: str,
    permission: str,
    state: StateRenderer | None = None,
    rows: RowsRenderer | None = None,
) -> None:
    if state is None and rows is None:
        raise ValueError(f"stream kind {kind!r} needs a state or a rows renderer")
    _KINDS[kind] = StreamKind(permission=permission, state=state, rows=rows)


def _match(name: str) -> re.Match[str]:
    match = _STREAM_NAME.match(name) if isinstance(name, str) else None
    if not match or match["kind"] not in _KINDS:
        raise StreamNameInvalid(f"unknown stream {name!r}")
    return match


def stream_kind(name: str) -> str:
    return _match(name)["kind"]


def stream_spec(name: str) -> tuple[StreamKind, str]:
    """The registered kind of a stream and its key (`plan:7` → the plan kind, "7")."""
    match = _match(name)
    return _KINDS[match["kind"]], match["key"] or ""


def stream_permission(name: str) -> str:
    return stream_spec(name)[0].permission


def session_group(session_key: str) -> str:
    """The group of every socket opened with one login session: logging out closes them."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def stream_dom_id(name: str) -> str:
    return "live-cursor-" + name.replace(":", "-")


def cursor_html(stream: str, seq: int) -> str:
    """Where the page stands on `stream`, sent after each frame: a reconnect resumes from it."""
    return (
        f'<span id="{stream_dom_id(stream)}" data-live-stream="{escape(stream)}" '
        f'data-live-seq="{seq}" hidden hx-swap-oob="true"></span>'
    )
