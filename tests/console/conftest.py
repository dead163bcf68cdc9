"""The browser the console's tests drive: Debian's chromium through its chromedriver (Selenium),
never a downloaded build (tests/console/plugin.py skips them where it is missing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.console.plugin import CHROMEDRIVER, CHROMIUM, browser_missing


@pytest.fixture(scope="module")
def chromium() -> Iterator[webdriver.Chrome]:
    if browser_missing():
        pytest.fail(f"LOYALTY_TEST_BROWSER=required and {CHROMIUM} or {CHROMEDRIVER} is "
                    "missing: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--lang=ja"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
