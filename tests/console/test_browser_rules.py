"""The earning rules and tiers pages in a real headless Chromium, as a marketer uses them: read the
rules, submit an invalid edit and see the message by the field, save a valid change, simulate a
purchase and read its trace, compare the two versions, and open the tiers (fixtures:
tests/console/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import msgspec
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from loyalty.core.db import init_connection
from loyalty.points.rules import current_rules, save_rules
from schemas.rules import (
    BaseRate,
    CategoryIs,
    FirstPurchaseBonus,
    Multiplier,
    Tier,
    TierProgramme,
    WeekdayIs,
)
from tests.console.browsing import photograph, sign_in, until
from tests.console.conftest import MoreSeed

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed:
    async def more(database_url: str) -> None:
        """A programme as a shop would run it: a weekend multiplier on food, a first-purchase
        bonus and three tiers, the seeded members spread over them."""
        conn = await asyncpg.connect(database_url)
        try:
            await init_connection(conn)
            rules = msgspec.structs.replace(
                (await current_rules(conn)).rules,
                base=BaseRate(points=1, per_amount=100),
                multipliers=[
                    Multiplier(name="週末の食品2倍", percent=200,
                               when=[WeekdayIs(days=["sat", "sun"]),
                                     CategoryIs(categories=["food"])]),
                    Multiplier(name="コーヒー豆1.5倍", percent=150,
                               when=[CategoryIs(categories=["coffee"])])],
                bonuses=[FirstPurchaseBonus(points=100)],
                tiers=TierProgramme(levels=[
                    Tier(code="bronze", name="ブロンズ", threshold=0),
                    Tier(code="silver", name="シルバー", threshold=30_000,
                         multiplier_percent=120),
                    Tier(code="gold", name="ゴールド", threshold=100_000,
                         multiplier_percent=150)]))
            await save_rules(conn, rules, staff_id=None)
            await conn.execute(
                """
                with ranked as (select member_id, row_number() over (order by member_number) as n
                                  from members)
                update point_balances b set tier = case r.n % 3
                       when 0 then 'gold' when 1 then 'silver' else 'bronze' end
                  from ranked r where r.member_id = b.member_id
                """)
        finally:
            await conn.close()

    return more


def _main(browser: webdriver.Chrome) -> str:
    return browser.find_element(By.TAG_NAME, "main").text


def _show(browser: webdriver.Chrome, element: WebElement) -> None:
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)


def test_a_marketer_edits_simulates_and_compares_the_rules(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    browser.find_element(By.LINK_TEXT, "ポイント付与ルール").click()
    until(browser, lambda b: b.find_elements(By.ID, "base-title"))
    page = _main(browser)
    assert "バージョン 2" in page
    assert "週末の食品2倍" in page
    assert "曜日が次のいずれか: 土, 日" in page
    assert "初回購買: 100 ポイント" in page
    photograph(browser, photos, "rules")

    # An invalid edit: shown again with the field named, nothing saved.
    browser.find_element(By.LINK_TEXT, "ルールを編集").click()
    until(browser, lambda b: b.find_elements(By.ID, "rules"))
    browser.execute_script(
        "const t = document.getElementById('rules');"
        "t.value = t.value.replace('\"per_amount\": 100', '\"per_amount\": 0');")
    browser.find_element(By.CSS_SELECTOR, ".rules-editor button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.ID, "rules-problem"))
    problem = browser.find_element(By.ID, "rules-problem").text
    assert "保存されていません" in problem
    assert "base.per_amount" in problem
    assert "Expected `int` >= 1" in problem
    textarea = browser.find_element(By.ID, "rules")
    assert textarea.get_attribute("aria-invalid") == "true"
    assert '"per_amount": 0' in (textarea.get_attribute("value") or "")  # kept, to correct
    photograph(browser, photos, "rules-edit-error")

    # Corrected and changed: version 3.
    browser.execute_script(
        "const t = document.getElementById('rules');"
        "t.value = t.value.replace('\"per_amount\": 0', '\"per_amount\": 50');")
    browser.find_element(By.CSS_SELECTOR, ".rules-editor button[type=submit]").click()
    until(browser, lambda b: "バージョン 3 を保存しました" in _main(b))
    assert "支払額 ￥50 ごとに 1 ポイント" in _main(browser)

    # Simulate a purchase of coffee at the gold tier: the trace the API returns.
    browser.find_element(By.ID, "store_code").send_keys("SHIBUYA")
    total = browser.find_element(By.ID, "total")
    total.clear()
    total.send_keys("3000")
    Select(browser.find_element(By.ID, "tier")).select_by_value("gold")
    cells = browser.find_elements(By.CSS_SELECTOR, ".sim-lines tbody tr")[0] \
        .find_elements(By.TAG_NAME, "input")
    for cell, value in zip(cells, ["BEAN-01", "coffee", "2", "1500"], strict=True):
        cell.send_keys(value)
    browser.find_element(By.XPATH, "//button[text()='購買をシミュレーション']").click()
    until(browser, lambda b: "計算過程" in b.find_element(By.ID, "simulation").text)
    trace = browser.find_element(By.ID, "simulation").text
    # 3000 / 50 = 60 at 150% (coffee) = 90, gold ×1.5 = 135.
    assert "135 ポイント" in trace
    assert "ゴールド tier" in trace
    assert "コーヒー豆1.5倍" in trace
    _show(browser, browser.find_element(By.CSS_SELECTOR, ".sim-lines"))
    photograph(browser, photos, "rules-simulation")

    # The history, and the diff between the two versions.
    history = browser.find_element(By.ID, "history-title")
    _show(browser, history)
    assert "marketer@staff.example" in browser.find_element(By.CSS_SELECTOR, ".history").text
    browser.find_element(By.LINK_TEXT, "バージョン 2 と比較").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "table.diff"))
    assert "バージョン 2 から 3 への変更点" in _main(browser)
    removed = browser.find_elements(By.CSS_SELECTOR, "table.diff tr.removed")
    added = browser.find_elements(By.CSS_SELECTOR, "table.diff tr.added")
    assert len(removed) == 1
    assert removed[0].find_element(By.CLASS_NAME, "sign").text == "−"
    assert '"per_amount": 100' in removed[0].text
    assert len(added) == 1
    assert added[0].find_element(By.CLASS_NAME, "sign").text == "+"
    assert '"per_amount": 50' in added[0].text
    photograph(browser, photos, "rules-diff")


def test_a_marketer_reads_the_tiers_and_a_bad_threshold_is_shown_by_its_field(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    browser.find_element(By.LINK_TEXT, "ランク").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "table.tiers"))
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "table.tiers tbody tr")]
    assert len(rows) == 3
    assert rows[1].startswith("シルバー silver ￥30,000 基本の 120%")
    counts = [int(row.split()[-1]) for row in rows]
    assert sum(counts) == 3  # the three seeded members, each in a level
    photograph(browser, photos, "tiers")

    browser.find_element(By.LINK_TEXT, "ランクを編集").click()
    until(browser, lambda b: b.find_elements(By.ID, "threshold-2"))
    threshold = browser.find_element(By.ID, "threshold-2")
    threshold.clear()
    threshold.send_keys("10万")
    browser.find_element(By.CSS_SELECTOR, ".tiers-editor button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.ID, "threshold-2-problem"))
    assert "Expected `int`, got `str`" in browser.find_element(By.ID, "threshold-2-problem").text
    assert browser.find_element(By.ID, "threshold-2").get_attribute("value") == "10万"
    photograph(browser, photos, "tiers-edit-error")
