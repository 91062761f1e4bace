"""What every browser test shares: Debian's chromium, its offline flags, and the skip-or-fail rule.

Chromium is Debian's package (`apt-get install chromium`), driven by pip's playwright with
``executable_path``; `playwright install` cannot work on machines without internet. Without
chromium or playwright a test is skipped with the reason, except under ``CI=true``, where the
browser tests must run and a missing piece is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: This machine has no network: chromium must not try (and must not need a GPU or a sandbox).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` unless ``condition``; under ``CI=true`` fail instead."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser test must run)")
    pytest.skip(reason)


def sync_playwright_or_skip(*modules: str):
    """``playwright.sync_api.sync_playwright`` once chromium and ``modules`` (e.g. jupyterlab) are there."""
    require(CHROMIUM.exists(), f"{CHROMIUM} not installed (apt-get install chromium)")
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            require(False, f"{name} not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright (pip) not installed")
    return sync_playwright
