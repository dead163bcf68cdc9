"""The dashboard over HTTP: who may open it, the period it shows, and a bad period refused
with a page that says what to fix."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import msgspec
import pytest
from babel.dates import format_datetime

from console import dashboard
from jobs.catalogue import job_named
from jobs.definition import make_context
from jobs.runs import run_once
from loyalty.core.db import create_pool
from loyalty.core.settings import Settings
from loyalty.insights.rfm import RFM_SEGMENTS, refresh_rfm, rfm_distribution
from tests.console.seed import seed
from tests.console.test_console_http import sign_in
from tests.factories import insert_lot

PATH_D = re.compile(r'<path class="line" d="([^"]*)"')


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["analyst", "marketer", "admin"])
async def test_marketing_readers_see_the_dashboard(client: httpx.AsyncClient, role: str) -> None:
    await sign_in(client, role)
    page = await client.get("/console/dashboard")
    assert page.status_code == 200, page.text
    assert '<a href="/console/dashboard" aria-current="page">' in page.text
    assert "会員" in page.text
    assert "リピート率" in page.text
    assert "この期間の購買はまだありません" not in page.text
    # The last 30 days, the chart across all of them, higher on the days with sales.
    found = PATH_D.search(page.text)
    assert found
    assert found.group(1).count("L") == 29
    assert len({point.split(",")[1] for point in found.group(1).split()}) > 2


@pytest.mark.usefixtures("seeded")
async def test_support_does_not_see_the_dashboard(client: httpx.AsyncClient) -> None:
    await sign_in(client, "support")
    assert "/console/dashboard" not in (await client.get("/console")).text
    refused = await client.get("/console/dashboard")
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]


@pytest.mark.usefixtures("seeded")
async def test_a_chosen_period_is_shown_against_the_one_before(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "marketer")
    await client.post("/console/language", data={
        "language": "en", "back": "/console", "csrf_token": await sign_in_token(client)})
    page = await client.get("/console/dashboard",
                            params={"from": "2025-03-01", "to": "2025-03-07"})
    assert page.status_code == 200, page.text
    assert "2025-03-01 to 2025-03-07 (7 days), compared with 2025-02-22 to 2025-02-28" in page.text
    assert "Sales per day, 2025-03-01 to 2025-03-07" in page.text
    assert "¥0" in page.text  # money in the programme's currency
    # Before the seeded purchases: nothing sold, and the page says what to do.
    assert "No purchases in this period yet" in page.text


async def sign_in_token(client: httpx.AsyncClient) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get("/console")).text)
    assert found
    return found.group(1)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("query", "message"), [
    ({"from": "2025-13-01"}, "from must be a day written YYYY-MM-DD"),
    ({"to": "yesterday"}, "to must be a day written YYYY-MM-DD"),
    ({"from": "2025-03-07", "to": "2025-03-01"}, "from must be on or before to"),
    ({"to": (dt.date.today() + dt.timedelta(days=3)).isoformat()}, "to must not be after today"),
    ({"from": "2000-01-01", "to": "2025-01-01"}, "a period is at most"),
    ({"from": "2025-03-01x"}, ""),
])
async def test_a_bad_period_is_a_400_page_saying_what_to_fix(
    client: httpx.AsyncClient, query: dict[str, str], message: str,
) -> None:
    await sign_in(client, "analyst")
    page = await client.get("/console/dashboard", params=query)
    assert page.status_code == 400, page.text
    assert "text/html" in page.headers["content-type"]
    assert message in page.text


# -- trend by week and month, the cohort heatmap, the RFM grid and a segment's members ------

async def _refresh_rfm(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await refresh_rfm(conn, now=dt.datetime.now(dt.UTC), window_days=365)
    finally:
        await conn.close()


@pytest.fixture
async def scored(settings: Settings, seeded: None) -> dict[str, int]:
    """The seed, RFM-scored: members by segment."""
    assert settings.database_url
    await _refresh_rfm(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        return {s.name: s.members for s in (await rfm_distribution(conn)).segments}
    finally:
        await conn.close()


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("grain", "buckets", "caption"), [
    ("week", 12, "週別売上"), ("month", 12, "月別売上"), ("day", 30, "日別売上")])
async def test_the_trend_is_drawn_by_the_grain_chosen_over_its_default_period(
    client: httpx.AsyncClient, grain: str, buckets: int, caption: str,
) -> None:
    await sign_in(client, "analyst")
    page = await client.get("/console/dashboard", params={"grain": grain})
    assert page.status_code == 200, page.text
    assert f'data-grain="{grain}" data-buckets="{buckets}"' in page.text
    found = PATH_D.search(page.text)
    assert found
    assert found.group(1).count("L") == buckets - 1
    assert f'<option value="{grain}" selected>' in page.text
    assert caption in page.text
    # The period starts where the grain's buckets do: a Monday, the first of a month.
    first = dt.date.fromisoformat(re.search(r'id="from" name="from" type="date" value="([^"]+)"',
                                            page.text).group(1))  # type: ignore[union-attr]
    assert {"week": first.weekday() == 0, "month": first.day == 1,
            "day": True}[grain]


@pytest.mark.usefixtures("seeded")
async def test_an_unknown_grain_is_a_400_page_saying_which_exist(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/dashboard", params={"grain": "year"})
    assert page.status_code == 400
    assert "grain must be one of day, week, month" in page.text


@pytest.mark.usefixtures("seeded")
async def test_the_cohort_heatmap_writes_each_share_in_its_shaded_cell(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "analyst")
    page = await client.get("/console/dashboard")
    assert "入会コホートの継続率" in page.text
    # The seeded members joined 60 days ago, all still active: their cohort's row, 100%
    # written in the darkest cells; months with no one who joined are dashes.
    assert re.search(r'<td class="count">3</td>\s*<td class="heat heat-5">100%</td>', page.text)
    assert '<td class="heat">—</td>' in page.text
    assert len(re.findall(r'<th scope="row">\d{4}-\d{2}</th>', page.text)) == 12


@pytest.mark.usefixtures("seeded")
async def test_without_rfm_scores_the_grid_says_how_to_get_them(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/dashboard")
    assert "RFMスコアはまだありません" in page.text
    assert "/console/rfm/" not in page.text


async def test_the_rfm_grid_links_counts_for_profile_readers_only(
    client: httpx.AsyncClient, scored: dict[str, int],
) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/dashboard")
    for name, count in scored.items():
        assert re.search(rf'<a href="/console/rfm/{name}" aria-label="[^"]*">{count}</a>',
                         page.text), name
    assert "優良顧客" in page.text
    client.cookies.clear()
    await sign_in(client, "analyst")
    page = await client.get("/console/dashboard")
    assert "/console/rfm/" not in page.text
    assert "優良顧客" in page.text
    refused = await client.get("/console/rfm/champions")
    assert refused.status_code == 403


@pytest.mark.parametrize("role", ["marketer", "support", "admin"])
async def test_a_segment_lists_its_members_with_links_and_is_audited(
    client: httpx.AsyncClient, scored: dict[str, int], settings: Settings, role: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = max(scored, key=lambda n: scored[n])
    assert scored[name] >= 1
    monkeypatch.setattr(dashboard, "RFM_PAGE_SIZE", 1)
    await sign_in(client, role)
    seen: list[str] = []
    url = f"/console/rfm/{name}"
    while True:
        page = await client.get(url)
        assert page.status_code == 200, page.text
        rows = re.findall(r'<td><a href="/console/members/([0-9a-f-]{36})">(\d+)</a></td>',
                          page.text)
        assert len(rows) == 1
        seen.append(rows[0][0])
        more = re.search(r'<a href="(/console/rfm/[^"]+\?cursor=[^"]+)">', page.text)
        if more is None:
            break
        url = more.group(1).replace("&amp;", "&")
    assert len(seen) == len(set(seen)) == scored[name]
    conn = await asyncpg.connect(settings.database_url)
    try:
        audited = await conn.fetchval(
            "select count(*) from audit_log where action = 'members.rfm_segment'")
    finally:
        await conn.close()
    assert audited == scored[name]


@pytest.mark.usefixtures("scored")
async def test_an_unknown_segment_is_a_404_page_naming_the_segments(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/rfm/vip")
    assert page.status_code == 404
    assert "「vip」というRFMセグメントはありません" in page.text
    for name in RFM_SEGMENTS:
        assert f'href="/console/rfm/{name}"' in page.text
    bad = await client.get("/console/rfm/champions", params={"cursor": "!!"})
    assert bad.status_code == 400


@pytest.mark.usefixtures("seeded")
async def test_figures_are_kept_a_few_minutes_and_computed_again_on_demand(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    """A new member is not counted by figures computed a moment ago (the page says as of when),
    and is once the staff member asks for the figures again."""
    await sign_in(client, "marketer")
    first = await client.get("/console/dashboard")
    assert "時点の数値です" in first.text
    before = _members_card(first.text)
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "insert into members (name, name_key, member_number) values ('新規', '新規', '999')")
    finally:
        await conn.close()
    kept = await client.get("/console/dashboard")
    assert _members_card(kept.text) == before
    again = await client.get("/console/dashboard", params={"refresh": "now"})
    assert again.status_code == 200
    assert _members_card(again.text) == before + 1
    refused = await client.get("/console/dashboard", params={"refresh": "later"})
    assert refused.status_code == 400


def _members_card(html: str) -> int:
    found = re.search(r'<h2>会員</h2>\s*<p class="value">([\d,]+)</p>', html)
    assert found, html
    return int(found.group(1).replace(",", ""))


@pytest.mark.usefixtures("seeded")
async def test_without_a_month_of_points_or_model_scores_the_sections_say_what_comes(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "analyst")
    page = await client.get("/console/dashboard")
    assert "ポイント負債の予測" in page.text
    assert "付与から1か月たったポイントがまだないため" in page.text
    assert '<table class="forecast">' not in page.text
    assert "離反予測モデルのスコアはまだありません" in page.text


@pytest.mark.usefixtures("seeded")
async def test_the_liability_forecast_and_the_predicted_value_are_on_the_dashboard(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    """An old lot of 100 (two years ago): 50 redeemed in its second month, 50 expired in its
    thirteenth; a lot of 200 earned 40 days ago, expiring in 325 days (forecast month 11).
    Redemption at age 1 is a half: 100 of the 200 in the first month, the other 100 expire:
    breakage 50%. The churn model scored two members, 1,000.5 and 2,000.25 yen."""
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        now = dt.datetime.now(dt.UTC)
        day = dt.timedelta(days=1)
        yamada, sato = [row["member_id"] for row in await conn.fetch(
            "select member_id from members order by member_number limit 2")]
        old = now - 730 * day
        await insert_lot(conn, yamada, old, 100, expires=old + 380 * day,
                         outcomes=((old + 40 * day, "redeem", 50),
                                   (old + 380 * day, "expire", 50)))
        await insert_lot(conn, sato, now - 40 * day, 200, expires=now + 325 * day)
        fit = await conn.fetchval(
            "insert into churn_model_fits (fitted_at, as_of, parameters, members, converged)"
            " values (now(), now(), '{}', 2, true) returning fit_id")
        await conn.execute(
            "insert into member_churn_scores (member_id, method, p_alive,"
            " expected_purchases_90d, predicted_value_12m, scored_at, fit_id)"
            " values ($1, 'model', 0.9, 2, 1000.5, now(), $3),"
            " ($2, 'model', 0.8, 3, 2000.25, now(), $3)", yamada, sato, fit)
    finally:
        await conn.close()
    await sign_in(client, "marketer")
    page = await client.get("/console/dashboard")
    assert page.status_code == 200, page.text
    assert "いま残っている200ポイント（￥200相当）" in page.text
    rows = re.findall(r'<tr>\s*<th scope="row">(\d{4}-\d{2}-\d{2})</th>\s*'
                      r'<td>([\d,]+)</td>\s*<td>([\d,]+)</td>', page.text)
    assert len(rows) == 12
    assert (rows[0][1], rows[0][2]) == ("100", "0")
    assert (rows[10][1], rows[10][2]) == ("0", "100")
    assert "最終的には100ポイントが利用され、100ポイントが使われずに失効する見込みです" \
           "（失効率50.0%）" in page.text
    assert re.search(r"<h3>12か月の予測価値（合計）</h3>\s*<p class=\"value\">￥3,001</p>",
                     page.text)
    assert re.search(r"<h3>評価済み会員1人あたり</h3>\s*<p class=\"value\">￥1,500</p>",
                     page.text)
    assert "購買のある会員2人" in page.text


@pytest.mark.usefixtures("seeded")
async def test_the_days_default_views_are_computed_ahead_by_the_job(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    """After the dashboard_figures job, each grain's default view shows the job's figures,
    as of the job's moment, without computing them again (a member written since is not
    counted until the figures are asked for again)."""
    assert settings.database_url
    job = job_named("dashboard_figures")
    assert job is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        moment = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
        run = await run_once(make_context(settings.database_url, pool, settings), job,
                             as_of=moment)
    finally:
        await pool.close()
    assert run is not None
    assert (run.outcome, run.error, run.counts) == ("succeeded", None, {"views": 3})
    conn = await asyncpg.connect(settings.database_url)
    try:
        members = await conn.fetchval("select count(*) from members where status <> 'erased'")
        await conn.execute(
            "insert into members (name, name_key, member_number) values ('新規', '新規', '998')")
    finally:
        await conn.close()
    await sign_in(client, "marketer")
    shown = format_datetime(moment, "medium", tzinfo=ZoneInfo(settings.timezone), locale="ja")
    for grain in ("day", "week", "month"):
        page = await client.get("/console/dashboard", params={"grain": grain})
        assert page.status_code == 200, page.text
        assert f"{shown} 時点の数値です" in page.text, grain
        assert _members_card(page.text) == members, grain
    # Another period is not a default view: computed at its first view, as of then.
    other = await client.get("/console/dashboard", params={"from": "2020-01-01",
                                                          "to": "2020-01-31"})
    assert other.status_code == 200, other.text
    assert "時点の数値です" in other.text
    assert f"{shown} 時点の数値です" not in other.text


async def test_the_job_says_why_when_redis_cannot_keep_the_figures(
    settings: Settings,
) -> None:
    assert settings.database_url
    job = job_named("dashboard_figures")
    assert job is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        for redis_url, says in (
            ("redis://127.0.0.1:1/0", "Redis cannot be reached"),
            (None, "LOYALTY_REDIS_URL is not set"),
        ):
            unreachable = msgspec.structs.replace(settings, redis_url=redis_url)
            run = await run_once(make_context(settings.database_url, pool, unreachable), job,
                                 as_of=dt.datetime.now(dt.UTC))
            assert run is not None
            assert run.outcome == "failed"
            assert run.error is not None
            assert says in run.error
    finally:
        await pool.close()
