"""The rule backtest in a real headless Chromium, as a marketer uses it: a draft in the rules
editor with double points at one store, taken unsaved to the backtest form, and the comparison
per tier and per store (fixtures: tests/console/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.console.browsing import photograph, sign_in, until
from tests.console.conftest import MoreSeed
from tests.console.test_backtest_http import give_lines

pytestmark = pytest.mark.browser

DOUBLE_AT_UMEDA = {"name": "梅田店ポイント2倍", "percent": 200,
                   "when": [{"type": "store", "stores": ["UMEDA"]}]}


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed:
    return give_lines


def test_a_marketer_backtests_double_points_at_one_store(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    browser.find_element(By.LINK_TEXT, "ポイント付与ルール").click()
    until(browser, lambda b: b.find_elements(By.ID, "base-title"))
    assert browser.find_elements(By.LINK_TEXT, "過去の購買でルールを試す")
    browser.find_element(By.LINK_TEXT, "ルールを編集").click()
    until(browser, lambda b: b.find_elements(By.ID, "rules"))
    # A draft in the editor, not saved: the rules in force with double points at Umeda.
    browser.execute_script(
        "const t = document.getElementById('rules');"
        "t.value = t.value.replace('\"multipliers\": []', arguments[0]);",
        f'"multipliers": [{json.dumps(DOUBLE_AT_UMEDA, ensure_ascii=False)}]')
    browser.find_element(By.XPATH, "//button[text()='この下書きでバックテスト']").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".backtest-form"))
    draft = browser.find_element(By.ID, "rules").get_attribute("value") or ""
    assert "梅田店ポイント2倍" in draft
    photograph(browser, photos, "rules-backtest-form")
    browser.find_element(By.CSS_SELECTOR, ".backtest-form button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#backtest[data-state=done]"))

    stores = {row.find_element(By.TAG_NAME, "th").text:
              [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
              for row in browser.find_elements(
                  By.CSS_SELECTOR, "section[aria-labelledby=backtest-stores] tbody tr")}
    assert set(stores) == {"SHIBUYA", "UMEDA"}
    purchases, earned, proposed, difference = stores["UMEDA"]
    assert int(proposed.replace(",", "")) >= 2 * int(earned.replace(",", "")) > 0
    assert difference.startswith("+")
    assert int(purchases) > 0
    assert stores["SHIBUYA"][3] == "0"
    tiers = browser.find_element(By.CSS_SELECTOR, "section[aria-labelledby=backtest-tiers]")
    assert "ランクなし" in tiers.text
    liability = browser.find_element(By.CSS_SELECTOR, ".backtest-liability").text
    assert f"{difference} ポイント" in liability
    photograph(browser, photos, "rules-backtest")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", tiers)
    photograph(browser, photos, "rules-backtest-stores")
