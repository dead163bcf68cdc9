"""The Webhooks page over HTTP: admins only (others get 403 and no link), every POST needs the
session's token, a bad endpoint is refused on the page next to its field with nothing written,
the secret is shown once, and test, rotate, enable/disable and retry go through the same
functions as the API."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest

from loyalty.core.settings import Settings
from tests.console.seed import seed
from tests.console.test_console_http import sign_in

PUBLIC = "https://93.184.216.34/hooks"
SECRET = re.compile(r'value="(whsec_[A-Za-z0-9+/=]+)"')


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


async def _count(settings: Settings, sql: str) -> int:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        value: int = await conn.fetchval(sql)
        return value
    finally:
        await conn.close()


async def _create(client: httpx.AsyncClient, token: str, **fields: object) -> httpx.Response:
    data: dict[str, object] = {"url": PUBLIC, "description": "CRM",
                               "event_types": ["points.earned", "tier.changed"],
                               "csrf_token": token}
    data.update(fields)
    return await client.post("/console/webhooks", data=data)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["support", "marketer", "analyst"])
async def test_only_admins_open_the_page(client: httpx.AsyncClient, role: str) -> None:
    token = await sign_in(client, role)
    assert "/console/webhooks" not in (await client.get("/console")).text
    refused = await client.get("/console/webhooks")
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]
    posted = await _create(client, token)
    assert posted.status_code == 403


@pytest.mark.usefixtures("seeded")
async def test_an_admin_adds_an_endpoint_and_sees_its_secret_once(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    empty = await client.get("/console/webhooks")
    assert empty.status_code == 200
    assert '<a href="/console/webhooks" aria-current="page">' in empty.text
    assert "エンドポイントはまだありません" in empty.text
    added = await _create(client, token)
    assert added.status_code == 200, added.text
    assert "表示されるのはこの一度だけです" in added.text
    found = SECRET.search(added.text)
    assert found
    listed = await client.get("/console/webhooks")
    assert PUBLIC in listed.text
    assert found.group(1) not in listed.text
    assert "whsec_" not in listed.text
    assert await _count(settings, "select count(*) from audit_log"
                                  " where action = 'webhooks.create'") == 1


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("fields", "message", "field"), [
    ({"url": "https://127.0.0.1/hook"}, "この URL は使えません", "url"),
    ({"url": "https://10.0.0.1/hook"}, "この URL は使えません", "url"),
    ({"url": "http://93.184.216.34/hook"}, "この URL は使えません", "url"),
    ({"url": "not a url"}, "のような URL を入力してください", "url"),
    ({"event_types": []}, "イベント種別を 1 つ以上選んでください", "types"),
    ({"event_types": ["points.stolen"]}, "イベント種別を 1 つ以上選んでください", "types"),
    ({"description": "x" * 501}, "説明は 1 行、500 文字以内にしてください", "description"),
])
async def test_bad_input_shows_the_page_again_with_the_message_and_writes_nothing(
    client: httpx.AsyncClient, settings: Settings, fields: dict[str, object], message: str,
    field: str,
) -> None:
    token = await sign_in(client, "admin")
    refused = await _create(client, token, **fields)
    assert refused.status_code == 400, refused.text
    assert message in refused.text
    assert f'id="{field}-error"' in refused.text
    assert await _count(settings, "select count(*) from webhook_endpoints") == 0


@pytest.mark.usefixtures("seeded")
async def test_posts_without_the_sessions_token_are_refused(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    assert (await _create(client, "forged" * 8)).status_code == 403
    assert await _count(settings, "select count(*) from webhook_endpoints") == 0
    added = await _create(client, token)
    endpoint_id = re.search(r'/console/webhooks/([0-9a-f-]{36})', added.text)
    assert endpoint_id
    path = f"/console/webhooks/{endpoint_id.group(1)}"
    for action in ("rotate", "test", "enabled"):
        refused = await client.post(f"{path}/{action}", data={"csrf_token": "forged" * 8})
        assert refused.status_code == 403, action
    assert await _count(settings, "select count(*) from webhook_deliveries") == 0
    assert await _count(settings, "select count(*) from webhook_endpoints"
                                  " where previous_secret is not null") == 0


@pytest.mark.usefixtures("seeded")
async def test_test_rotate_disable_and_retry_from_the_endpoints_page(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    added = await _create(client, token)
    first_secret = SECRET.search(added.text)
    assert first_secret
    endpoint_id = re.search(r'/console/webhooks/([0-9a-f-]{36})', added.text)
    assert endpoint_id
    path = f"/console/webhooks/{endpoint_id.group(1)}"
    page = await client.get(path)
    assert page.status_code == 200
    assert "このエンドポイントへの送信はまだありません" in page.text

    sent = await client.post(f"{path}/test", data={"csrf_token": token})
    assert sent.status_code == 303
    assert sent.headers["location"] == f"{path}?done=test"
    after = await client.get(sent.headers["location"])
    assert "テストイベントを送信しました" in after.text
    assert "webhook.test" in after.text
    delivery = re.search(r'/deliveries/([0-9a-f-]{36})/retry', after.text)
    assert delivery

    retried = await client.post(f"{path}/deliveries/{delivery.group(1)}/retry",
                                data={"csrf_token": token})
    assert retried.status_code == 303
    assert "数秒以内に再送します" in (await client.get(retried.headers["location"])).text

    rotated = await client.post(f"{path}/rotate", data={"csrf_token": token})
    assert rotated.status_code == 200
    new_secret = SECRET.search(rotated.text)
    assert new_secret
    assert new_secret.group(1) != first_secret.group(1)
    assert "旧シークレットでの署名の期限" in rotated.text
    assert "whsec_" not in (await client.get(path)).text

    off = await client.post(f"{path}/enabled", data={"csrf_token": token, "enabled": "false"})
    assert off.status_code == 303
    disabled = await client.get(path)
    assert "管理者が無効にしました" in disabled.text
    refused = await client.post(f"{path}/test", data={"csrf_token": token})
    assert refused.status_code == 400
    assert "先に有効にしてください" in refused.text
    assert await _count(settings, "select count(*) from webhook_deliveries") == 1
    on = await client.post(f"{path}/enabled", data={"csrf_token": token, "enabled": "true"})
    assert on.status_code == 303
    assert "有効" in (await client.get(path)).text


@pytest.mark.usefixtures("seeded")
async def test_the_delivery_log_pages_with_htmx(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "admin")
    added = await _create(client, token)
    endpoint_id = re.search(r'/console/webhooks/([0-9a-f-]{36})', added.text)
    assert endpoint_id
    path = f"/console/webhooks/{endpoint_id.group(1)}"
    for _ in range(21):
        assert (await client.post(f"{path}/test", data={"csrf_token": token})).status_code == 303
    page = await client.get(path)
    assert page.text.count("/retry") == 20
    more = re.search(r'hx-get="([^"]+cursor=[^"]+)"', page.text)
    assert more
    partial = await client.get(more.group(1).replace("&amp;", "&"),
                               headers={"HX-Request": "true"})
    assert partial.status_code == 200
    assert "<html" not in partial.text
    assert partial.text.count("/retry") == 1
