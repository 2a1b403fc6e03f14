"""At a 390 x 844 phone, every page a role can reach never scrolls sideways (issue 16, item 1):
wide tables and timelines scroll inside their own box, the navigation inside the top bar."""

import re
from urllib.parse import urlparse

import pytest

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}
# Links that are not pages: exports, API answers, the ledger's raw JSON.
NOT_PAGES = re.compile(r"(\.md$|\.json$|\.csv$|\.yaml$|/api/|/ofrep/|/export|/logout|/admin/)")
MAX_PAGES = 40


def _shape(path: str) -> str:
    """Pages that differ only in an id or key are one page to look at."""
    return re.sub(r"/[^/]*\d[^/]*/", "/N/", path)


def _links(page) -> list[str]:
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
    paths = []
    for href in hrefs:
        parsed = urlparse(href)
        if parsed.netloc or not parsed.path.startswith("/") or NOT_PAGES.search(parsed.path):
            continue
        paths.append(parsed.path)
    return paths


def _crawl(page) -> list[str]:
    """Every page reachable in two clicks from the navigation, one per shape."""
    page.goto("/")
    seen_shapes, pages = set(), []
    frontier = _links(page)
    for depth in range(2):
        following = []
        for path in frontier:
            if _shape(path) in seen_shapes or len(pages) >= MAX_PAGES:
                continue
            seen_shapes.add(_shape(path))
            pages.append(path)
            if depth == 0:
                page.goto(path)
                following.extend(_links(page))
        frontier = following
    return pages


# tpm and commander see every control a viewer sees, and more.
@pytest.mark.parametrize("role", ["tpm", "commander"])
def test_phone__every_page_for_a_role__never_scrolls_sideways(browser, stepwise_server, role):
    context = browser.new_context(base_url=stepwise_server, viewport=PHONE)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        login(page, role)
        pages = _crawl(page)
        assert len(pages) >= 10, pages  # the crawl reached the app, not only the login page
        wide = {}
        for path in pages:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > PHONE["width"]:
                wide[path] = width
                screenshot(page, f"phone-wide-{role}-{_shape(path).strip('/').replace('/', '-')}")
        page.goto("/")
        screenshot(page, f"phone-portfolio-{role}")
        assert wide == {}, f"pages wider than {PHONE['width']} px at a phone: {wide}"
    finally:
        context.close()
