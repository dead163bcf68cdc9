"""The segment builder on a programme past the exact-count limit, in a real headless Chromium:
the console is served with the limit at 1,000 members and 5,000 more written, so the builder
shows an estimate with its range, and "Count exactly" replaces it with the count, in Japanese
and in English."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.console.browsing import choose_language, photograph, sign_in, until
from tests.console.conftest import MoreSeed
from tests.factories import make_members, query

pytestmark = pytest.mark.browser

CROWD = 5000
DATABASE: dict[str, str] = {}


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed:
    async def more(database_url: str) -> None:
        DATABASE["url"] = database_url
        await make_members(database_url, CROWD)
        await query(database_url, "analyze members")

    return more


@pytest.fixture(scope="module")
def console_environment() -> dict[str, str]:
    return {"LOYALTY_SEGMENT_EXACT_COUNT_UP_TO": "1000",
            "LOYALTY_SEGMENT_SAMPLE_MEMBERS": "1000"}


def active_members() -> int:
    rows = asyncio.run(query(DATABASE["url"],
                             "select count(*) from members where status = 'active'"))
    return int(rows[0][0])


def figures(text: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", text)]


def test_a_marketer_sees_an_estimate_then_counts_exactly(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    active = active_members()
    sign_in(browser, console, "marketer")
    browser.get(f"{console}/console/segments/new")
    until(browser, lambda b: b.find_elements(By.ID, "segment-estimate"))
    shown = browser.find_element(By.ID, "segment-count")
    assert shown.get_attribute("data-estimated") == "true"
    assert shown.text.startswith("約 ")
    # "会員 N 人を抽出して推定しました。実際の人数はおそらく L〜H 人です。"
    sampled, low, high = figures(browser.find_element(By.ID, "segment-estimate").text)
    assert sampled < active
    assert low <= figures(shown.text)[0] <= high
    assert low <= active <= high
    photograph(browser, photos, "segment-builder-estimate")

    browser.find_element(By.XPATH, "//button[text()='正確に数える']").click()
    until(browser, lambda b: not b.find_elements(By.ID, "segment-estimate"))
    assert browser.find_element(By.ID, "segment-count").text == f"{active:,}"
    assert browser.find_element(By.ID, "segment-count").get_attribute("data-estimated") is None
    photograph(browser, photos, "segment-builder-exact")

    # Editing a condition counts again, by estimate: the exact count was for those rows.
    browser.find_element(By.CSS_SELECTOR, "input[name='c0.statuses'][value='dormant']").click()
    until(browser, lambda b: b.find_elements(By.ID, "segment-estimate"))


def test_in_english_and_when_the_sample_finds_nobody(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "analyst")
    choose_language(browser, "en")
    browser.get(f"{console}/console/segments/new")
    until(browser, lambda b: b.find_elements(By.ID, "segment-estimate"))
    assert browser.find_element(By.ID, "segment-count").text.startswith("about ")
    assert "probably between" in browser.find_element(By.ID, "segment-estimate").text
    # Only suspended members, of whom there are none among the sample.
    browser.find_element(By.CSS_SELECTOR, "input[name='c0.statuses'][value='active']").click()
    browser.find_element(By.CSS_SELECTOR, "input[name='c0.statuses'][value='suspended']").click()
    until(browser, lambda b: "None of the" in b.find_element(By.ID, "segment-estimate").text)
    # Said as a bound, not as "about 0": the sample cannot tell none from a few.
    assert re.fullmatch(r"fewer than \d+", browser.find_element(By.ID, "segment-count").text)
    assert "No member matches" not in browser.page_source
    photograph(browser, photos, "segment-builder-estimate-none-en")
    browser.find_element(By.XPATH, "//button[text()='Count exactly']").click()
    until(browser, lambda b: not b.find_elements(By.ID, "segment-estimate"))
    assert browser.find_element(By.ID, "segment-count").text == "0"
    assert "No member matches" in browser.page_source
    choose_language(browser, "ja")
