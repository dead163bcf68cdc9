"""The Webhooks page in a real Chromium: the endpoints and their state, a refused URL shown next
to its field, a new endpoint's secret shown once, an endpoint's delivery log with each attempt,
a test event and a secret rotation; other roles see no link and are refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import asyncpg
import msgspec
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from loyalty.core.db import Connection, init_connection
from loyalty.core.outbox import emit
from loyalty.core.settings import Settings
from loyalty.ops.delivery import Outcome, claim_due, record_outcome
from loyalty.ops.webhooks import create_endpoint
from schemas.webhooks import EndpointCreate
from tests.console.browsing import photograph, sign_in, until

pytestmark = pytest.mark.browser

CRM = "https://93.184.216.34/hooks/crm"
LINE = "https://93.184.216.35/line/webhook"


class Earned(msgspec.Struct):
    member_id: str
    points: int


async def _attempts(conn: Connection, outcomes: list[Outcome], settings: Settings) -> None:
    """Each outcome recorded for the next due delivery, as the worker records them."""
    for outcome in outcomes:
        [claimed] = await claim_due(conn, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                                    lease=dt.timedelta(seconds=60), limit=1)
        await record_outcome(conn, claimed, outcome, settings)


def _outcome(at: dt.datetime, status: int | None, error: str | None = None,
             head: str = "") -> Outcome:
    return Outcome(attempted_at=at, latency_ms=140 if status else 10_000, status_code=status,
                   error=error, head=head)


@pytest.fixture(scope="module")
def seeded_more() -> object:
    async def more(database_url: str) -> None:
        conn: Connection = await asyncpg.connect(database_url)
        try:
            await init_connection(conn)
            settings = Settings(webhooks_retry_base_seconds=3600, webhooks_retry_max_seconds=3600,
                                webhooks_disable_after_seconds=86_400)
            now = dt.datetime.now(dt.UTC)
            members = [row["member_id"] for row in await conn.fetch(
                "select member_id from members order by member_id")]
            crm = await create_endpoint(conn, EndpointCreate(
                url=CRM, description="CRM（顧客管理）", event_types=["points.earned",
                                                                     "member.registered"]),
                allow_private=False)
            line = await create_endpoint(conn, EndpointCreate(
                url=LINE, description="LINE 配信", event_types=["tier.changed"]),
                allow_private=False)
            for member in members:
                await emit(conn, "points.earned", Earned(str(member), 120), member_id=member)
            minute = dt.timedelta(minutes=1)
            await _attempts(conn, [
                _outcome(now - 9 * minute, 503, "answered 503", "Service Unavailable"),
                _outcome(now - 8 * minute, 200, None, '{"ok":true}'),
                _outcome(now - 7 * minute, 200, None, '{"ok":true}'),
                _outcome(now - 6 * minute, None, "no answer within 10 s"),
            ], settings)
            await emit(conn, "tier.changed", Earned(str(members[0]), 0), member_id=members[0])
            await emit(conn, "tier.changed", Earned(str(members[1]), 0), member_id=members[1])
            await _attempts(conn, [
                _outcome(now - dt.timedelta(days=2), 500, "answered 500", "Internal Error"),
                _outcome(now - 5 * minute, 500, "answered 500", "Internal Error"),
            ], settings)
            assert crm.enabled
            assert line.enabled
        finally:
            await conn.close()
    return more


def _endpoint_link(browser: webdriver.Chrome, url: str) -> None:
    browser.find_element(By.LINK_TEXT, url).click()
    until(browser, lambda b: "送信ログ" in b.page_source)


def test_admin_adds_an_endpoint_and_reads_the_delivery_log(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "admin")
    browser.find_element(By.LINK_TEXT, "Webhook").click()
    until(browser, lambda b: "エンドポイントの追加" in b.page_source)
    main = browser.find_element(By.TAG_NAME, "main").text
    assert CRM in main
    assert LINE in main
    assert "失敗が続いたため無効になりました" in main
    photograph(browser, photos, "webhooks")

    browser.find_element(By.ID, "url").send_keys("https://10.0.0.1/hooks")
    browser.find_element(By.CSS_SELECTOR, 'input[value="points.earned"]').click()
    browser.find_element(By.CSS_SELECTOR, "form.webhook-form button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.ID, "url-error"))
    assert "この URL は使えません" in browser.find_element(By.ID, "url-error").text
    assert browser.find_element(By.ID, "url").get_attribute("aria-invalid") == "true"
    photograph(browser, photos, "webhooks-refused")

    field = browser.find_element(By.ID, "url")
    field.clear()
    field.send_keys("https://93.184.216.34/hooks/mailer")
    browser.find_element(By.ID, "description").send_keys("メール配信")
    browser.find_element(By.CSS_SELECTOR, "form.webhook-form button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.ID, "secret"))
    secret = browser.find_element(By.ID, "secret").get_attribute("value")
    assert secret is not None
    assert secret.startswith("whsec_")
    photograph(browser, photos, "webhooks-secret")

    browser.get(f"{console}/console/webhooks")
    assert secret not in browser.page_source
    _endpoint_link(browser, CRM)
    log = browser.find_element(By.ID, "deliveries").text
    for shown in ("HTTP 503", "HTTP 200", "応答なし"):
        assert shown in log
    assert "送信待ち" in log
    photograph(browser, photos, "webhook-log")

    browser.find_element(By.XPATH, "//button[text()='テストイベントを送信']").click()
    until(browser, lambda b: "テストイベントを送信しました" in b.page_source)
    assert "webhook.test" in browser.find_element(By.ID, "deliveries").text
    photograph(browser, photos, "webhook-test-sent")

    browser.find_element(By.XPATH, "//button[text()='署名シークレットを更新']").click()
    until(browser, lambda b: b.find_elements(By.ID, "secret"))
    assert "新しい署名シークレット" in browser.page_source
    photograph(browser, photos, "webhook-rotated")


def test_other_roles_see_no_link_and_are_refused(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    assert not browser.find_elements(By.LINK_TEXT, "Webhook")
    browser.get(f"{console}/console/webhooks")
    assert CRM not in browser.page_source
    assert "403" in browser.title or "権限" in browser.page_source
