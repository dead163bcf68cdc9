"""The Segments and Campaigns pages in a real headless Chromium, on seeded data (23 members,
13 of whom bought in the last month): a marketer builds a segment and watches its count change
as a condition is added and edited, saves it, makes a campaign from it, launches it after the
confirmation, and reads its results drawn against the control group. The results need
purchases after the launch: the test writes them as a till's are stored
(tests/console/campaign_seed.py), as the members would have bought."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from uuid import UUID

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.console.browsing import photograph, sign_in, until
from tests.console.campaign_seed import (
    BUYERS,
    NON_BUYERS,
    buy_after_launch,
    buy_recently,
    more_members,
)
from tests.console.conftest import MoreSeed

pytestmark = pytest.mark.browser

# The module's database, as seeded_more was given it (to write the purchases after launch).
DATABASE: dict[str, str] = {}
# Members of more_members who bought too: with the seed's buyers, those a purchase condition
# keeps.
RECENT = 10
EVERYONE, BOUGHT = BUYERS + NON_BUYERS, BUYERS + RECENT


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed:
    async def more(database_url: str) -> None:
        DATABASE["url"] = database_url
        await more_members(database_url)
        await buy_recently(database_url, RECENT)

    return more


def count(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.ID, "segment-count").text)


def test_build_a_segment_then_launch_a_campaign_and_read_its_results(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    browser.find_element(By.LINK_TEXT, "セグメント").click()
    until(browser, lambda b: "まだ保存されたセグメントはありません" in b.page_source)
    browser.find_element(By.LINK_TEXT, "新しいセグメント").click()
    until(browser, lambda b: b.find_elements(By.ID, "segment-count"))
    assert count(browser) == str(EVERYONE)

    # Adding a purchase condition: the builder comes back with it, and the count narrows.
    Select(browser.find_element(By.ID, "add_type")).select_by_value("purchase_count")
    browser.find_element(By.CSS_SELECTOR, "button[value=add]").click()
    until(browser, lambda b: b.find_elements(By.ID, "c1-at_least"))
    until(browser, lambda b: count(b) == str(BOUGHT))
    # Typing into a field counts again after a short pause, without a button.
    at_least = browser.find_element(By.ID, "c1-at_least")
    at_least.clear()
    at_least.send_keys("1000")
    until(browser, lambda b: count(b) == "0")
    at_least.clear()
    at_least.send_keys("1")
    until(browser, lambda b: count(b) == str(BOUGHT))
    browser.find_element(By.ID, "name").send_keys("最近買った会員")
    browser.find_element(By.ID, "description").send_keys("90日以内に1回以上購入した有効会員")
    browser.execute_script("window.scrollTo(0, 0)")
    photograph(browser, photos, "segment-builder")

    # A wrong value: the message next to the condition, the count withheld.
    days = browser.find_element(By.ID, "c1-days")
    days.clear()
    days.send_keys("0")
    until(browser, lambda b: "Expected `int` >= 1" in b.find_element(By.ID, "c1-error").text)
    assert not browser.find_elements(By.ID, "segment-count")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                           browser.find_element(By.ID, "c1-error"))
    photograph(browser, photos, "segment-builder-error")
    days.clear()
    days.send_keys("90")
    until(browser, lambda b: b.find_elements(By.ID, "segment-count"))
    assert browser.find_element(By.ID, "c1-error").text == ""

    browser.find_element(By.CSS_SELECTOR, "button[value=save]").click()
    until(browser, lambda b: "保存しました" in b.page_source)
    assert count(browser) == str(BOUGHT)
    browser.find_element(By.LINK_TEXT, "セグメント一覧へ").click()
    until(browser, lambda b: "最近買った会員" in b.page_source)
    photograph(browser, photos, "segments")

    # A campaign from it: half held back, 100 bonus points each.
    browser.find_element(By.LINK_TEXT, "新しいキャンペーン").click()
    until(browser, lambda b: b.find_elements(By.ID, "points"))
    browser.find_element(By.ID, "name").send_keys("冬のボーナス")
    browser.find_element(By.ID, "points").send_keys("100")
    holdout = browser.find_element(By.ID, "holdout_percent")
    holdout.clear()
    holdout.send_keys("34")
    browser.execute_script("window.scrollTo(0, 0)")
    photograph(browser, photos, "campaign-form")
    browser.find_element(By.CSS_SELECTOR, "form.campaign-form button[type=submit]").click()
    until(browser, lambda b: "キャンペーン：冬のボーナス" in b.page_source)
    campaign = re.search(r"/console/campaigns/([0-9a-f-]{36})", browser.current_url)
    assert campaign
    browser.find_element(By.LINK_TEXT, "実施する…").click()
    until(browser, lambda b: "を実施しますか" in b.page_source)
    reach = browser.find_element(By.CSS_SELECTOR, ".confirm").text
    # 13 buyers, 34% held back: 4 in control, 9 treated, 900 points.
    assert "現在の対象は 13 人です" in reach
    assert "施策を受けるのは 9 人です" in reach
    assert "合計 900 ポイント" in reach
    photograph(browser, photos, "campaign-launch")
    browser.find_element(By.XPATH, "//button[text()='今すぐ実施']").click()
    until(browser, lambda b: "実施しました" in b.page_source)
    assert "実施済み" in browser.find_element(By.CSS_SELECTOR, ".facts").text

    asyncio.run(buy_after_launch(DATABASE["url"], UUID(campaign.group(1)),
                                 treated_share=0.67, control_share=0.25))
    browser.find_element(By.LINK_TEXT, "結果").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "figure.uplift svg"))
    treated = browser.find_element(By.CSS_SELECTOR, "figure.uplift rect.treated")
    assert float(treated.get_attribute("width") or 0) > 0
    assert browser.find_element(By.CSS_SELECTOR, "figure.uplift rect.estimate")
    assert browser.find_element(By.CSS_SELECTOR, "figure.uplift path.interval").get_attribute("d")
    table = browser.find_element(By.CSS_SELECTOR, "table.results").text
    # 6 of 9 treated bought, 1 of 4 in control.
    assert "66.7%" in table
    assert "25.0%" in table
    photograph(browser, photos, "campaign-results")
    browser.find_element(By.LINK_TEXT, "キャンペーンへ戻る").click()
    browser.find_element(By.LINK_TEXT, "キャンペーン一覧へ").click()
    until(browser, lambda b: "冬のボーナス" in b.page_source)
    photograph(browser, photos, "campaigns")


def test_an_analyst_counts_without_names_and_cannot_save(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "analyst")
    browser.get(f"{console}/console/segments/new")
    until(browser, lambda b: b.find_elements(By.ID, "segment-count"))
    assert count(browser) == str(EVERYONE)
    assert not browser.find_elements(By.CSS_SELECTOR, "table.sample")
    assert not browser.find_elements(By.CSS_SELECTOR, "button[value=save]")
    photograph(browser, photos, "segment-builder-analyst")


def test_the_churn_model_and_verified_contacts_as_rows(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    browser.get(f"{console}/console/segments/new")
    until(browser, lambda b: b.find_elements(By.ID, "segment-count"))
    # Nobody of the seed proved a phone: "not verified" keeps everyone.
    Select(browser.find_element(By.ID, "add_type")).select_by_value("verified")
    browser.find_element(By.CSS_SELECTOR, "button[value=add]").click()
    until(browser, lambda b: b.find_elements(By.ID, "c1-channel"))
    Select(browser.find_element(By.ID, "c1-channel")).select_by_value("phone")
    Select(browser.find_element(By.ID, "c1-verified")).select_by_value("false")
    until(browser, lambda b: count(b) == str(EVERYONE))
    # Proved phones only: nobody.
    Select(browser.find_element(By.ID, "c1-verified")).select_by_value("true")
    until(browser, lambda b: count(b) == "0")
    Select(browser.find_element(By.ID, "c1-verified")).select_by_value("false")
    until(browser, lambda b: count(b) == str(EVERYONE))

    Select(browser.find_element(By.ID, "add_type")).select_by_value("churn_risk")
    browser.find_element(By.CSS_SELECTOR, "button[value=add]").click()
    until(browser, lambda b: b.find_elements(By.ID, "c2-p_alive_below"))
    share = browser.find_element(By.ID, "c2-p_alive_below")
    assert share.get_attribute("value") == "30"
    share.clear()
    share.send_keys("0")
    until(browser, lambda b: "0 より大きく 100 以下" in b.find_element(By.ID, "c2-error").text)
    assert not browser.find_elements(By.ID, "segment-count")
    share.clear()
    share.send_keys("30")
    until(browser, lambda b: b.find_elements(By.ID, "segment-count"))
    assert browser.find_element(By.ID, "c2-error").text == ""
    # No model has run: the at-risk flag decides, and the seed flags nobody.
    assert count(browser) == "0"
    browser.find_element(By.CSS_SELECTOR, "input[name='c2.not']").click()
    until(browser, lambda b: count(b) == str(EVERYONE))
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                           browser.find_element(By.ID, "c1-channel"))
    photograph(browser, photos, "segment-builder-more-kinds")
