"""The Campaigns pages over HTTP: making a campaign from a segment (wrong fields refused next
to the field), the launch confirmation's reach and cost, launching once however often it is
posted, the results against the control group, and what an analyst or a post without its
CSRF token may not do."""

from __future__ import annotations

import re
from typing import Any, get_args
from uuid import UUID

import asyncpg
import httpx
import pytest
from babel.messages.pofile import read_po

from console import campaigns, segments
from console.i18n import LANGUAGES, LOCALE
from loyalty.core.settings import Settings
from schemas.campaigns import CampaignStatus
from tests.console.campaign_seed import BUYERS, NON_BUYERS, buy_after_launch, more_members
from tests.console.seed import seed
from tests.console.test_console_http import sign_in

EVERYONE = BUYERS + NON_BUYERS
CAMPAIGN = re.compile(r"/console/campaigns/([0-9a-f-]{36})$")


@pytest.fixture
async def seeded(settings: Settings) -> str:
    assert settings.database_url
    await seed(settings.database_url)
    await more_members(settings.database_url)
    return settings.database_url


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def a_segment(client: httpx.AsyncClient, token: str) -> str:
    saved = await client.post("/console/segments/new", data={
        "csrf_token": token, "name": "有効な会員", "match": "all", "c0.type": "status",
        "c0.statuses": ["active"]})
    assert saved.status_code == 303, saved.text
    return saved.headers["location"].split("/")[-1].split("?")[0]


def campaign_form(segment: str, **fields: str) -> dict[str, str]:
    return {"name": "冬のボーナス", "description": "", "segment_id": segment,
            "action": "bonus_points", "points": "100", "reason": "Campaign bonus",
            "holdout_percent": "50", "max_members": "", "channel": "", "starts_at": "",
            "ends_at": "", **fields}


async def a_campaign(client: httpx.AsyncClient, token: str, segment: str,
                     **fields: str) -> str:
    made = await client.post("/console/campaigns/new",
                             data={"csrf_token": token, **campaign_form(segment, **fields)})
    assert made.status_code == 303, made.text
    found = CAMPAIGN.search(made.headers["location"])
    assert found
    return found.group(1)


async def test_a_marketer_makes_confirms_launches_and_reads_results(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "marketer")
    empty = await client.get("/console/campaigns")
    assert empty.status_code == 200
    assert "まだキャンペーンはありません" in empty.text
    segment = await a_segment(client, token)
    form = await client.get("/console/campaigns/new", params={"segment_id": segment})
    assert form.status_code == 200
    assert f'<option value="{segment}" selected>有効な会員</option>' in form.text

    campaign = await a_campaign(client, token, segment)
    page = await client.get(f"/console/campaigns/{campaign}")
    assert "下書き" in page.text
    assert f'href="/console/campaigns/{campaign}/launch"' in page.text
    listing = await client.get("/console/campaigns")
    assert "冬のボーナス" in listing.text
    assert "下書き" in listing.text

    before = await client.get(f"/console/campaigns/{campaign}/results")
    assert before.status_code == 200
    assert "まだ実施されていない" in before.text
    assert "<svg" not in before.text

    confirm = await client.get(f"/console/campaigns/{campaign}/launch")
    assert confirm.status_code == 200
    # 23 reachable members, half held out: 12 control (rounded), 11 treated; 100 points each.
    assert f"現在の対象は {EVERYONE} 人です" in confirm.text
    assert "このうち 12 人（50%）が無作為に対照群" in confirm.text
    assert "施策を受けるのは 11 人です" in confirm.text
    assert "合計 1,100 ポイント" in confirm.text
    assert "￥1,100" in confirm.text
    assert "今すぐ実施" in confirm.text
    assert await fetch(seeded, "select 1 from campaign_members") == []  # nothing done yet

    # Posted twice (a double click, a retry): launched once.
    for _ in range(2):
        launched = await client.post(f"/console/campaigns/{campaign}/launch",
                                     data={"csrf_token": token})
        assert launched.status_code == 303
        assert launched.headers["location"] == f"/console/campaigns/{campaign}?launched=1"
    groups = {r["arm"]: r["n"] for r in await fetch(
        seeded, "select arm, count(*) as n from campaign_members group by arm")}
    assert groups == {"treated": 11, "control": 12}
    entries = await fetch(seeded, "select amount from point_entries where grant_id is not null")
    assert [r["amount"] for r in entries] == [100] * 11
    page = await client.get(f"/console/campaigns/{campaign}?launched=1")
    assert "実施しました" in page.text
    assert "実施済み" in page.text
    assert "/launch" not in page.text
    again = await client.get(f"/console/campaigns/{campaign}/launch")
    assert "実施済みです" in again.text
    assert "今すぐ実施" not in again.text

    await buy_after_launch(seeded, UUID(campaign), treated_share=0.6, control_share=0.25)
    results = await client.get(f"/console/campaigns/{campaign}/results")
    assert results.status_code == 200
    rects = re.findall(r'<rect class="(treated|control)" x="0" y="\d+" width="([\d.]+)"',
                       results.text)
    widths = dict(rects)
    assert float(widths["treated"]) > float(widths["control"]) > 0
    assert re.search(r'<path class="interval" d="M[\d.]+,84.0 L[\d.]+,84.0', results.text)
    assert "購買率" in results.text
    assert "1人あたり売上" in results.text
    # 7 of 11 treated bought, 3 of 12 in control: 63.6% against 25.0%, +38.6 points.
    for figure in ("63.6%", "25.0%", "+38.6 pt"):
        assert figure in results.text


