"""User text inside Markdown exports, inert: teams publish postmortems and decision logs to wikis
and static sites, where a raw `<script>` or `[x](javascript:…)` in a narration would run."""

import re
from typing import Any

# Inline: HTML is shown as text, and emphasis, code and link brackets are literal.
_INLINE = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "\\": "\\\\",
        "`": "\\`",
        "*": "\\*",
        "_": "\\_",
        "[": "\\[",
        "]": "\\]",
    }
)
# At the start of a line: what would make it a heading, a list item or a rule.
_BLOCK_MARK = re.compile(r"^([#+-])")
_LIST_NUMBER = re.compile(r"^(\d+)([.)])")


def _line(text: str) -> str:
    escaped = _BLOCK_MARK.sub(r"\\\1", text.strip().translate(_INLINE))
    return _LIST_NUMBER.sub(r"\1\\\2", escaped)


def md_text(value: Any, *, empty: str = "—", indent: str = "  ") -> str:
    """`value` as Markdown that reads as written and renders as text: HTML special characters as
    entities, Markdown punctuation escaped, continuation lines indented under a list item."""
    lines = [_line(line) for line in str(value if value is not None else "").splitlines()]
    text = f"\n{indent}".join(line for line in lines if line)
    return text or empty


def md_cell(value: Any, *, empty: str = "—") -> str:
    """A table cell: one line, and a pipe cannot end the cell early."""
    return md_text(" ".join(str(value if value is not None else "").split()), empty=empty).replace(
        "|", "\\|"
    )
