"""Which streams exist and who may see them. Apps register their stream kinds in `ready()`."""

import hashlib
import re

_STREAM_NAME = re.compile(r"^(?P<kind>[a-z][a-z_]{0,40})(?::(?P<key>[0-9]{1,18}))?$")
_KIND_PERMISSIONS: dict[str, str] = {}


class StreamNameInvalid(ValueError):
    pass


def stream_kind_register(*, kind: str, permission: str) -> None:
    _KIND_PERMISSIONS[kind] = permission


def stream_kind(name: str) -> str:
    match = _STREAM_NAME.match(name) if isinstance(name, str) else None
    if not match or match["kind"] not in _KIND_PERMISSIONS:
        raise StreamNameInvalid(f"unknown stream {name!r}")
    return match["kind"]


def stream_permission(name: str) -> str:
    return _KIND_PERMISSIONS[stream_kind(name)]


def stream_group(name: str) -> str:
    """Channels group names allow only [a-zA-Z0-9._-]."""
    return "stream." + name.replace(":", ".")


def session_group(session_key: str) -> str:
    """The group of every socket opened with one login session: logging out closes them."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def stream_dom_id(name: str) -> str:
    return "live-cursor-" + name.replace(":", "-")
