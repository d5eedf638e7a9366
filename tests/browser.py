"""A real browser for the page tests: Debian's Chromium driven by Playwright for Python.

Playwright's own browser builds are never downloaded (`playwright install`): the tests use
the system's Chromium, which `make test` installs with apt-get when it runs as root. Where
either is missing the tests skip, saying what to install.
"""

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
NEEDS = ("the page tests need Chromium and Playwright: "
         "apt-get install chromium fonts-thai-tlwg fonts-noto-color-emoji (as root; `make test` does it) "
         "and pip install playwright (never `playwright install`)")


def skip_without_browser() -> None:
    """Skip the calling test (or fixture) unless Chromium and Playwright are both installed;
    in CI (CI=true), where `make test` has installed them, fail instead."""
    missing = None if CHROMIUM.exists() else f"no {CHROMIUM}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = missing or "no playwright module"
    if missing:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(f"{missing}; {NEEDS}")


def screenshot_dir(tmp_path_factory) -> Path:
    """STUDIO_SCREENSHOTS when set (to keep the pictures), else a folder of this test run."""
    given = os.environ.get("STUDIO_SCREENSHOTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("studio-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
