"""Headless Chromium for the end-to-end tests: Debian's ``chromium`` driven by Playwright;
nothing downloads a browser. On a machine without it the tests are skipped with the reason,
unless ``SCR_REQUIRE_BROWSER=1`` (as CI sets), where a missing browser fails them: a skip is
never reported as a pass there."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("SCR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
BROWSER_TIMEOUT_MS = 30_000


def require_browser() -> None:
    if CHROMIUM.exists():
        return
    reason = (
        f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) to run "
        "the browser tests; SCR_REQUIRE_BROWSER=1 makes a missing browser a failure"
    )
    if os.environ.get("SCR_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``), closed afterwards."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=BROWSER_TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            browser.close()
