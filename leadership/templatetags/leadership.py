from django import template
from django.utils.html import format_html

from signals.measurements import duration_spec
from signals.models import SLO
from signals.slo_spec import THRESHOLD_OPS
from signals.slos import ALERT_RULES, SLOStatus

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    """0.99912 -> "99.912%" (trailing zeros dropped); None -> "—"."""
    if value is None:
        return "—"
    text = f"{value * 100:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


@register.simple_tag
def window(slo: SLO) -> str:
    if slo.rolling:
        return f"{slo.window_text or duration_spec(slo.window_seconds)} rolling"
    return f"calendar {slo.window_text}"


@register.simple_tag
def budget_bar(status: SLOStatus) -> str:
    remaining = status.budget_remaining
    if remaining is None:
        return format_html('<span class="muted">{}</span>', "no data")
    width = max(0.0, min(remaining, 1.0)) * 100
    tone = "bad" if remaining <= 0 else "warn" if remaining < 0.25 else "ok"
    return format_html(
        '<span class="budget"><span class="progress budget-{}"><span style="width:{}%"></span>'
        "</span> {}</span>",
        tone,
        f"{width:.1f}",
        percent(remaining, 1),
    )


@register.simple_tag
def burn_class(rate: float | None, slo: SLO) -> str:
    """Colour a burn rate by the alert threshold it would cross for this SLO's window."""
    if rate is None:
        return "burn-none"
    if rate > ALERT_RULES[0].threshold(slo.window_seconds):
        return "burn-page"
    if rate > 1:
        return "burn-high"
    return "burn-ok"


@register.filter
def get_item(mapping: dict, key: object) -> object:
    return mapping.get(key)


@register.filter
def op_symbol(op: str) -> str:
    return THRESHOLD_OPS.get(op, op)


@register.simple_tag
def duration(seconds: int) -> str:
    return duration_spec(seconds)