async def test_a_campaign_without_a_control_group_has_no_uplift_to_draw(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "admin")
    campaign = await a_campaign(client, token, await a_segment(client, token),
                                holdout_percent="0")
    await client.post(f"/console/campaigns/{campaign}/launch", data={"csrf_token": token})
    results = await client.get(f"/console/campaigns/{campaign}/results")
    assert results.status_code == 200
    assert "対照群がない" in results.text
    assert "<svg" not in results.text
    assert "施策群と対照群の比較" in results.text  # the figures are still there


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"holdout_percent": "95"}, "holdout_percent", "Expected `int` &lt;= 90"),
    ({"holdout_percent": "半分"}, "holdout_percent", "整数を入力してください"),
    ({"points": "0"}, "points", "Expected `int` &gt;= 1"),
    ({"name": ""}, "name", "Expected `str` of length &gt;= 1"),
    ({"segment_id": ""}, "segment_id", "セグメントを選んでください"),
    ({"segment_id": "00000000-0000-7000-8000-000000000000"}, "segment_id", "no such segment"),
    ({"action": "points_multiplier", "percent": "200"}, "ends_at",
     "a points multiplier campaign needs ends_at"),
    ({"starts_at": "2026-12-24T10:00", "ends_at": "2026-12-01T10:00"}, "ends_at",
     "ends_at must be after starts_at"),
    ({"starts_at": "クリスマス"}, "starts_at", "2026-12-24 10:00 のように"),
    ({"action": "issue_coupon"}, "template_id", "クーポンのテンプレートを選んでください"),
    ({"action": "event_invitation"}, "event_id", "招待するイベントを選んでください"),
    ({"action": "event_invitation", "event_id": "not-an-id"}, "event_id", "Invalid UUID"),
    ({"action": "issue_coupon", "template_id": "00000000-0000-7000-8000-000000000000"},
     "template_id", "no active coupon template with this id"),
    ({"action": "horoscope"}, "action", "キャンペーンの施策を選んでください"),
])
async def test_a_wrong_field_is_a_400_next_to_it_and_makes_nothing(
    client: httpx.AsyncClient, seeded: str, fields: dict[str, str], field: str, message: str,
) -> None:
    token = await sign_in(client, "marketer")
    segment = await a_segment(client, token)
    form = campaign_form(segment, **fields)
    made = await client.post("/console/campaigns/new", data={"csrf_token": token, **form})
    assert made.status_code == 400
    shown = re.search(rf'<p class="error" id="{field}-error" role="alert">([^<]*)</p>',
                      made.text)
    assert shown, made.text
    assert message in shown.group(1)
    assert f'aria-describedby="{field}-error"' in made.text
    assert "キャンペーンは作成されていません" in made.text
    assert await fetch(seeded, "select 1 from campaigns") == []


