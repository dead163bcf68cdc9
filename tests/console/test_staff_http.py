"""The Staff page over HTTP: admins only (others get 403 and no link), every POST needs the
session's token, bad input is refused next to its field with nothing written, deactivation
asks twice, the last admin is kept with a message, and a deactivated person's console session
ends within a second; everything through the functions the API's /v1/staff calls."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from loyalty.core.settings import Settings
from tests.conftest import asgi_transport
from tests.console.seed import seed, staff_email
from tests.console.test_console_http import _refused_within_the_promise, sign_in

ACCOUNT_LINK = re.compile(r'href="/console/staff/([0-9a-f-]{36})"')


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


async def _rows(settings: Settings, sql: str, *args: object) -> list[Any]:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _staff_id(settings: Settings, role: str) -> str:
    rows = await _rows(settings, "select staff_id from staff where email = $1", staff_email(role))
    return str(rows[0]["staff_id"])


def _new(token: str, **fields: str) -> dict[str, str]:
    return {"email": "new@staff.example", "display_name": "新人 太郎", "role": "support",
            "password": "a-long-password", "csrf_token": token, **fields}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["support", "marketer", "analyst"])
async def test_only_admins_open_the_page_or_change_anyone(
    client: httpx.AsyncClient, settings: Settings, role: str,
) -> None:
    token = await sign_in(client, role)
    assert "/console/staff" not in (await client.get("/console")).text
    admin_id = await _staff_id(settings, "admin")
    for path in ("/console/staff", f"/console/staff/{admin_id}"):
        refused = await client.get(path)
        assert refused.status_code == 403
        assert "text/html" in refused.headers["content-type"]
    assert (await client.post("/console/staff", data=_new(token))).status_code == 403
    for action, data in (("role", {"role": "analyst"}), ("name", {"display_name": "x"}),
                         ("active", {"active": "false", "confirmed": "yes"})):
        posted = await client.post(f"/console/staff/{admin_id}/{action}",
                                   data={**data, "csrf_token": token})
        assert posted.status_code == 403
    left = await _rows(settings, "select role, active, display_name from staff where email = $1",
                       staff_email("admin"))
    assert (left[0]["role"], left[0]["active"]) == ("admin", True)
    assert await _rows(settings, "select 1 from staff where email = 'new@staff.example'") == []


@pytest.mark.usefixtures("seeded")
async def test_an_admin_lists_filters_and_pages_through_the_accounts(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "admin")
    assert 'href="/console/staff"' in (await client.get("/console")).text
    page = await client.get("/console/staff")
    assert page.status_code == 200
    for role in ("admin", "support", "marketer", "analyst"):
        assert staff_email(role) in page.text
    assert "新しいアカウント" in page.text
    marketers = await client.get("/console/staff?role=marketer&active=true",
                                 headers={"HX-Request": "true"})
    assert marketers.status_code == 200
    assert "<html" not in marketers.text  # the list alone, for htmx
    assert staff_email("marketer") in marketers.text
    assert staff_email("support") not in marketers.text
    nobody = await client.get("/console/staff?active=false")
    assert "この条件に合うアカウントはありません" in nobody.text
    # An unknown filter value is ignored, not an error.
    assert (await client.get("/console/staff?role=owner")).status_code == 200


@pytest.mark.usefixtures("seeded")
async def test_an_admin_creates_an_account_that_signs_in_with_the_typed_password(
    client: httpx.AsyncClient, app: Litestar, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    created = await client.post("/console/staff", data=_new(token))
    assert created.status_code == 303, created.text
    assert created.headers["location"] == "/console/staff?done=created"
    listed = await client.get(created.headers["location"])
    assert "アカウントを作成しました" in listed.text
    assert "new@staff.example" in listed.text
    assert "a-long-password" not in listed.text
    audits = await _rows(settings, "select details->>'role' as role, details->>'via' as via"
                         " from audit_log where action = 'staff.create'")
    assert [(a["role"], a["via"]) for a in audits] == [("support", "console")]
    async with httpx.AsyncClient(transport=asgi_transport(app),
                                 base_url="http://testserver.local") as newcomer:
        signed = await newcomer.post("/v1/auth/staff/login", json={
            "email": "new@staff.example", "password": "a-long-password"})
        assert signed.status_code == 200, signed.text


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"email": "not-an-address"}, "email", "のようなメールアドレスを入力してください"),
    ({"email": staff_email("support")}, "email", "このメールアドレスのアカウントはすでにあります"),
    ({"password": "short"}, "password", "8〜128 文字のパスワードを入力して"),
    ({"password": "Password123"}, "password", "よく使われるパスワードの一つで"),
    ({"role": "owner"}, "role", "一覧からロールを選んでください"),
    ({"display_name": "x" * 101}, "display_name", "表示名は 1 行、100 文字以内に"),
])
async def test_bad_input_is_refused_next_to_its_field_and_writes_nothing(
    client: httpx.AsyncClient, settings: Settings, fields: dict[str, str], field: str,
    message: str,
) -> None:
    token = await sign_in(client, "admin")
    before = await _rows(settings, "select count(*) from staff")
    refused = await client.post("/console/staff", data=_new(token, **fields))
    assert refused.status_code == 400, refused.text
    assert message in refused.text
    assert f'id="{field}"' in refused.text
    assert 'aria-invalid="true"' in refused.text
    assert await _rows(settings, "select count(*) from staff") == before
    assert await _rows(settings, "select 1 from audit_log where action = 'staff.create'") == []


@pytest.mark.usefixtures("seeded")
async def test_every_post_needs_the_sessions_token(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    await sign_in(client, "admin")
    support = await _staff_id(settings, "support")
    posts = [("/console/staff", _new("")),
             (f"/console/staff/{support}/role", {"role": "analyst"}),
             (f"/console/staff/{support}/name", {"display_name": "x"}),
             (f"/console/staff/{support}/active", {"active": "false", "confirmed": "yes"})]
    for path, data in posts:
        data = {k: v for k, v in data.items() if k != "csrf_token"}
        refused = await client.post(path, data={**data, "csrf_token": "forged"})
        assert refused.status_code == 403, path
        assert "セキュリティトークン" in refused.text
    left = await _rows(settings, "select role, active, display_name from staff where email = $1",
                       staff_email("support"))
    assert (left[0]["role"], left[0]["active"]) == ("support", True)


@pytest.mark.usefixtures("seeded")
async def test_renaming_and_a_new_role_are_saved_and_audited(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    analyst = await _staff_id(settings, "analyst")
    renamed = await client.post(f"/console/staff/{analyst}/name",
                                data={"display_name": " 分析 花子 ", "csrf_token": token})
    assert renamed.status_code == 303
    assert "表示名を変更しました" in (await client.get(renamed.headers["location"])).text
    moved = await client.post(f"/console/staff/{analyst}/role",
                              data={"role": "marketer", "csrf_token": token})
    assert moved.status_code == 303
    page = await client.get(moved.headers["location"])
    assert "ロールを変更しました" in page.text
    assert "分析 花子" in page.text
    bad = await client.post(f"/console/staff/{analyst}/role",
                            data={"role": "owner", "csrf_token": token})
    assert bad.status_code == 400
    assert "一覧からロールを選んでください" in bad.text
    rows = await _rows(settings, "select role, display_name from staff where staff_id = $1",
                       analyst)
    assert (rows[0]["role"], rows[0]["display_name"]) == ("marketer", "分析 花子")
    audits = await _rows(settings, "select count(*) from audit_log where action = 'staff.update'"
                         " and subject_id = $1", analyst)
    assert audits[0]["count"] == 2


@pytest.fixture
async def second_browser(app: Litestar, client: httpx.AsyncClient
                         ) -> AsyncIterator[httpx.AsyncClient]:
    """Another person's browser on the same served app (its own cookies)."""
    async with httpx.AsyncClient(transport=asgi_transport(app),
                                 base_url="http://testserver.local") as other:
        yield other


