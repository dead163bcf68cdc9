"""The Segments pages over HTTP: the list, the builder over every condition type, its live
count (a sample of members for identifier readers only), saving and editing, and what an
analyst, a bad condition or a missing CSRF token may not do."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import httpx
import pytest

from loyalty.core.settings import Settings
from tests.conftest import AppWith
from tests.console.campaign_seed import BUYERS, NON_BUYERS, more_members
from tests.console.seed import seed
from tests.console.test_console_http import sign_in
from tests.factories import make_members, query

COUNT = re.compile(r'<strong id="segment-count">([\d,]+)</strong>')
HTMX = {"HX-Request": "true"}
EVERYONE = BUYERS + NON_BUYERS


@pytest.fixture
async def seeded(settings: Settings) -> str:
    assert settings.database_url
    await seed(settings.database_url)
    await more_members(settings.database_url)
    return settings.database_url


def count_of(page: httpx.Response) -> int:
    found = COUNT.search(page.text)
    assert found, page.text
    return int(found.group(1).replace(",", ""))


def rows(*conditions: dict[str, Any], match: str = "all") -> dict[str, Any]:
    """The builder's form fields for ``conditions`` (each: type plus its fields)."""
    form: dict[str, Any] = {"match": match}
    for i, condition in enumerate(conditions):
        for name, value in condition.items():
            form[f"c{i}.{name}"] = value
    return form


ACTIVE = {"type": "status", "statuses": ["active"]}
BOUGHT = {"type": "purchase_count", "days": "90", "at_least": "1"}


