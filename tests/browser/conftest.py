"""Debian's headless Chromium against a real Stepwise (uvicorn + Celery worker + beat)."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.serving import ROOT, served

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DEMO_PASSWORD = "stepwise-demo"
# A live push crosses the served app, its workers, the channel layer and the browser on a 2-core CI
# machine that is also running PostgreSQL and this suite: Playwright's 5 s default is too tight
# there (a push once took longer), and a genuine miss still fails, only later.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def stepwise_server(tmp_path_factory: pytest.TempPathFactory):
    with served(Path(tmp_path_factory.mktemp("server"))) as server:
        yield server.base


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser, stepwise_server):
    """`new_page()` -> a page in its own browser context (its own cookies), closed after the test."""
    contexts, violations = [], []

    def make():
        context = browser.new_context(
            base_url=stepwise_server, viewport={"width": 1366, "height": 820}
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        # Chromium reports every Content-Security-Policy refusal on the console: any test that
        # meets one fails (stepwise/csp.py: nothing on a page may need an exception).
        page.on(
            "console",
            lambda message: (
                violations.append(f"{page.url}: {message.text}")
                if "Content Security Policy" in message.text
                else None
            ),
        )
        return page

    yield make
    for context in contexts:
        context.close()
    assert violations == [], violations[:5]


def login(page, username: str, password: str = DEMO_PASSWORD) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
