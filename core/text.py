"""Text helpers every app shares: what a database, a hash or a log line cannot hold (found before
anything stores it), and how numbers and quotes are written for people."""

from collections.abc import Iterator
from decimal import Decimal
from typing import Any


def percent_text(value: Decimal | float | int) -> str:
    """5 -> "5%", 12.50 -> "12.5%": how people write rollout percentages."""
    return f"{Decimal(str(value)).normalize():f}%"


def clip(text: str, limit: int) -> str:
    """One line of at most `limit` characters, ending in … when cut."""
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text (a NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (\\u{ord(value[exc.start]):04x}), which is not text"
    return None


MAX_PATH_CHARS = 120


def _child_path(path: str, key: str | int) -> str:
    if len(path) > MAX_PATH_CHARS:
        return path
    if isinstance(key, int):
        return f"{path}[{key}]"
    if text_problem(key):
        key = ascii(key)  # the path is shown and logged: it must be text itself
    return f"{path}.{key}" if path else key


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any, int]]:
    """Every key and value under `value`, with its path and depth, without recursion."""
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        here, item, depth = stack.pop()
        yield here, item, depth
        if isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                child_path = _child_path(here, key if isinstance(key, str) else str(key))
                if isinstance(key, str):
                    yield child_path, key, depth + 1
                stack.append((child_path, child, depth + 1))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append((_child_path(here, index), item[index], depth + 1))


def _shown(path: str) -> str:
    if not path:
        return "(top)"
    return path if len(path) <= MAX_PATH_CHARS else path[:MAX_PATH_CHARS] + "…"


def unsafe_text(
    value: Any, *, max_depth: int | None = None, root: str = ""
) -> tuple[str, str] | None:
    """The first (path, problem) in a parsed document: text that cannot be stored, or nesting
    deeper than `max_depth`. None when every key and string can be stored."""
    for path, item, depth in _walk(value, root):
        if max_depth is not None and depth >= max_depth and isinstance(item, dict | list):
            return _shown(path), f"nested deeper than {max_depth} levels"
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return _shown(path), problem
    return None


def seconds_text(seconds: float) -> str:
    """4.2 -> "4.2 s", 180 -> "3 min", 5400 -> "1 h 30 min": a wait as a person reads it."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 and seconds != int(seconds) else f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")