async def test_an_analyst_reads_campaigns_but_makes_and_launches_none(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    marketer = await sign_in(client, "marketer")
    campaign = await a_campaign(client, marketer, await a_segment(client, marketer))
    token = await sign_in(client, "analyst")
    listing = await client.get("/console/campaigns")
    assert listing.status_code == 200
    assert "冬のボーナス" in listing.text
    assert "/console/campaigns/new" not in listing.text
    page = await client.get(f"/console/campaigns/{campaign}")
    assert page.status_code == 200
    assert "/launch" not in page.text
    assert (await client.get("/console/campaigns/new")).status_code == 403
    assert (await client.get(f"/console/campaigns/{campaign}/launch")).status_code == 403
    refused = await client.post(f"/console/campaigns/{campaign}/launch",
                                data={"csrf_token": token})
    assert refused.status_code == 403
    made = await client.post("/console/campaigns/new",
                             data={"csrf_token": token, **campaign_form(str(UUID(int=1)))})
    assert made.status_code == 403
    assert [r["status"] for r in await fetch(seeded, "select status from campaigns")] == [
        "draft"]
    assert (await client.get(f"/console/campaigns/{campaign}/results")).status_code == 200


async def test_support_may_not_open_campaigns(client: httpx.AsyncClient, seeded: str) -> None:
    await sign_in(client, "support")
    assert "/console/campaigns" not in (await client.get("/console")).text
    assert (await client.get("/console/campaigns")).status_code == 403


async def test_posts_without_the_csrf_token_change_nothing(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "marketer")
    campaign = await a_campaign(client, token, segment := await a_segment(client, token))
    refused = await client.post(f"/console/campaigns/{campaign}/launch", data={})
    assert refused.status_code == 403
    wrong = await client.post(f"/console/campaigns/{campaign}/launch",
                              data={"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    made = await client.post("/console/campaigns/new", data=campaign_form(segment))
    assert made.status_code == 403
    assert [r["status"] for r in await fetch(seeded, "select status from campaigns")] == [
        "draft"]
    assert await fetch(seeded, "select 1 from campaign_members") == []


async def test_a_later_start_is_scheduled_not_launched(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "marketer")
    campaign = await a_campaign(client, token, await a_segment(client, token),
                                starts_at="2099-12-24T10:00")
    confirm = await client.get(f"/console/campaigns/{campaign}/launch")
    assert "開始は後日です" in confirm.text
    assert "キャンペーンを予約" in confirm.text
    await client.post(f"/console/campaigns/{campaign}/launch", data={"csrf_token": token})
    page = await client.get(f"/console/campaigns/{campaign}?launched=1")
    assert "予約しました" in page.text
    assert await fetch(seeded, "select 1 from campaign_members") == []


def test_the_pages_own_messages_are_in_both_catalogues() -> None:
    """What the segments and campaigns modules say from Python (messages, condition types,
    statuses, measures) is translated as the templates' messages are."""
    said = set(segments.MESSAGES) | set(segments.KIND_LABELS.values()) | set(
        campaigns.MESSAGES) | set(get_args(CampaignStatus)) | {
        "Purchase rate", "Revenue per member"}
    for language in LANGUAGES:
        with (LOCALE / language / "LC_MESSAGES" / "console.po").open("rb") as po:
            catalogue = {m.id: m.string for m in read_po(po) if m.id}
        assert sorted(said - set(catalogue)) == [], language
        if language == "ja":
            assert [m for m in said if not catalogue[m]] == []


async def test_every_page_reads_in_english_too(
    client: httpx.AsyncClient, seeded: str,
) -> None:
    token = await sign_in(client, "marketer")
    await client.post("/console/language",
                      data={"language": "en", "back": "/console", "csrf_token": token})
    segment = await a_segment(client, token)
    campaign = await a_campaign(client, token, segment, max_members="5")
    expected = {
        "/console/segments": "Saved segments, newest first",
        "/console/segments/new": "Members matching now:",
        f"/console/segments/{segment}": "Save changes",
        "/console/campaigns": "Campaigns, newest first",
        "/console/campaigns/new": "Control group: share of the audience held back (%)",
        f"/console/campaigns/{campaign}": "at most 5 treated members",
        f"/console/campaigns/{campaign}/launch": "(50%) are drawn at random",
        f"/console/campaigns/{campaign}/results": "has not been launched",
    }
    for path, text in expected.items():
        page = await client.get(path)
        assert page.status_code == 200, path
        assert text in page.text, path
    await client.post(f"/console/campaigns/{campaign}/launch", data={"csrf_token": token})
    results = await client.get(f"/console/campaigns/{campaign}/results")
    assert "95% interval" in results.text
    assert "Revenue per member" in results.text
