"""How people name what a ledger entry is about. Entries carry ids; people have keys (a plan's
key, `plan/step`, `INC-12`). The apps that own those keys register how to turn one into an id,
because the ledger sits below them and may not import them."""

from collections.abc import Callable

REFERENCE_KINDS = ("plan", "step", "incident")

_resolvers: dict[str, Callable[[str], int | None]] = {}


def reference_register(*, kind: str, resolve: Callable[[str], int | None]) -> None:
    """`resolve(text)` gives the id a person's key names, or None when nothing has that key."""
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"unknown reference kind {kind!r}")
    _resolvers[kind] = resolve


def reference_resolve(*, kind: str, text: str) -> int:
    """The id `text` names: a number is an id; anything else is a key the owning app resolves.
    ValueError with the reason a person can act on when it names nothing."""
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"{kind} ids start at 1")
        return int(text)
    resolve = _resolvers.get(kind)
    found = resolve(text) if resolve else None
    if found is None:
        raise ValueError(f"no {kind} is called {text!r}")
    return found
