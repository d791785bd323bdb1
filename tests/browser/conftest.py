"""The chat page in a real browser: the Debian ``chromium`` package driven by
Playwright, against ``gemini-backend serve`` on a fresh PostgreSQL database
with the offline model, its codes mailed to a test SMTP server.

Without chromium (``CHROMIUM`` names another binary) these tests are skipped
with the reason; ``.ci/run`` installs it. A failing test saves a screenshot of
its page in ``.artifacts/browser/``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.live import live_server  # noqa: F401
from tests.integration.conftest import (  # noqa: F401
    database_url,
    pg_admin,
    pg_server_url,
    template_database,
)
from tests.integration.smtp import smtp_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts" / "browser"
# `make screenshots` sets it: the README's pictures of the page, taken by the tests.
SCREENSHOTS = os.environ.get("SCREENSHOTS_DIR")


def screenshot(page: Any, name: str) -> None:
    """The page as it is now, for the README, when SCREENSHOTS_DIR is set."""
    if SCREENSHOTS:
        folder = Path(SCREENSHOTS)
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"))


def chromium_path() -> str | None:
    named = os.environ.get("CHROMIUM")
    return named if named else shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Chromium, for one test. Not for the session: Playwright's synchronous API
    keeps an event loop running on this thread while it is open, and the
    asynchronous tests that follow need the thread's loop free."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium: apt-get install chromium (or set CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            # Containers rarely allow chromium's own sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page (its own storage); a screenshot of it if the test fails,
    and every script error on it fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
        assert not errors, f"the page raised: {errors}"
    finally:
        if request.node.stash.get(FAILED, False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / f"{request.node.name}.png"
            opened.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failed page: {shot}")
        context.close()
