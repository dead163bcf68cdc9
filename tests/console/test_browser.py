"""The console in a real headless Chromium, on seeded data: sign in, find a member by a
full-width phone number, a form posted without its CSRF token, the language switch, what an
analyst may not see, and the dashboard's chart (fixtures: tests/console/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.console.browsing import choose_language, photograph, sign_in, until
from tests.console.seed import staff_email

pytestmark = pytest.mark.browser


def test_sign_in_and_find_a_member_by_a_full_width_phone_number(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    photograph(browser, photos, "sign-in")
    sign_in(browser, console, "support")
    assert browser.current_url == f"{console}/console"
    assert "サポート" in browser.find_element(By.CSS_SELECTOR, ".who").text
    photograph(browser, photos, "home")
    browser.find_element(By.LINK_TEXT, "会員").click()
    until(browser, lambda b: b.find_elements(By.ID, "q"))
    photograph(browser, photos, "members-empty")
    search = browser.find_element(By.ID, "q")
    search.send_keys("０８０－２３４５－６７８９")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    # htmx swaps the results in and pushes the URL.
    until(browser, lambda b: "佐藤 花子" in b.find_element(By.ID, "results").text)
    results = browser.find_element(By.ID, "results").text
    assert "hanako.sato@example.jp" in results
    assert "山田 太郎" not in results
    assert "q=" in browser.current_url
    photograph(browser, photos, "members-found")
    search = browser.find_element(By.ID, "q")
    search.clear()
    search.send_keys("存在しない名前")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    until(browser, lambda b: "一致する会員はいません" in b.find_element(By.ID, "results").text)
    photograph(browser, photos, "members-none")


def test_a_form_posted_without_its_csrf_token_is_refused(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "support")
    browser.execute_script(
        "document.querySelector('.who form input[name=csrf_token]').remove()")
    browser.find_element(By.CSS_SELECTOR, ".who form button").click()
    until(browser, lambda b: "このフォームは無効です" in b.page_source)
    assert "セキュリティトークン" in browser.find_element(By.TAG_NAME, "main").text
    photograph(browser, photos, "csrf-refused")
    # The refused sign-out did nothing: still signed in.
    browser.get(f"{console}/console")
    assert staff_email("support") in browser.page_source


def test_switch_to_english_and_back(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    choose_language(browser, "en")
    assert "Sign out" in browser.page_source
    assert browser.find_element(By.LINK_TEXT, "Members")
    photograph(browser, photos, "home-english")
    choose_language(browser, "ja")
    assert "サインアウト" in browser.page_source


def test_an_analyst_cannot_open_the_members_page_and_sees_no_email(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "analyst")
    assert not browser.find_elements(By.LINK_TEXT, "会員")
    browser.get(f"{console}/console/members?q=山田")
    assert "権限がありません" in browser.find_element(By.TAG_NAME, "main").text
    assert "@example.jp" not in browser.page_source
    assert "山田 太郎" not in browser.page_source
    photograph(browser, photos, "analyst-refused")


def test_an_analyst_opens_the_dashboard_and_sees_the_chart_drawn(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "analyst")
    browser.find_element(By.LINK_TEXT, "ダッシュボード").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".cards"))
    line = browser.find_element(By.CSS_SELECTOR, "figure.trend svg path.line")
    d = line.get_attribute("d") or ""
    assert d.startswith("M")
    assert d.count("L") >= 1  # more than one point
    assert line.size["width"] > 0
    assert "リピート率" in browser.find_element(By.CSS_SELECTOR, ".cards").text
    photograph(browser, photos, "dashboard")
