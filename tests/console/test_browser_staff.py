"""The Staff and Audit log pages in a real Chromium: the accounts with their roles, a new one
made with a typed password, a deactivation asked twice, the last admin kept with a message;
the audit trail with its filters. Other roles see no link."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from loyalty.access.audit import record_audit, record_till_lookup
from loyalty.access.staff import create_staff, staff_id_by_email, update_staff
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import Connection, init_connection
from tests.console.browsing import photograph, sign_in, until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def seeded_more() -> object:
    async def more(database_url: str) -> None:
        conn: Connection = await asyncpg.connect(database_url)
        try:
            await init_connection(conn)
            hashed = await conn.fetchval("select password_hash from staff limit 1")
            for email, role, name in (("campaigns@staff.example", "marketer", "キャンペーン企画"),
                                      ("helpdesk@staff.example", "support", "旧ヘルプデスク")):
                await create_staff(conn, email=email, password_hash=hashed, role=role,
                                   display_name=name)
            retired = await staff_id_by_email(conn, "helpdesk@staff.example")
            await update_staff(conn, retired, active=False)
            support = await staff_id_by_email(conn, "support@staff.example")
            members = [r["member_id"] for r in await conn.fetch(
                "select member_id from members order by member_id")]
            for member in members:
                await record_audit(conn, actor_kind="staff", actor_id=support,
                                   action="members.read", subject_kind="member",
                                   subject_id=member, details={"via": "console"})
            store = await ensure_store(conn, code="SHIBUYA")
            till = await create_terminal(conn, store=store, name="渋谷 1 番レジ")
            await record_till_lookup(conn, terminal_id=till.terminal.terminal_id,
                                     member_id=members[0], by="card")
        finally:
            await conn.close()
    return more


def test_admin_manages_staff_accounts(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "admin")
    browser.find_element(By.LINK_TEXT, "スタッフ").click()
    until(browser, lambda b: "新しいアカウント" in b.page_source)
    listed = browser.find_element(By.ID, "staff-results").text
    assert "campaigns@staff.example" in listed
    assert "停止中" in listed
    photograph(browser, photos, "staff")

    browser.find_element(By.ID, "email").send_keys("suzuki@staff.example")
    browser.find_element(By.ID, "display_name").send_keys("鈴木 一郎")
    Select(browser.find_element(By.ID, "role")).select_by_value("analyst")
    browser.find_element(By.ID, "password").send_keys("short")
    # The browser's own minlength check would stop the form: the server's is what is shown.
    browser.execute_script("document.getElementById('password').removeAttribute('minlength')")
    browser.find_element(By.CSS_SELECTOR, "form.staff-form button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.ID, "password-error"))
    assert "8〜128 文字" in browser.find_element(By.ID, "password-error").text
    assert "アカウントは作成されていません" in browser.find_element(By.TAG_NAME, "main").text
    browser.execute_script("arguments[0].scrollIntoView()",
                           browser.find_element(By.ID, "new-staff"))
    photograph(browser, photos, "staff-refused")

    browser.find_element(By.ID, "password").send_keys("a-long-password")
    browser.find_element(By.CSS_SELECTOR, "form.staff-form button[type=submit]").click()
    until(browser, lambda b: "アカウントを作成しました" in b.page_source)
    assert "suzuki@staff.example" in browser.find_element(By.ID, "staff-results").text

    browser.find_element(By.LINK_TEXT, "campaigns@staff.example").click()
    until(browser, lambda b: "表示名を保存" in b.page_source)
    photograph(browser, photos, "staff-account")
    browser.find_element(By.XPATH, "//button[text()='停止…']").click()
    until(browser, lambda b: "このアカウントを停止しますか" in b.page_source)
    photograph(browser, photos, "staff-confirm")
    browser.find_element(By.XPATH, "//button[text()='停止する']").click()
    until(browser, lambda b: "アカウントを停止しました" in b.page_source)

    browser.get(f"{console}/console/staff?role=admin")
    browser.find_element(By.LINK_TEXT, "admin@staff.example").click()
    until(browser, lambda b: "表示名を保存" in b.page_source)
    Select(browser.find_element(By.ID, "role")).select_by_value("support")
    browser.find_element(By.XPATH, "//button[text()='ロールを変更']").click()
    until(browser, lambda b: "最後の有効な管理者のため" in b.page_source)
    photograph(browser, photos, "staff-last-admin")


def test_admin_reads_the_audit_log(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "admin")
    browser.find_element(By.LINK_TEXT, "監査ログ").click()
    until(browser, lambda b: b.find_elements(By.ID, "audit-results"))
    results = browser.find_element(By.ID, "audit-results").text
    assert "support@staff.example" in results
    assert "pos.members.lookup" in results
    photograph(browser, photos, "audit")
    browser.find_element(By.ID, "actor").send_keys("support@staff.example")
    browser.find_element(By.ID, "action").send_keys("members.read")
    browser.find_element(By.CSS_SELECTOR, "form.audit-filters button[type=submit]").click()
    until(browser, lambda b: "pos.members.lookup" not in
          b.find_element(By.ID, "audit-results").text)
    assert "members.read" in browser.find_element(By.ID, "audit-results").text
    photograph(browser, photos, "audit-filtered")
    browser.get(f"{console}/console/audit?actor=nobody@staff.example")
    until(browser, lambda b: b.find_elements(By.ID, "actor-error"))
    photograph(browser, photos, "audit-refused")


def test_other_roles_see_no_link(browser: webdriver.Chrome, console: str) -> None:
    sign_in(browser, console, "support")
    assert not browser.find_elements(By.LINK_TEXT, "スタッフ")
    assert not browser.find_elements(By.LINK_TEXT, "監査ログ")
    browser.get(f"{console}/console/staff")
    assert "campaigns@staff.example" not in browser.page_source
