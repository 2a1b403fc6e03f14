import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def as_json(value: Any) -> str:
    """Flag settings as people type them in plan files and API calls: true, not True."""
    return json.dumps(value, default=str, ensure_ascii=False)


@register.filter
def payload_value(value: Any) -> str:
    """A ledger payload value: text as written, anything else as JSON."""
    return value if isinstance(value, str) else as_json(value)
