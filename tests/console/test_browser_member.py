"""The member's page in a real headless Chromium, on seeded data (tests/console/member_seed.py
on top of seed.py): support finds a member by name, opens their page, adjusts their points
with a reason and sees the entry; a wrong adjustment shows the message by the field; the merge
comparison; a marketer's view has no e-mail address and no actions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.console.browsing import photograph, sign_in, until
from tests.console.conftest import MoreSeed
from tests.console.member_seed import COUPON, Seeded, seed_member_page
from tests.console.seed import MEMBERS

pytestmark = pytest.mark.browser

SEEDED: dict[str, Seeded] = {}


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed:
    async def more(database_url: str) -> None:
        SEEDED["ids"] = await seed_member_page(database_url)

    return more


@pytest.fixture
def ids(console: str) -> Seeded:
    return SEEDED["ids"]


@pytest.fixture
def tall(browser: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The window as tall as the page when photographed, so the photograph shows all of it."""
    yield browser
    browser.set_window_size(1280, 900)


def photograph_whole(browser: webdriver.Chrome, photos: Path, name: str) -> None:
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 140, 6000))
    photograph(browser, photos, name)
    browser.set_window_size(1280, 900)


def test_support_finds_a_member_and_adjusts_their_points_with_a_reason(
    tall: webdriver.Chrome, console: str, photos: Path, ids: Seeded,
) -> None:
    browser = tall
    sign_in(browser, console, "support")
    browser.get(f"{console}/console/members")
    browser.find_element(By.ID, "q").send_keys("山田")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    link = f'#results a[href="/console/members/{ids.yamada}"]'
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, link))
    browser.find_elements(By.CSS_SELECTOR, link)[-1].click()
    until(browser, lambda b: b.find_elements(By.ID, "adjust-points"))
    main = browser.find_element(By.TAG_NAME, "main").text
    assert MEMBERS[0][2] in main
    assert COUPON in main
    assert "氏名と生年月日が同じ" in main
    # Each entry says why: the rule trace opens under it.
    first_why = browser.find_element(By.CSS_SELECTOR, "#history-rows details.why summary")
    first_why.click()
    assert "ポイントの計算内訳" in browser.find_element(By.ID, "history-rows").text
    photograph_whole(browser, photos, "member-support")

    browser.find_element(By.ID, "adjust-points").send_keys("250")
    browser.find_element(By.ID, "adjust-reason").send_keys("誕生日キャンペーンの付与漏れ")
    browser.find_element(By.CSS_SELECTOR, "form.adjust button[type=submit]").click()
    until(browser, lambda b: "ポイントを調整しました" in b.page_source)
    newest = browser.find_element(By.CSS_SELECTOR, "#history-rows tr").text
    assert "誕生日キャンペーンの付与漏れ" in newest
    assert "+250" in newest


def test_a_wrong_adjustment_shows_the_message_by_the_field(
    browser: webdriver.Chrome, console: str, photos: Path, ids: Seeded,
) -> None:
    sign_in(browser, console, "support")
    browser.get(f"{console}/console/members/{ids.yamada}")
    browser.find_element(By.ID, "adjust-points").send_keys("0")
    browser.find_element(By.CSS_SELECTOR, "form.adjust button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.ID, "adjust-points-error"))
    assert "0 ポイントの調整" in browser.find_element(By.ID, "adjust-points-error").text
    assert "3文字以上" in browser.find_element(By.ID, "adjust-reason-error").text
    form = browser.find_element(By.ID, "adjust-h")
    browser.execute_script("arguments[0].scrollIntoView()", form)
    photograph(browser, photos, "member-adjust-error")


def test_the_merge_comparison_says_who_stays(
    tall: webdriver.Chrome, console: str, photos: Path, ids: Seeded,
) -> None:
    browser = tall
    sign_in(browser, console, "support")
    browser.get(f"{console}/console/members/{ids.yamada}")
    browser.find_element(By.CSS_SELECTOR, f'a[href$="/merge/{ids.twin}"]').click()
    until(browser, lambda b: "会員の統合" in b.title)
    lead = browser.find_element(By.CSS_SELECTOR, "main .lead").text
    assert "が残ります" in lead
    assert len(browser.find_elements(By.CSS_SELECTOR, ".compare section")) == 2
    photograph_whole(browser, photos, "member-merge")


def test_a_marketer_sees_no_e_mail_address_and_no_actions(
    tall: webdriver.Chrome, console: str, photos: Path, ids: Seeded,
) -> None:
    browser = tall
    sign_in(browser, console, "marketer")
    browser.get(f"{console}/console/members/{ids.yamada}")
    until(browser, lambda b: MEMBERS[0][0] in b.title)
    assert "@" not in browser.page_source.replace("marketer@staff.example", "")
    assert browser.find_elements(By.ID, "adjust-points") == []
    assert browser.find_elements(By.CSS_SELECTOR, "form.adjust, a.button") == []
    assert "連絡先は表示されません" in browser.find_element(By.TAG_NAME, "main").text
    photograph_whole(browser, photos, "member-marketer")