@pytest.mark.usefixtures("seeded")
async def test_deactivation_asks_twice_then_ends_the_persons_session_at_once(
    client: httpx.AsyncClient, second_browser: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    await sign_in(second_browser, "support")
    support = await _staff_id(settings, "support")
    asked = await client.post(f"/console/staff/{support}/active",
                              data={"active": "false", "csrf_token": token})
    assert asked.status_code == 200
    assert "このアカウントを停止しますか" in asked.text
    assert 'name="confirmed" value="yes"' in asked.text
    assert (await second_browser.get("/console")).status_code == 200  # nothing done yet

    done = await client.post(f"/console/staff/{support}/active",
                             data={"active": "false", "confirmed": "yes", "csrf_token": token})
    assert done.status_code == 303
    await _refused_within_the_promise(second_browser)
    assert "アカウントを停止しました" in (await client.get(done.headers["location"])).text

    back = await client.post(f"/console/staff/{support}/active",
                             data={"active": "true", "confirmed": "yes", "csrf_token": token})
    assert back.status_code == 303
    await sign_in(second_browser, "support")
    bad = await client.post(f"/console/staff/{support}/active",
                            data={"active": "maybe", "confirmed": "yes", "csrf_token": token})
    assert bad.status_code == 400


@pytest.mark.usefixtures("seeded")
async def test_the_last_admin_is_refused_with_a_message(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    admin = await _staff_id(settings, "admin")
    for path, data in ((f"/console/staff/{admin}/active", {"active": "false", "confirmed": "yes"}),
                       (f"/console/staff/{admin}/role", {"role": "support"})):
        refused = await client.post(path, data={**data, "csrf_token": token})
        assert refused.status_code == 409
        assert "最後の有効な管理者のため" in refused.text
        assert "先に別のアカウントを管理者にしてから" in refused.text
    rows = await _rows(settings, "select role, active from staff where staff_id = $1", admin)
    assert (rows[0]["role"], rows[0]["active"]) == ("admin", True)
    assert (await client.get("/console")).status_code == 200  # still signed in
