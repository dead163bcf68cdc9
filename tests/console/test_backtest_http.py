"""The rule backtest pages over HTTP: who may open them, a draft from the editor carried to the
form, a bad period or bad rules shown by their field with nothing run, the comparison table, and
a large backtest's page following its progress (issue 17)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from loyalty.core.settings import Settings
from tests.conftest import AppWith
from tests.console.seed import seed
from tests.console.test_console_http import sign_in
from tests.factories import query

RESULT = re.compile(r"^/console/rules/backtests/([0-9a-f-]{36})$")


async def give_lines(database_url: str) -> None:
    """The seed's purchases as a till records them under the default rules (1 point per 100):
    one line each, their points; a third of them moved to a second store."""
    await query(database_url, """
        update purchases set points_earned = total / 100,
               lines = jsonb_build_array(jsonb_build_object(
                   'sku', 'COFFEE', 'category', 'drinks', 'quantity', 1, 'unit_price', total))""")
    await query(database_url, """
        with umeda as (insert into stores (code, name) values ('UMEDA', '梅田店')
                       returning store_id)
        update purchases set store_id = (select store_id from umeda)
         where receipt_id in (select receipt_id from purchases
                               order by receipt_id limit (select count(*) / 3 from purchases))""")


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)
    await give_lines(settings.database_url)


def today(settings: Settings) -> dt.date:
    return dt.datetime.now(ZoneInfo(settings.timezone)).date()


def form(settings: Settings, csrf: str, rules: dict[str, Any], **fields: str) -> dict[str, str]:
    last = today(settings)
    return {"csrf_token": csrf, "rules": json.dumps(rules),
            "from": (last - dt.timedelta(days=40)).isoformat(), "to": last.isoformat(),
            **fields}


async def backtests_kept(settings: Settings) -> int:
    assert settings.database_url
    return int((await query(settings.database_url,
                            "select count(*) from rule_backtests"))[0][0])


@pytest.mark.usefixtures("seeded")
async def test_the_rules_editors_open_the_backtest_with_the_rules_in_force(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/rules/backtest")
    assert page.status_code == 200, page.text
    assert '<textarea id="rules" name="rules"' in page.text
    assert "&#34;per_amount&#34;: 100" in page.text
    rules = await client.get("/console/rules")
    assert 'href="/console/rules/backtest"' in rules.text


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["analyst", "support"])
async def test_other_roles_may_not_backtest(client: httpx.AsyncClient, role: str) -> None:
    await sign_in(client, role)
    assert (await client.get("/console/rules/backtest")).status_code == 403


@pytest.mark.usefixtures("seeded")
async def test_a_doubled_rate_shows_the_comparison_per_store(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    csrf = await sign_in(client, "marketer")
    started = await client.post("/console/rules/backtest", data=form(
        settings, csrf, {"base": {"points": 2, "per_amount": 100}}))
    assert started.status_code == 303, started.text
    found = RESULT.match(started.headers["location"])
    assert found
    page = await client.get(started.headers["location"])
    assert page.status_code == 200, page.text
    assert 'data-state="done"' in page.text
    assert "hx-trigger" not in page.text
    assert settings.database_url
    rows = await query(settings.database_url,
                       "select count(*) as n, sum(points_earned) as points,"
                       " sum(2 * total / 100) as doubled from purchases")
    points, doubled = int(rows[0]["points"]), int(rows[0]["doubled"])
    # Totals: purchases, earned, under these rules (2 per 100, each purchase rounded down),
    # difference.
    assert re.search(rf">{rows[0]['n']}</td>\s*<td class=\"num\">{points:,}</td>\s*"
                     rf"<td class=\"num\">{doubled:,}</td>\s*<td class=\"num up\">"
                     rf"\+{doubled - points:,}</td>", page.text), page.text
    assert "<code>SHIBUYA</code>" in page.text
    assert "<code>UMEDA</code>" in page.text


@pytest.mark.usefixtures("seeded")
async def test_the_editors_draft_is_carried_to_the_form(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    csrf = await sign_in(client, "marketer")
    draft = {"base": {"points": 7, "per_amount": 100}}
    page = await client.post("/console/rules/backtest", data={
        "csrf_token": csrf, "rules": json.dumps(draft), "step": "prepare", "version": "1"})
    assert page.status_code == 200, page.text
    assert "&#34;points&#34;: 7" in page.text
    assert await backtests_kept(settings) == 0


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("fields", "path"), [
    ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
    ({"from": "2024-01-01", "to": "2026-03-01"}, "from"),
    ({"from": "2026-02-30"}, "from"),
    ({"rules": "{\"base\": {\"per_amount\": 0}}"}, "rules.base.per_amount"),
    ({"rules": "{not json"}, "rules"),
])
async def test_a_refused_backtest_is_the_form_again_with_its_field(
    client: httpx.AsyncClient, settings: Settings, fields: dict[str, str], path: str,
) -> None:
    csrf = await sign_in(client, "marketer")
    page = await client.post("/console/rules/backtest", data={**form(settings, csrf, {}),
                                                              **fields})
    assert page.status_code == 400, page.text
    assert 'id="backtest-problem"' in page.text
    assert f"<code>{path}</code>" in page.text
    assert 'aria-invalid="true"' in page.text
    assert await backtests_kept(settings) == 0


async def test_a_large_backtest_page_follows_its_progress(
    app_with: AppWith, settings: Settings,
) -> None:
    assert settings.database_url
    await seed(settings.database_url)
    await give_lines(settings.database_url)
    async with app_with(backtest_sync_purchases=0) as (client, _):
        csrf = await sign_in(client, "marketer")
        started = await client.post("/console/rules/backtest", data=form(settings, csrf, {}))
        assert started.status_code == 303, started.text
        location = started.headers["location"]
        async with asyncio.timeout(30):
            while True:
                partial = await client.get(f"{location}/progress")
                if 'data-state="running"' not in partial.text:
                    break
                await asyncio.sleep(0.05)
        assert 'data-state="done"' in partial.text
        assert "<code>UMEDA</code>" in partial.text

        # Caught while it runs: the count done of the total, and htmx asking again.
        await query(settings.database_url,
                    "update rule_backtests set state = 'running', result = null, done = 12,"
                    " finished_at = null, updated_at = now()")
        page = await client.get(location)
        assert 'data-state="running"' in page.text
        assert f'hx-get="{location}/progress"' in page.text
        assert 'hx-trigger="every 1s"' in page.text
        assert re.search(r"\d+ 件中 12 件完了", page.text), page.text
        assert "<progress" in page.text


@pytest.mark.usefixtures("seeded")
async def test_an_unknown_backtest_is_404(client: httpx.AsyncClient) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/rules/backtests/00000000-0000-7000-8000-000000000000")
    assert page.status_code == 404
    assert "このアドレスのバックテストは見つかりません" in page.text
