"""Helpers for the real-browser tests: Debian's headless Chromium driven by Playwright.

Playwright's own browser download (``playwright install``) is never used: the browser is the
distribution's ``chromium`` package (``.ci/run`` installs it), so CI needs no network access
beyond apt and the package index. The tests skip, saying why, where it is missing, except
under ``CI``, where a missing browser is an error: the browser test must run there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import django.contrib.admin

CHROMIUM = Path(os.environ.get("AUTHZ_TEST_CHROMIUM", "/usr/bin/chromium"))
# Headless, and nothing that reaches out to the network or to a profile on its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".test-results" / "screenshots"
# The admin's CSS, JS and images, served by the live server (see ADMIN_STATIC_SETTINGS).
ADMIN_STATIC_ROOT = Path(django.contrib.admin.__file__).resolve().parent / "static"
ADMIN_STATIC_SETTINGS = {"STATIC_URL": "/static/", "STATIC_ROOT": str(ADMIN_STATIC_ROOT)}


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return (
            f"no Chromium at {CHROMIUM} (Debian/Ubuntu: apt-get install chromium "
            "chromium-driver; or set AUTHZ_TEST_CHROMIUM)"
        )
    return None


@contextmanager
def chromium_page(name: str, width: int = 1280, height: int = 900) -> Iterator:
    """A fresh browser and page; on an exception inside the block, a screenshot of the page
    as it then was (``<name>-failure.png``) before the exception goes on.

    No ORM calls inside the block: Playwright's sync API runs an asyncio loop in this thread,
    and Django then hands this thread other database connections than the test's (on
    in-memory SQLite, an empty database). Seed before, check the database after.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(15_000)
            try:
                yield page
            except BaseException:
                try:
                    path = screenshot(page, f"{name}-failure")
                    print(f"screenshot of the page when the test failed: {path}")
                except Exception as exc:  # the original failure matters more
                    print(f"no screenshot of the failure: {exc}")
                raise
        finally:
            browser.close()


def click_and_load(page, target, url: str) -> None:
    """Click ``target`` (a selector or a locator) and wait until the page it leads to, at
    ``url`` (a glob), has loaded. Reading the next page straight after a click can catch its
    HTML half parsed: an element already attached, its text not yet there (a CI run once read
    an empty message this way)."""
    (page.locator(target) if isinstance(target, str) else target).click()
    page.wait_for_url(url, wait_until="load")


def screenshot(page, name: str) -> Path:
    """Save a screenshot of the whole page under .test-results/screenshots/ and return its
    path. The window is stretched to the page's height first, rather than using Playwright's
    ``full_page``, which draws the admin's sticky sidebar halfway down the image."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    size = page.viewport_size
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(height, size["height"])})
    try:
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)
    return path
