"""Loaded into every pytest process (pyproject's addopts, so the xdist controller too): without
Debian's chromium and chromedriver the console's browser tests are skipped and the run ends
with one line saying how to run them; with LOYALTY_TEST_BROWSER=required (.ci/run) they run
and fail instead, so CI never passes by skipping them."""

from __future__ import annotations

import os
import shutil

import pytest

# Another path for a machine whose chromium lives elsewhere (and to try the skip).
CHROMIUM = os.environ.get("LOYALTY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = "/usr/bin/chromedriver"
HOW = ("console browser tests skipped: no chromium here; `apt-get install -y chromium "
       "chromium-driver` runs them (.ci/run installs both)")


def browser_missing() -> bool:
    return not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER))


def _skipping() -> bool:
    return browser_missing() and os.environ.get("LOYALTY_TEST_BROWSER") != "required"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's chromium (tests/console)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _skipping():
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=HOW))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if _skipping() and any(HOW in str(getattr(report, "longrepr", "")) for report in skipped):
        terminalreporter.write_line(HOW, yellow=True)
