"""The console's browser fixtures: Debian's chromium through its chromedriver (Selenium), never
a downloaded build (tests/console/plugin.py skips them where it is missing), and the service on
a seeded database of each test module's own (a module adds data of its own on top through a
``seeded_more`` fixture it defines, taking the database URL)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from loyalty.core.db import with_database
from loyalty.core.embedded import ServiceUrls
from loyalty.core.settings import Settings
from tests.conftest import clone_database
from tests.console.browsing import serving
from tests.console.plugin import CHROMEDRIVER, CHROMIUM, browser_missing
from tests.console.promotions_seed import Promotions, seed_promotions
from tests.console.seed import seed

# What a module adds to the common seed, given the database's URL (none by default).
MoreSeed = Callable[[str], Awaitable[None]]


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


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed | None:
    """Overridden by a module that needs more than tests/console/seed.py writes."""
    return None


@pytest.fixture(scope="module")
def console_environment() -> dict[str, str]:
    """Overridden by a module that serves the console with other settings (``LOYALTY_*``)."""
    return {}


@pytest.fixture(scope="module")
async def console(
    maintenance: asyncpg.Connection, template_db: str, servers: ServiceUrls,
    tmp_path_factory: pytest.TempPathFactory, seeded_more: MoreSeed | None,
    console_environment: dict[str, str],
) -> AsyncIterator[str]:
    """The service on a seeded database of the module's own: the base URL."""
    name = await clone_database(maintenance, template_db)
    url = with_database(servers.database_url, name)
    try:
        await seed(url)
        if seeded_more is not None:
            await seeded_more(url)
        with serving(url, servers.redis_url, tmp_path_factory.mktemp("console"),
                     console_environment) as base:
            yield base
    finally:
        await maintenance.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def browser(chromium: webdriver.Chrome, console: str) -> webdriver.Chrome:
    """The module's browser, signed out and in the default language."""
    chromium.get(f"{console}/console/sign-in")
    chromium.delete_all_cookies()
    return chromium


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("LOYALTY_TEST_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def promotions(settings: Settings) -> Promotions:
    """The console's seed, and the promotions of tests/console/promotions_seed.py on it (the
    coupons and events pages' tests)."""
    assert settings.database_url
    await seed(settings.database_url)
    return await seed_promotions(settings.database_url)
