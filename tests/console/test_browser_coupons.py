"""The Coupons and Events pages in a real headless Chromium, on seeded data: a marketer
creates a coupon template (after a mistake on the form), generates a batch of codes and
downloads it, issues the template to a segment, then opens the events and an event's page.
An analyst reads the same pages without their buttons."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.console.browsing import photograph, sign_in, until
from tests.console.conftest import MoreSeed
from tests.console.promotions_seed import EVENT, SEGMENT, TEMPLATE, seed_promotions

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed:
    async def more(database_url: str) -> None:
        await seed_promotions(database_url)

    return more


@contextmanager
def whole_page(browser: webdriver.Chrome) -> Iterator[None]:
    """The window as tall as the page while it is photographed, so a long form shows whole."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(900, min(int(height) + 140, 4000)))
    try:
        yield
    finally:
        browser.set_window_size(1280, 900)


def _wait_for(browser: webdriver.Chrome, text: str) -> None:
    """Until the page's main part says ``text`` (the previous page may be going away)."""
    until(browser, lambda b: text in b.find_element(By.TAG_NAME, "main").text)


def test_a_marketer_makes_a_coupon_codes_and_an_issue_then_opens_events(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    browser.find_element(By.LINK_TEXT, "クーポン").click()
    _wait_for(browser, TEMPLATE)
    photograph(browser, photos, "coupons")

    browser.find_element(By.LINK_TEXT, "新しいクーポンテンプレート").click()
    _wait_for(browser, "割引の種類")
    browser.find_element(By.ID, "name").send_keys("年末感謝 1,000円引き")
    browser.find_element(By.ID, "amount").send_keys("0")
    browser.find_element(By.ID, "min_spend").send_keys("5000")
    browser.find_element(By.CSS_SELECTOR, "form.coupon-form button[type=submit]").click()
    _wait_for(browser, "テンプレートは保存されていません")
    error = browser.find_element(By.ID, "amount-error")
    assert "1以上の金額" in error.text
    assert browser.find_element(By.ID, "amount").get_attribute("aria-invalid") == "true"
    # What was typed stays in the form.
    assert browser.find_element(By.ID, "name").get_attribute("value") == "年末感謝 1,000円引き"
    with whole_page(browser):
        photograph(browser, photos, "coupon-form-error")
    amount = browser.find_element(By.ID, "amount")
    amount.clear()
    amount.send_keys("1000")
    Select(browser.find_element(By.ID, "validity_kind")).select_by_value("days_after_issue")
    browser.find_element(By.ID, "days").send_keys("30")
    browser.find_element(By.CSS_SELECTOR, "form.coupon-form button[type=submit]").click()
    until(browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == "年末感謝 1,000円引き")
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "配布から30日間" in main
    assert "このテンプレートのコードはまだ発行されていません" in main

    browser.find_element(By.ID, "count").send_keys("20")
    browser.find_element(By.ID, "prefix").send_keys("NY")
    browser.find_element(By.CSS_SELECTOR, ".batches form button").click()
    _wait_for(browser, "コードを発行しました")
    link = browser.find_element(By.CSS_SELECTOR, "a.download")
    assert "CSV（20件）" in link.text
    with whole_page(browser):
        photograph(browser, photos, "coupon-template-batches")
    href = link.get_attribute("href")
    assert href
    session = {c["name"]: c["value"] for c in browser.get_cookies()}
    download = httpx.get(href, cookies=session)
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"].startswith("attachment; filename=")
    assert download.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert len(rows) == 21
    assert all(row[0].startswith("NY-") for row in rows[1:])

    Select(browser.find_element(By.ID, "segment_id")).select_by_visible_text(SEGMENT)
    browser.find_element(By.CSS_SELECTOR, ".issue form button").click()
    _wait_for(browser, "配布しますか")
    assert "会員3人に配布しますか" in browser.find_element(By.CSS_SELECTOR, ".confirm").text
    photograph(browser, photos, "coupon-issue-confirm")
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    _wait_for(browser, "配布しました")
    assert "クーポンを3枚配布しました" in browser.find_element(By.CSS_SELECTOR, ".done").text
    photograph(browser, photos, "coupon-issue-done")
    # Back on the template's page, the counts include the issue and the batch.
    browser.find_element(By.LINK_TEXT, "テンプレートへ戻る").click()
    _wait_for(browser, "発行数")
    values = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card .value")]
    assert values[:2] == ["23", "0"]

    browser.find_element(By.LINK_TEXT, "イベント").click()
    _wait_for(browser, EVENT)
    assert "2 / 20" in browser.find_element(By.TAG_NAME, "table").text
    photograph(browser, photos, "events")
    browser.find_element(By.LINK_TEXT, "新しいイベント").click()
    _wait_for(browser, "定員（席数）")
    browser.find_element(By.ID, "name").send_keys("夏祭り")
    browser.find_element(By.ID, "capacity").send_keys("0")
    browser.find_element(By.CSS_SELECTOR, "form.coupon-form button[type=submit]").click()
    _wait_for(browser, "イベントは保存されていません")
    assert "席数を1〜1000000" in browser.find_element(By.ID, "capacity-error").text
    with whole_page(browser):
        photograph(browser, photos, "event-form-error")
    browser.find_element(By.LINK_TEXT, "イベント").click()
    _wait_for(browser, EVENT)
    browser.find_element(By.LINK_TEXT, EVENT).click()
    until(browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == EVENT)
    values = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card .value")]
    assert values == ["3", "2 / 20", "1"]
    guests = browser.find_element(By.ID, "guest-list").text
    assert "山田 太郎" in guests
    assert "taro.yamada@example.jp" not in guests
    with whole_page(browser):
        photograph(browser, photos, "event")


def test_an_analyst_reads_coupons_and_events_without_buttons_or_names(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "analyst")
    browser.find_element(By.LINK_TEXT, "クーポン").click()
    _wait_for(browser, TEMPLATE)
    assert not browser.find_elements(By.LINK_TEXT, "新しいクーポンテンプレート")
    browser.find_element(By.LINK_TEXT, TEMPLATE).click()
    _wait_for(browser, "コードの一括発行")
    assert not browser.find_elements(By.ID, "count")
    assert not browser.find_elements(By.ID, "segment_id")
    browser.find_element(By.LINK_TEXT, "イベント").click()
    _wait_for(browser, EVENT)
    browser.find_element(By.LINK_TEXT, EVENT).click()
    _wait_for(browser, "件数だけが表示され")
    assert "山田 太郎" not in browser.find_element(By.TAG_NAME, "main").text
    photograph(browser, photos, "event-analyst")
