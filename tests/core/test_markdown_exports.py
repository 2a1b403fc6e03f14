"""The Markdown exports rendered as a wiki or a static site would (python-markdown, tables): no
text a person wrote becomes a script, an event handler, a link to `javascript:` or structure."""

from html.parser import HTMLParser

import markdown
import pytest
import yaml

from core.markdown import md_cell, md_text
from rollouts.selectors import plan_decisions_markdown

pytestmark = pytest.mark.django_db

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "[click](javascript:alert(3))",
    "<javascript:alert(4)>",
    '<a href="javascript:alert(5)">x</a>',
    "![i](javascript:alert(6))",
    "<div>\n<script>alert(7)</script>\n</div>",
    "# heading\n- item\n1. numbered\n> quote",
    "`code` *em* _em_ [ref]: javascript:alert(8)",
    "<svg/onload=alert(9)>",
]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def assert_inert(text: str) -> str:
    html = markdown.markdown(text, extensions=["tables"])
    parser = _Tags()
    parser.feed(html)
    for tag, attrs in parser.tags:
        assert tag not in {"script", "img", "svg", "iframe", "div"}, (tag, html[:400])
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        for value in attrs.values():
            assert "javascript:" not in (value or "").lower(), (tag, attrs)
    return html


def hostile_everywhere(value, counter=None):
    """Every string in `value` replaced by a hostile one, in turn (datetimes and numbers stay)."""
    counter = counter if counter is not None else iter(range(10**6))
    if isinstance(value, str):
        return HOSTILE[next(counter) % len(HOSTILE)]
    if isinstance(value, dict):
        return {k: hostile_everywhere(v, counter) for k, v in value.items()}
    if isinstance(value, list):
        return [hostile_everywhere(v, counter) for v in value]
    return value


def test_md_text__reads_as_written_and_renders_as_text():
    for text in HOSTILE:
        html = assert_inert(f"- {md_text(text)}")
        assert "alert(" in html or "heading" in html  # shown, not dropped
    assert md_text("retry at 09:30, 2 of 3 regions ok") == "retry at 09:30, 2 of 3 regions ok"
    assert md_cell("a | b\nc") == "a \\| b c"


def test_decisions_export__hostile_decisions__nothing_runs_or_links(django_user_model):
    from rollouts.services.decisions import decision_record
    from rollouts.services.plan_apply import plan_apply
    from tests.rollouts.plan_factories import plan_doc, step_doc

    tpm = django_user_model.objects.create_user(username="tpm_x")
    document = plan_doc(step_doc("a"))
    document["metadata"]["name"] = HOSTILE[0]
    plan = plan_apply(text=yaml.safe_dump(document), actor=None).plan
    for i, text in enumerate(HOSTILE):
        decision_record(
            plan_id=plan.pk,
            decided="persist",
            believed=text,
            observed=HOSTILE[(i + 1) % len(HOSTILE)],
            why=HOSTILE[(i + 2) % len(HOSTILE)],
            actor=tpm,
        )
    text = plan_decisions_markdown(plan=plan, base_url="https://stepwise.example")
    html = assert_inert(text)
    assert html.count("<h2>") == len(HOSTILE)
