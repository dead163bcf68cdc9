"""Erasing a member's personal data at their request, in a real headless Chromium: support opens
the member, follows "Erase personal data…", is told what a missing reason lacks, gives one and
confirms; the member's page shows the pending erasure, and the erasure page cancels it. The
confirmation is photographed in Japanese and in English."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.console.browsing import choose_language, photograph, sign_in, until
from tests.console.conftest import MoreSeed
from tests.console.seed import MEMBERS
from tests.factories import query

pytestmark = pytest.mark.browser

IDS: dict[str, UUID] = {}
REASON = "電話で受付、問い合わせ番号 123"


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed:
    async def more(database_url: str) -> None:
        for name, *_ in MEMBERS:
            IDS[name] = (await query(database_url,
                                     "select member_id from members where name = $1", name))[0][0]

    return more


@pytest.fixture
def ids(console: str) -> dict[str, UUID]:
    return IDS


def test_support_requests_an_erasure_then_cancels_it(
    browser: webdriver.Chrome, console: str, photos: Path, ids: dict[str, UUID],
) -> None:
    sato = ids[MEMBERS[1][0]]
    sign_in(browser, console, "support")
    browser.get(f"{console}/console/members/{sato}")
    until(browser, lambda b: MEMBERS[1][0] in b.title)
    assert browser.find_elements(By.ID, "erasure-pending") == []
    browser.find_element(By.LINK_TEXT, "個人情報を削除…").click()
    until(browser, lambda b: b.find_elements(By.ID, "erasure-reason"))
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "佐藤 花子 さんの個人情報を削除しますか？" in main
    assert "実行日時：" in main
    assert "スタッフはこの画面で削除を取り消せます" in main
    photograph(browser, photos, "member-erasure-confirm")

    # Without a reason the form comes back with what to write by the field, nothing done.
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.ID, "erasure-reason-error"))
    assert "理由を入力してください" in browser.find_element(By.ID, "erasure-reason-error").text
    assert browser.find_element(By.ID, "erasure-reason").get_attribute("aria-invalid") == "true"
    photograph(browser, photos, "member-erasure-reason-missing")

    browser.find_element(By.ID, "erasure-reason").send_keys(REASON)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    until(browser, lambda b: "削除の依頼を受け付けました" in b.page_source)
    notice = browser.find_element(By.ID, "erasure-pending").text
    assert "会員本人の依頼により" in notice
    assert "個人情報を削除します" in notice
    # Tall enough to show the notice and the profile's actions below it together.
    browser.set_window_size(1280, 1150)
    try:
        photograph(browser, photos, "member-erasure-pending")
    finally:
        browser.set_window_size(1280, 900)

    browser.find_element(By.LINK_TEXT, "取り消す場合は削除の画面へ").click()
    until(browser, lambda b: "削除予定です" in b.find_element(By.TAG_NAME, "h1").text)
    assert browser.find_elements(By.ID, "erasure-reason") == []
    photograph(browser, photos, "member-erasure-cancel")
    browser.find_element(By.XPATH, "//button[text()='削除を取り消す']").click()
    until(browser, lambda b: "削除を取り消しました" in b.page_source)
    assert browser.find_elements(By.ID, "erasure-pending") == []
    assert MEMBERS[1][2] in browser.find_element(By.TAG_NAME, "main").text


def test_the_confirmation_in_english(
    browser: webdriver.Chrome, console: str, photos: Path, ids: dict[str, UUID],
) -> None:
    suzuki = ids[MEMBERS[2][0]]
    sign_in(browser, console, "support")
    choose_language(browser, "en")
    browser.get(f"{console}/console/members/{suzuki}/erasure")
    until(browser, lambda b: b.find_elements(By.ID, "erasure-reason"))
    main = browser.find_element(By.TAG_NAME, "main").text
    assert f"Erase the personal data of {MEMBERS[2][0]}?" in main
    assert "When: on " in main
    assert "Kept for accounting" in main
    photograph(browser, photos, "member-erasure-confirm-en")
    browser.find_element(By.LINK_TEXT, "Back to the member").click()
    until(browser, lambda b: b.find_elements(By.LINK_TEXT, "Erase personal data…"))
