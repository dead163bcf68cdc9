"""What the console's browser tests share: the service served as `make run` serves it, signing
in through the form, and the screenshots every page leaves (Japanese, seeded data) in
LOYALTY_TEST_SCREENSHOTS when set (docs/console.md: `docs/console`), else in the test's
temporary directory. The fixtures that use these live in tests/console/conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.console.seed import PASSWORD, staff_email
from tests.processes import free_port, wait_until_ready

T = TypeVar("T")
# Long enough for a page on a machine busy with the rest of the suite; a wait ends as soon as
# its condition holds.
WAIT_SECONDS = 20


def until(browser: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T],
          seconds: float = WAIT_SECONDS) -> T:
    """Waits until ``condition(browser)`` is truthy and returns it. An element that a page load
    or an htmx swap replaced while the condition read it only means: look again."""
    waiting = WebDriverWait(browser, seconds, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException))
    found: T = waiting.until(lambda b: _replaced_means_not_yet(condition, b))  # type: ignore[assignment]
    return found


def _replaced_means_not_yet(condition: Callable[[webdriver.Chrome], T],
                            browser: webdriver.Chrome) -> T | bool:
    """Chromium reports an element whose page went away mid-read as a node that "does not
    belong to the document", a plain WebDriverException rather than a stale element."""
    try:
        return condition(browser)
    except WebDriverException as error:
        if "does not belong to the document" in str(error):
            return False
        raise


@contextmanager
def serving(database: str, redis: str, data_dir: Path,
            environment: Mapping[str, str] | None = None) -> Iterator[str]:
    """The service, as `make run` serves it, on ``database``, with ``environment``'s settings
    besides: its base URL."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")},
           "LOYALTY_DATABASE_URL": database, "LOYALTY_REDIS_URL": redis,
           "LOYALTY_DATA_DIR": str(data_dir), "LOYALTY_PORT": str(port),
           "LOYALTY_MIGRATE_ON_START": "false", "LOYALTY_SCHEDULER": "off",
           "LOYALTY_LOG_LEVEL": "error", "LOYALTY_ARGON2_TIME_COST": "1",
           "LOYALTY_ARGON2_MEMORY_KIB": "8", "LOYALTY_ARGON2_PARALLELISM": "1",
           **(environment or {})}
    server = subprocess.Popen(  # noqa: S603 - this environment's own `loyalty` command
        [str(Path(sys.executable).parent / "loyalty"), "serve"], env=env,
        start_new_session=True, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, server, seconds=60)
        yield base
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def photograph(browser: webdriver.Chrome, photos: Path, name: str) -> None:
    """The page as the browser shows it now, saved as ``name``.png."""
    assert browser.save_screenshot(str(photos / f"{name}.png"))


def choose_language(browser: webdriver.Chrome, language: str) -> None:
    """Switches the console's language with the header's form, and waits for the page it
    answers with: navigating away before that answer arrives races it (CI met the race)."""
    Select(browser.find_element(By.ID, "language")).select_by_value(language)
    browser.find_element(By.CSS_SELECTOR, "form.language button").click()
    until(browser, lambda b: b.find_element(By.TAG_NAME, "html").get_attribute("lang")
          == language)


def sign_in(browser: webdriver.Chrome, base: str, role: str) -> None:
    """Signs in through the form as the seeded staff member of ``role``."""
    browser.get(f"{base}/console/sign-in")
    browser.find_element(By.ID, "email").send_keys(staff_email(role))
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    until(browser, lambda b: staff_email(role) in b.page_source)
