import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def as_json(value: Any) -> str:
    """Flag settings as people type them in plan files and API calls: true, not True."""
    return json.dumps(value, default=str, ensure_ascii=False)