async def saved_segments(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return [r["name"] for r in await conn.fetch("select name from segments order by name")]
    finally:
        await conn.close()


async def test_a_marketer_builds_counts_and_saves_a_segment(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "marketer")
    listing = await client.get("/console/segments")
    assert listing.status_code == 200
    assert '<a href="/console/segments" aria-current="page">' in listing.text
    assert "まだ保存されたセグメントはありません" in listing.text
    assert 'href="/console/segments/new"' in listing.text

    builder = await client.get("/console/segments/new")
    assert builder.status_code == 200
    assert count_of(builder) == EVERYONE
    assert "セグメントを保存" in builder.text
    assert 'class="sample"' in builder.text  # marketers see a few member numbers

    # The live count: the partial answers to every change, narrower with a purchase condition.
    wide = await client.post("/console/segments/preview", headers=HTMX,
                             data={"csrf_token": token, **rows(ACTIVE)})
    assert wide.status_code == 200
    assert count_of(wide) == EVERYONE
    assert "<html" not in wide.text
    added = await client.post("/console/segments/build", headers=HTMX, data={
        "csrf_token": token, "op": "add", "add_type": "purchase_count", **rows(ACTIVE)})
    assert added.status_code == 200
    assert added.text.startswith('\n<div id="builder"') or '<div id="builder"' in added.text[:2000]
    assert 'name="c1.type" value="purchase_count"' in added.text
    assert count_of(added) == BUYERS
    # ... and "any" widens it again.
    either = await client.post("/console/segments/preview", headers=HTMX, data={
        "csrf_token": token, **rows(ACTIVE, BOUGHT, match="any")})
    assert count_of(either) == EVERYONE
    removed = await client.post("/console/segments/build", headers=HTMX, data={
        "csrf_token": token, "op": "remove-1", **rows(ACTIVE, BOUGHT)})
    assert 'name="c1.type"' not in removed.text
    assert count_of(removed) == EVERYONE

    saved = await client.post("/console/segments/new", data={
        "csrf_token": token, "name": "最近買った会員", "description": "90日以内に購入",
        **rows(ACTIVE, BOUGHT)})
    assert saved.status_code == 303, saved.text
    page = await client.get(saved.headers["location"])
    assert "保存しました" in page.text
    assert count_of(page) == BUYERS
    assert 'value="最近買った会員"' in page.text
    assert 'name="c1.days" type="number" value="90"' in page.text
    assert "最近買った会員" in (await client.get("/console/segments")).text

    # Editing: the same builder saves over it.
    segment_path = saved.headers["location"].split("?")[0]
    changed = await client.post(segment_path, data={
        "csrf_token": token, "name": "購入なし", **rows({**BOUGHT, "not": "true"})})
    assert changed.status_code == 303
    page = await client.get(segment_path)
    assert count_of(page) == NON_BUYERS
    assert 'name="c0.not" value="true" checked' in page.text
    assert await saved_segments(seeded) == ["購入なし"]


EVERY_KIND: tuple[dict[str, Any], ...] = (
    {"type": "status", "statuses": ["active", "dormant"]},
    {"type": "tier", "codes": "GOLD, SILVER", "no_tier": "true"},
    {"type": "joined", "within_days": "365", "after": "2020-01-01"},
    {"type": "last_activity", "more_than_days_ago": "1", "before": "2100-01-01", "not": "true"},
    {"type": "spend", "days": "365", "at_most": "100000000"},
    {"type": "purchase_count", "days": "30", "at_least": "0", "at_most": "1000"},
    {"type": "rfm", "recency": ["1", "2", "3", "4", "5"], "not": "true"},
    {"type": "at_risk", "flagged": "false"},
    {"type": "attribute", "key": "favourite_store", "op": "not_exists", "kind": "text"},
    # Never asked counts as granted for data_analysis alone (docs/privacy.md, "Consent").
    {"type": "consent", "purpose": "data_analysis", "granted": "true"},
    {"type": "stores", "codes": "NOWHERE", "within_days": "30", "not": "true"},
    # No model run and nobody flagged: the at-risk flag decides, and nobody is at risk.
    {"type": "churn_risk", "p_alive_below": "12.5", "not": "true"},
    # Nobody proved a phone number (members without one included).
    {"type": "verified", "channel": "phone", "verified": "false"},
)


async def test_every_condition_type_counts_saves_and_comes_back(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "admin")
    preview = await client.post("/console/segments/preview", headers=HTMX,
                                data={"csrf_token": token, **rows(*EVERY_KIND)})
    assert preview.status_code == 200, preview.text
    # Every member passes each of these: the builder's conditions reach the API's compiler.
    assert count_of(preview) == EVERYONE
    saved = await client.post("/console/segments/new", data={
        "csrf_token": token, "name": "全種類", **rows(*EVERY_KIND)})
    assert saved.status_code == 303, saved.text
    page = await client.get(saved.headers["location"])
    for i, condition in enumerate(EVERY_KIND):
        assert f'name="c{i}.type" value="{condition["type"]}"' in page.text
    assert 'value="GOLD, SILVER"' in page.text
    assert 'name="c2.after" type="date" value="2020-01-01"' in page.text
    assert 'name="c8.key" type="text" value="favourite_store"' in page.text
    assert 'value="data_analysis" selected' in page.text
    assert 'name="c11.p_alive_below" type="number" value="12.5"' in page.text
    assert 'name="c11.not" value="true" checked' in page.text
    assert re.search(r'name="c12.channel">\s*<option value="email">[^<]*</option>'
                     r'<option value="phone" selected>', page.text), page.text
    assert '<option value="false" selected>未確認（登録なしを含む）</option>' in page.text
    assert count_of(page) == EVERYONE
    # An attribute compared as a number, and a value list.
    numbers = await client.post("/console/segments/preview", headers=HTMX, data={
        "csrf_token": token, **rows({"type": "attribute", "key": "age", "op": "gte",
                                     "value": "20"},
                                    {"type": "attribute", "key": "pref", "op": "in",
                                     "kind": "text", "value": "東京, 大阪"}, match="any")})
    assert numbers.status_code == 200
    assert count_of(numbers) == 0
    assert "該当する会員はいません" in numbers.text


@pytest.mark.parametrize(("condition", "message"), [
    ({"type": "spend", "days": "90"}, "give at_least, at_most or both"),
    ({"type": "spend", "days": "", "at_least": "100"}, "何日前までさかのぼるか"),
    ({"type": "purchase_count", "days": "0", "at_least": "1"}, "Expected `int` &gt;= 1"),
    ({"type": "purchase_count", "days": "九十", "at_least": "1"}, "整数"),
    ({"type": "joined", "after": "2026-13-01"}, "YYYY-MM-DD"),
    ({"type": "joined", "within_days": "10", "more_than_days_ago": "30"},
     "more_than_days_ago must be less than within_days"),
    ({"type": "status"}, "Expected `array` of length &gt;= 1"),
    ({"type": "attribute", "key": "", "op": "exists"}, "Expected `str` of length &gt;= 1"),
    ({"type": "attribute", "key": "age", "op": "gt", "value": "twenty"}, "数値"),
    ({"type": "stores", "codes": ""}, "Expected `array` of length &gt;= 1"),
    ({"type": "churn_risk", "p_alive_below": "0"}, "0 より大きく 100 以下"),
    ({"type": "churn_risk", "p_alive_below": "三割"}, "0 より大きく 100 以下"),
    ({"type": "verified", "channel": "fax"}, "Invalid enum value &#39;fax&#39;"),
])
async def test_a_wrong_condition_is_a_400_naming_it_and_saves_nothing(
    client: httpx.AsyncClient, seeded: str, condition: dict[str, Any], message: str,
) -> None:
    token = await sign_in(client, "marketer")
    preview = await client.post("/console/segments/preview", headers=HTMX,
                                data={"csrf_token": token, **rows(ACTIVE, condition)})
    assert preview.status_code == 400
    # The message lands next to the second row (out of band), the first row's slot is empty.
    assert '<p class="error row-error" id="c0-error" hx-swap-oob="true"></p>' in preview.text
    second = re.search(r'id="c1-error" hx-swap-oob="true">([^<]+)</p>', preview.text)
    assert second, preview.text
    assert message in second.group(1)
    saved = await client.post("/console/segments/new", data={
        "csrf_token": token, "name": "だめな定義", **rows(ACTIVE, condition)})
    assert saved.status_code == 400
    assert message in saved.text
    assert 'value="だめな定義"' in saved.text  # the form comes back as typed
    assert await saved_segments(seeded) == []


async def test_a_nameless_or_empty_segment_is_refused(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "marketer")
    nameless = await client.post("/console/segments/new",
                                 data={"csrf_token": token, "name": " ", **rows(ACTIVE)})
    assert nameless.status_code == 400
    assert "セグメントに名前を付けてください" in nameless.text
    empty = await client.post("/console/segments/new", data={"csrf_token": token, "name": "空"})
    assert empty.status_code == 400
    assert "条件を一つ以上追加してください" in empty.text
    unknown = await client.post("/console/segments/new", data={
        "csrf_token": token, "name": "謎", "c0.type": "horoscope"})
    assert unknown.status_code == 400
    assert await saved_segments(seeded) == []


async def test_an_analyst_counts_but_sees_no_member_and_saves_nothing(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "analyst")
    listing = await client.get("/console/segments")
    assert listing.status_code == 200
    assert "新しいセグメント" not in listing.text
    builder = await client.get("/console/segments/new")
    assert builder.status_code == 200
    assert count_of(builder) == EVERYONE
    assert 'class="sample"' not in builder.text
    assert "セグメントを保存" not in builder.text
    assert 'action="/console/segments/build"' in builder.text
    preview = await client.post("/console/segments/preview", headers=HTMX,
                                data={"csrf_token": token, **rows(ACTIVE, BOUGHT)})
    assert count_of(preview) == BUYERS
    assert 'class="sample"' not in preview.text
    added = await client.post("/console/segments/build", headers=HTMX, data={
        "csrf_token": token, "op": "add", "add_type": "rfm", **rows(ACTIVE)})
    assert added.status_code == 200
    refused = await client.post("/console/segments/new", data={
        "csrf_token": token, "name": "分析者の", **rows(ACTIVE)})
    assert refused.status_code == 403
    assert await saved_segments(seeded) == []


async def test_support_may_not_open_segments(client: httpx.AsyncClient, seeded: str) -> None:
    await sign_in(client, "support")
    assert "/console/segments" not in (await client.get("/console")).text
    assert (await client.get("/console/segments")).status_code == 403
    assert (await client.get("/console/segments/new")).status_code == 403


async def test_posts_without_the_csrf_token_change_nothing(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    await sign_in(client, "marketer")
    for path in ("/console/segments/new", "/console/segments/preview",
                 "/console/segments/build"):
        refused = await client.post(path, data={"name": "トークンなし", **rows(ACTIVE)})
        assert refused.status_code == 403, path
    assert await saved_segments(seeded) == []


async def test_an_unknown_segment_is_a_page_saying_so(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    await sign_in(client, "marketer")
    missing = await client.get("/console/segments/00000000-0000-7000-8000-000000000000")
    assert missing.status_code in (400, 404)
    assert "no such segment" in missing.text


async def test_without_script_the_buttons_post_whole_pages(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "marketer")
    added = await client.post("/console/segments/build", data={
        "csrf_token": token, "op": "add", "add_type": "stores", "name": "途中",
        **rows(ACTIVE)})
    assert added.status_code == 200
    assert added.text.startswith("<!doctype html>")
    assert 'name="c1.type" value="stores"' in added.text
    assert 'value="途中"' in added.text  # what was typed stays
    # The new stores row has no codes yet: said next to it, no count until it is filled in.
    assert "Expected `array` of length &gt;= 1" in added.text
    assert 'id="segment-count"' not in added.text
    counted = await client.post("/console/segments/build", data={
        "csrf_token": token, "op": "count", **rows(ACTIVE, BOUGHT)})
    assert count_of(counted) == BUYERS


async def test_a_nested_definition_is_shown_not_rebuilt(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    conn = await asyncpg.connect(seeded)
    try:
        segment_id = await conn.fetchval(
            "insert into segments (name, description, definition, created_at, updated_at)"
            " values ('入れ子', '', $1::text::jsonb, now(), now()) returning segment_id",
            '{"type": "all", "conditions": [{"type": "any", "conditions": ['
            '{"type": "status", "statuses": ["active"]},'
            '{"type": "at_risk"}]}]}')
    finally:
        await conn.close()
    await sign_in(client, "marketer")
    page = await client.get(f"/console/segments/{segment_id}")
    assert page.status_code == 200
    assert "入れ子にしている" in page.text
    assert "PATCH /v1/segments/{segment_id}" in page.text
    assert count_of(page) == EVERYONE
    assert "変更を保存" not in page.text
    assert "hx-post=\"/console/segments/preview\"" not in page.text


# -- a large programme: an estimate, and an exact count when asked ---------------------------

ESTIMATED = re.compile(r'<strong id="segment-count" data-estimated="true">約 ([\d,]+)</strong>')
RANGE = re.compile(r"おそらく ([\d,]+)〜([\d,]+) 人")
CROWD = 4000


def number(text: str) -> int:
    return int(text.replace(",", ""))


async def test_past_the_exact_count_limit_the_builder_estimates_and_counts_exactly_on_request(
    app_with: AppWith, settings: Settings,
) -> None:
    assert settings.database_url
    await seed(settings.database_url)
    await more_members(settings.database_url)
    await make_members(settings.database_url, CROWD)
    await query(settings.database_url, "analyze members")
    active = (await query(settings.database_url,
                          "select count(*) from members where status = 'active'"))[0][0]
    assert active > CROWD
    async with app_with(segment_exact_count_up_to=1000, segment_sample_members=800) as (
            client, _):
        token = await sign_in(client, "marketer")
        builder = await client.get("/console/segments/new")
        assert builder.status_code == 200
        shown = ESTIMATED.search(builder.text)
        assert shown, builder.text
        bounds = RANGE.search(builder.text)
        assert bounds, builder.text
        low, high = number(bounds.group(1)), number(bounds.group(2))
        assert low <= number(shown.group(1)) <= high
        assert low <= active <= high
        assert "正確に数える" in builder.text
        # A few of the members it selects, named from the sample the estimate read (the first
        # of the whole table took seconds to find for a rare condition): each of them active.
        assert "抽出した会員のうち条件に合う 10 人（会員ID順）" in builder.text
        listed = re.findall(r"<tr><td>(\d+)</td></tr>", builder.text)
        assert len(listed) == 10
        statuses = await query(settings.database_url,
                               "select distinct status from members where member_number = any($1)",
                               listed)
        assert [r[0] for r in statuses] == ["active"]

        # Asked for, the exact count: the builder again, counted.
        counted = await client.post("/console/segments/build", headers=HTMX, data={
            "csrf_token": token, "op": "exact", **rows(ACTIVE)})
        assert counted.status_code == 200
        assert count_of(counted) == active
        assert 'data-estimated' not in counted.text
        assert "会員IDの先頭 10 人" in counted.text
        assert "正確に数える" not in counted.text

        # A condition nobody in the sample meets: not "nobody matches", but fewer than.
        none = await client.post("/console/segments/preview", headers=HTMX, data={
            "csrf_token": token, **rows({"type": "status", "statuses": ["suspended"]})})
        assert none.status_code == 200
        assert re.search(r'data-estimated="true">\d+ 人未満</strong>', none.text), none.text
        assert "抽出した会員" in none.text
        assert "該当する会員はいません" not in none.text

    audited = await query(settings.database_url,
                          "select details from audit_log where action = 'segments.preview'"
                          " order by audit_id")
    assert [(d["estimated"], d["count"] == active) for d in (r[0] for r in audited)] == [
        (True, False), (False, True), (True, False)]
