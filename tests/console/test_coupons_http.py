"""The Coupons pages over HTTP: the list, the create form, a template's page, code batches and
their CSV, issuing to a segment; roles, CSRF, bad input, and one issue under a double submit."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from uuid import UUID

import asyncpg
import httpx
import pytest

from loyalty.core.settings import Settings
from loyalty.promotions.codes import is_well_formed, normalize_code
from tests.console.promotions_seed import (
    SEGMENT,
    TEMPLATE,
    Promotions,
    count_rows,
)
from tests.console.test_console_http import csrf_of, sign_in

KEY = re.compile(r'name="key" value="([^"]+)"')




def _key_of(page: httpx.Response) -> str:
    found = KEY.search(page.text)
    assert found, page.text
    return found.group(1)


TEMPLATE_FORM = {
    "name": "週末限定 10%オフ", "description": "", "discount_kind": "percent", "percent": "10",
    "cap": "1,000", "validity_kind": "window", "valid_from": "2026-12-01T00:00",
    "valid_until": "2027-01-01T00:00", "min_spend": "", "stores": "SHIBUYA", "categories": "",
    "per_member_limit": "1", "total_limit": "500", "on_return": "reinstate", "public_code": "",
}


async def test_the_list_shows_templates_with_counts_and_editors_get_the_button(
    client: httpx.AsyncClient, promotions: Promotions,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/coupons")
    assert page.status_code == 200
    assert TEMPLATE in page.text
    assert "¥500引き" in page.text or "￥500引き" in page.text
    assert 'href="/console/coupons/new"' in page.text
    assert f'href="/console/coupons/{promotions.template_id}"' in page.text


async def test_an_analyst_reads_but_gets_no_buttons_and_its_posts_are_refused(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "analyst")
    listing = await client.get("/console/coupons")
    assert listing.status_code == 200
    assert TEMPLATE in listing.text
    assert "/console/coupons/new" not in listing.text
    detail = await client.get(f"/console/coupons/{promotions.template_id}")
    assert detail.status_code == 200
    assert "/batches\"" not in detail.text
    assert "コードを発行" not in detail.text
    assert "セグメントに配布" not in detail.text
    assert (await client.get("/console/coupons/new")).status_code == 403
    tid = promotions.template_id
    refused = [
        await client.post("/console/coupons", data={**TEMPLATE_FORM, "csrf_token": token}),
        await client.post(f"/console/coupons/{tid}/batches",
                          data={"count": "5", "key": "console-" + "a" * 32,
                                "csrf_token": token}),
        await client.post(f"/console/coupons/{tid}/issue",
                          data={"segment_id": str(promotions.segment_id),
                                "key": "console-" + "b" * 32, "csrf_token": token}),
        await client.get(f"/console/coupons/{tid}/issue",
                         params={"segment_id": str(promotions.segment_id)}),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    assert await count_rows(settings, "select count(*) from coupon_templates") == 1
    assert await count_rows(settings, "select count(*) from coupon_code_batches") == 0
    assert await count_rows(settings, "select count(*) from member_coupons") == 0


async def test_support_may_not_open_coupons(client: httpx.AsyncClient,
                                           promotions: Promotions) -> None:
    await sign_in(client, "support")
    assert (await client.get("/console/coupons")).status_code == 403
    assert 'href="/console/coupons"' not in (await client.get("/console")).text


async def test_creating_a_template_saves_every_field_and_opens_its_page(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/coupons", data={**TEMPLATE_FORM, "csrf_token": token})
    assert answer.status_code == 303
    template_id = UUID(answer.headers["location"].rsplit("/", 1)[1])
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow("select * from coupon_templates where template_id = $1",
                                  template_id)
        audited = await conn.fetchval(
            "select count(*) from audit_log where action = 'coupon_template.create'"
            " and subject_id = $1", template_id)
    finally:
        await conn.close()
    assert row is not None
    discount = json.loads(row["discount"])
    assert (discount["type"], discount["percent"], discount["cap"]) == ("percent", 10, 1000)
    assert row["stores"] == ["SHIBUYA"]
    assert row["per_member_limit"] == 1
    assert row["total_limit"] == 500
    # 2026-12-01 00:00 in Tokyo is 15:00 UTC the day before.
    assert row["valid_from"].isoformat() == "2026-11-30T15:00:00+00:00"
    assert audited == 1
    page = await client.get(answer.headers["location"])
    assert "週末限定 10%オフ" in page.text
    assert "10%引き（上限￥1,000）" in page.text or "10%引き（上限¥1,000）" in page.text


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"name": ""}, "name", "名前を1〜100文字"),
    ({"percent": "150"}, "percent", "1〜100の整数"),
    ({"percent": "abc"}, "percent", "1〜100の整数"),
    ({"valid_until": "2026-11-01T00:00"}, "valid_until", "開始より後の終了日時"),
    ({"public_code": "A!"}, "public_code", "英数字とハイフンで4〜32文字"),
    ({"validity_kind": "days_after_issue", "days": "0"}, "days", "日数を1〜3650"),
    ({"validity_kind": "days_after_issue", "days": "30", "public_code": "WINTER26"},
     "validity", "期間の指定が必要"),
    ({"total_limit": "-1"}, "total_limit", "0以上の数"),
])
async def test_bad_input_shows_the_form_again_with_the_message_and_saves_nothing(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
    change: dict[str, str], field: str, message: str,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/coupons",
                               data={**TEMPLATE_FORM, **change, "csrf_token": token})
    assert answer.status_code == 400
    assert f'id="{field}-error"' in answer.text
    assert message in answer.text
    assert "テンプレートは保存されていません" in answer.text
    assert await count_rows(settings, "select count(*) from coupon_templates") == 1


async def test_a_taken_public_code_is_shown_next_to_its_field(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    form = {**TEMPLATE_FORM, "public_code": "WINTER26", "csrf_token": token}
    assert (await client.post("/console/coupons", data=form)).status_code == 303
    again = await client.post("/console/coupons", data=form)
    assert again.status_code == 400
    assert "この公開コードはすでに使われています" in again.text
    assert await count_rows(settings, "select count(*) from coupon_templates") == 2


async def test_posts_without_the_csrf_token_change_nothing(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    await sign_in(client, "marketer")
    tid = promotions.template_id
    answers = [
        await client.post("/console/coupons", data=TEMPLATE_FORM),
        await client.post(f"/console/coupons/{tid}/batches",
                          data={"count": "5", "key": "console-" + "a" * 32}),
        await client.post(f"/console/coupons/{tid}/issue",
                          data={"segment_id": str(promotions.segment_id),
                                "key": "console-" + "b" * 32, "csrf_token": "wrong"}),
    ]
    assert [a.status_code for a in answers] == [403, 403, 403]
    assert "セキュリティトークン" in answers[0].text
    assert await count_rows(settings, "select count(*) from coupon_templates") == 1
    assert await count_rows(settings, "select count(*) from coupon_code_batches") == 0
    assert await count_rows(settings, "select count(*) from member_coupons") == 0


async def test_a_batch_is_made_once_per_form_and_downloads_as_csv_for_excel(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    page = await client.get(f"/console/coupons/{promotions.template_id}")
    assert "このテンプレートのコードはまだ発行されていません" in page.text
    form = {"count": "25", "prefix": "XMAS", "key": _key_of(page), "csrf_token": token}
    first = await client.post(f"/console/coupons/{promotions.template_id}/batches", data=form)
    second = await client.post(f"/console/coupons/{promotions.template_id}/batches", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert await count_rows(settings, "select count(*) from coupon_code_batches") == 1
    assert await count_rows(settings, "select count(*) from coupon_codes") == 25
    shown = await client.get(first.headers["location"])
    assert "コードを発行しました" in shown.text
    link = re.search(r'href="(/console/coupons/[^"]+/codes\.csv)"', shown.text)
    assert link, shown.text
    download = await client.get(link.group(1))
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="coupon-codes-\d{8}-[0-9a-f]{12}\.csv"',
                        download.headers["content-disposition"])
    assert download.content.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in download.content
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert rows[0] == ["code", "coupon", "batch"]
    codes = [row[0] for row in rows[1:]]
    assert len(codes) == len(set(codes)) == 25
    for code in codes:
        assert code.startswith("XMAS-")
        assert code[0] not in "=+-@"
        assert is_well_formed(normalize_code(code))
    assert {row[1] for row in rows[1:]} == {TEMPLATE}
    stored = {r["code"] for r in await _fetch(settings, "select code from coupon_codes")}
    assert {normalize_code(code) for code in codes} == stored


async def _fetch(settings: Settings, sql: str) -> list[asyncpg.Record]:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_a_template_name_that_looks_like_a_formula_is_escaped_in_the_csv(
    client: httpx.AsyncClient, promotions: Promotions,
) -> None:
    token = await sign_in(client, "marketer")
    made = await client.post("/console/coupons", data={
        **TEMPLATE_FORM, "name": "=HYPERLINK(\"http://x\")", "csrf_token": token})
    location = made.headers["location"]
    page = await client.get(location)
    answer = await client.post(f"{location}/batches", data={
        "count": "1", "prefix": "", "key": _key_of(page), "csrf_token": token})
    shown = await client.get(answer.headers["location"])
    link = re.search(r'href="(/console/coupons/[^"]+/codes\.csv)"', shown.text)
    assert link
    rows = list(csv.reader(io.StringIO(
        (await client.get(link.group(1))).content.decode("utf-8-sig"))))
    assert rows[1][1] == "'=HYPERLINK(\"http://x\")"


@pytest.mark.parametrize(("count", "prefix", "field"), [
    ("0", "", "count"), ("100001", "", "count"), ("x", "", "count"), ("5", "O0!", "prefix")])
async def test_a_bad_batch_form_is_a_400_next_to_the_field_and_makes_nothing(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
    count: str, prefix: str, field: str,
) -> None:
    token = await sign_in(client, "marketer")
    page = await client.get(f"/console/coupons/{promotions.template_id}")
    answer = await client.post(f"/console/coupons/{promotions.template_id}/batches", data={
        "count": count, "prefix": prefix, "key": _key_of(page), "csrf_token": token})
    assert answer.status_code == 400
    assert f'id="{field}-error"' in answer.text
    assert await count_rows(settings, "select count(*) from coupon_code_batches") == 0


async def test_a_batch_of_another_template_is_not_downloaded(
    client: httpx.AsyncClient, promotions: Promotions,
) -> None:
    await sign_in(client, "marketer")
    other = "00000000-0000-7000-8000-000000000001"
    answer = await client.get(f"/console/coupons/{promotions.template_id}/batches/{other}"
                              "/codes.csv")
    assert answer.status_code == 400
    assert "text/html" in answer.headers["content-type"]


async def test_issuing_to_a_segment_confirms_the_count_and_issues_once_under_a_double_submit(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get(f"/console/coupons/{promotions.template_id}")
    assert SEGMENT in page.text
    confirm = await client.get(f"/console/coupons/{promotions.template_id}/issue",
                               params={"segment_id": str(promotions.segment_id)})
    assert confirm.status_code == 200
    assert "会員3人に配布しますか" in confirm.text
    form = {"segment_id": str(promotions.segment_id), "key": _key_of(confirm),
            "csrf_token": csrf_of(confirm)}
    url = f"/console/coupons/{promotions.template_id}/issue"
    first, second = await asyncio.gather(client.post(url, data=form),
                                         client.post(url, data=form))
    assert first.status_code == second.status_code == 200
    for answer in (first, second):
        assert "クーポンを3枚配布しました" in answer.text
    assert sum("送信済み" in answer.text for answer in (first, second)) == 1
    assert await count_rows(settings, "select count(*) from member_coupons") == 3
    assert await count_rows(settings, "select count(*) from coupon_issues") == 1
    # A new confirmation is a new key: issuing again is a second issue.
    again = await client.get(url, params={"segment_id": str(promotions.segment_id)})
    assert _key_of(again) != form["key"]


async def test_issuing_to_an_unknown_segment_is_a_400_and_issues_nothing(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    url = f"/console/coupons/{promotions.template_id}/issue"
    unknown = await client.get(url, params={"segment_id": "not-a-segment"})
    assert unknown.status_code == 400
    assert 'id="segment-error"' in unknown.text
    posted = await client.post(url, data={
        "segment_id": "00000000-0000-7000-8000-000000000009",
        "key": "console-" + "c" * 32, "csrf_token": token})
    assert posted.status_code == 400
    bad_key = await client.post(url, data={
        "segment_id": str(promotions.segment_id), "key": "x", "csrf_token": token})
    assert bad_key.status_code == 400
    assert await count_rows(settings, "select count(*) from member_coupons") == 0


async def test_the_next_page_of_templates_comes_as_rows_for_htmx(
    client: httpx.AsyncClient, promotions: Promotions,
) -> None:
    token = await sign_in(client, "marketer")
    for n in range(26):
        await client.post("/console/coupons", data={
            **TEMPLATE_FORM, "name": f"テンプレート{n:02d}", "csrf_token": token})
    first = await client.get("/console/coupons")
    found = re.search(r'hx-get="/console/coupons\?cursor=([^"]+)"', first.text)
    assert found
    assert "テンプレート25" in first.text
    assert TEMPLATE not in first.text
    rows = await client.get(f"/console/coupons?cursor={found.group(1)}",
                            headers={"HX-Request": "true"})
    assert rows.status_code == 200
    assert "<html" not in rows.text
    assert TEMPLATE in rows.text
    assert "テンプレート00" in rows.text


async def test_every_mistake_on_the_template_form_is_shown_at_once(
    client: httpx.AsyncClient, promotions: Promotions, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/coupons", data={
        **TEMPLATE_FORM, "name": "", "percent": "0", "per_member_limit": "0",
        "public_code": "!", "csrf_token": token})
    assert answer.status_code == 400
    for field in ("name", "percent", "per_member_limit", "public_code"):
        assert f'id="{field}-error"' in answer.text
    assert 'id="cap-error"' not in answer.text
    assert await count_rows(settings, "select count(*) from coupon_templates") == 1
