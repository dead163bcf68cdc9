"""The Audit log page over HTTP: admins only (others get 403 and no link), the trail newest
first with who, what and about whom, the same filters as GET /v1/audit, a filter that does not
read refused next to its box with 400, and the next page as an htmx partial."""

from __future__ import annotations

import re

import httpx
import pytest

from loyalty.core.settings import Settings
from tests.console.seed import seed, staff_email
from tests.console.test_console_http import sign_in
from tests.factories import query


@pytest.fixture
async def seeded(settings: Settings) -> list[str]:
    assert settings.database_url
    members = await seed(settings.database_url)
    return [str(m.member_id) for m in members]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["support", "marketer", "analyst"])
async def test_only_admins_open_the_page(client: httpx.AsyncClient, role: str) -> None:
    await sign_in(client, role)
    assert "/console/audit" not in (await client.get("/console")).text
    refused = await client.get("/console/audit")
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]


async def test_reads_show_up_with_who_and_about_whom_and_filter(
    client: httpx.AsyncClient, seeded: list[str],
) -> None:
    first, second = seeded[0], seeded[1]
    await sign_in(client, "support")
    for member_id in (first, first, second):
        assert (await client.get(f"/console/members/{member_id}")).status_code == 200
    await sign_in(client, "admin")
    assert 'href="/console/audit"' in (await client.get("/console")).text

    page = await client.get("/console/audit")
    assert page.status_code == 200
    assert "<h1>監査ログ</h1>" in page.text
    assert staff_email("support") in page.text
    assert "members.read" in page.text
    assert f'href="/console/members/{first}"' in page.text

    mine = await client.get("/console/audit", params={
        "actor": staff_email("support"), "subject": second, "action": "members.read"})
    assert mine.status_code == 200
    assert mine.text.count("<code>members.read</code>") == 1
    assert f"/console/members/{second}" in mine.text
    # Where the read came from: the test client's peer (tests/conftest.py asgi_transport).
    assert "接続元" in mine.text
    assert '<td class="audit-id">testclient</td>' in mine.text
    assert f"/console/members/{first}" not in mine.text
    nobody = await client.get("/console/audit", params={"actor": staff_email("analyst")})
    assert "この条件に合う記録はありません" in nobody.text
    later = await client.get("/console/audit", params={"from": "2099-01-01"})
    assert "この条件に合う記録はありません" in later.text
    today = await client.get("/console/audit", params={"from": "2000-01-01", "to": "2099-12-31",
                                                       "action": "members.read"})
    assert today.text.count("<code>members.read</code>") == 3


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("params", "box", "message"), [
    ({"actor": "nobody@staff.example"}, "actor", "このメールアドレスのスタッフアカウントはなく"),
    ({"actor": "not an id"}, "actor", "このメールアドレスのスタッフアカウントはなく"),
    ({"subject": "12345"}, "subject", "会員ページのアドレスの末尾にあるような ID"),
    ({"action": "DROP TABLE"}, "action", "members.read のように"),
    ({"from": "2026-13-01"}, "from", "日付を YYYY-MM-DD の形で"),
    ({"to": "yesterday"}, "to", "日付を YYYY-MM-DD の形で"),
])
async def test_a_filter_that_does_not_read_is_refused_next_to_its_box(
    client: httpx.AsyncClient, params: dict[str, str], box: str, message: str,
) -> None:
    await sign_in(client, "admin")
    refused = await client.get("/console/audit", params=params)
    assert refused.status_code == 400
    assert message in refused.text
    assert f'id="{box}-error"' in refused.text


async def test_the_next_page_comes_as_an_htmx_partial(
    client: httpx.AsyncClient, settings: Settings, seeded: list[str],
) -> None:
    assert settings.database_url
    await query(settings.database_url,
                "insert into audit_log (actor_kind, action, subject_kind, subject_id)"
                " select 'system', 'test.row', 'member', $1::uuid from generate_series(1, 60)",
                seeded[0])
    await sign_in(client, "admin")
    page = await client.get("/console/audit", params={"action": "test.row"})
    assert page.text.count("<code>test.row</code>") == 50
    more = re.search(r'hx-get="(/console/audit\?[^"]+)"', page.text)
    assert more, page.text
    link = more.group(1).replace("&amp;", "&")
    assert "action=test.row" in link
    rest = await client.get(link, headers={"HX-Request": "true"})
    assert rest.status_code == 200
    assert "<html" not in rest.text
    assert rest.text.count("<code>test.row</code>") == 10
    broken = await client.get("/console/audit", params={"cursor": "AAAA"},
                              headers={"HX-Request": "true"})
    assert broken.status_code == 400
    assert "このページはもう見つかりません" in broken.text
