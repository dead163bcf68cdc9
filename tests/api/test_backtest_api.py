"""Rule backtest: the recorded purchases of a period re-earned under proposed rules, against
what they earned, through the API on real PostgreSQL (issue 17)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from loyalty.core.db import init_connection
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.insights.backtest import backtest_period, reearn_period
from schemas.rules import EarningRules
from tests.api.test_rules_api import problem_code
from tests.api.test_simulation_agreement import random_lines, random_moment, rich_rules
from tests.conftest import AppWith
from tests.factories import Actors, bearer, purchase_body, query

Client = httpx.AsyncClient
BACKTEST = "/v1/earning-rules/backtest"
_keys = itertools.count()


@pytest.fixture
async def marketer(actors: Actors) -> dict[str, str]:
    return bearer(await actors.staff("marketer"))


def today(settings: Settings) -> dt.date:
    return dt.datetime.now(ZoneInfo(settings.timezone)).date()


def period(settings: Settings, days: int = 35) -> dict[str, str]:
    """The last ``days`` business days, today included."""
    last = today(settings)
    return {"from": (last - dt.timedelta(days=days - 1)).isoformat(), "to": last.isoformat()}


async def backtest(client: Client, headers: dict[str, str], rules: dict[str, Any],
                   settings: Settings) -> dict[str, Any]:
    response = await client.post(BACKTEST, headers=headers,
                                 json={"rules": rules, **period(settings)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["state"] == "done"
    return body


async def earned(settings: Settings) -> tuple[int, int]:
    """(purchases, points earned) as recorded."""
    assert settings.database_url
    rows = await query(settings.database_url,
                       "select count(*) as n, coalesce(sum(points_earned), 0) as points"
                       " from purchases")
    return int(rows[0]["n"]), int(rows[0]["points"])


async def buy(client: Client, till: dict[str, str], member: str, total: int, *,
              days_ago: int = 1, **fields: Any) -> dict[str, Any]:
    occurred_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    response = await client.post("/v1/pos/purchases", headers={
        **till, "Idempotency-Key": f"bt-{next(_keys)}"}, json=purchase_body(
        member, total, occurred_at=occurred_at, prefix="BT", **fields))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# -- the backtest and the till agree -----------------------------------------------------------


async def test_a_backtest_of_the_rules_in_force_reproduces_exactly_what_was_earned(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str]
) -> None:
    """Random purchases under rules with multipliers of every kind, rounding, bonuses and tiers
    reached along the way, at two stores: the backtest of those rules re-earns each one."""
    rng = random.Random(20261205)
    tz = ZoneInfo(settings.timezone)
    now = dt.datetime.now(dt.UTC)
    rules = {**rich_rules(now), "tiers": {"measure": "spend", "levels": [
        {"code": "bronze", "name": "Bronze", "threshold": 0},
        {"code": "silver", "name": "Silver", "threshold": 20_000, "multiplier_percent": 150},
        {"code": "gold", "name": "Gold", "threshold": 60_000, "multiplier_percent": 200}]}}
    saved = await client.put("/v1/earning-rules", json=rules, headers=marketer)
    assert saved.status_code == 200, saved.text
    tills = [bearer((await actors.terminal(code))[0]) for code in ("SHIBUYA-01", "UMEDA-02")]
    months = sorted({(now - dt.timedelta(days=d)).astimezone(tz).month for d in range(31)})
    members = [(await actors.member(birth_date=dt.date(1980 + n, rng.choice(months), 10)
                                    .isoformat())).member_id for n in range(6)]
    steps: set[str] = set()
    for n in range(120):
        lines = random_lines(rng)
        total = sum(line["quantity"] * line["unit_price"] for line in lines)
        till = rng.choice(tills)
        response = await client.post("/v1/pos/purchases", headers={
            **till, "Idempotency-Key": f"repro-{n}"}, json=purchase_body(
            rng.choice(members), total, lines=lines, receipt_id=f"REPRO-{n}",
            occurred_at=random_moment(rng, now)))
        assert response.status_code == 201, response.text
        steps |= {step["rule"] for step in response.json()["trace"]["steps"]}
    assert {"first_purchase", "birthday_month", "tier"} <= steps, steps

    result = (await backtest(client, marketer, rules, settings))["result"]

    purchases, points = await earned(settings)
    assert result["totals"] == {"purchases": purchases, "actual": points, "proposed": points,
                                "difference": 0}
    assert {row["tier"] for row in result["by_tier"]} >= {"bronze", "silver"}
    for row in result["by_tier"] + result["by_store"]:
        assert row["proposed"] == row["actual"], row
    assert [row["store"] for row in result["by_store"]] == ["SHIBUYA-01", "UMEDA-02"]
    assert sum(row["purchases"] for row in result["by_store"]) == purchases
    assert result["liability"] == {"points": 0, "value": 0, "currency": "JPY"}
    assert result["skipped"] == 0


async def test_a_doubled_base_rate_doubles_the_base_points(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str]
) -> None:
    till = bearer((await actors.terminal("STORE-A"))[0])
    member = (await actors.member()).member_id
    for total in (1_000, 2_300, 500, 12_000):
        await buy(client, till, member, total)
    _, points = await earned(settings)
    assert points == 10 + 23 + 5 + 120

    result = (await backtest(client, marketer, {"base": {"points": 2, "per_amount": 100}},
                             settings))["result"]

    assert result["totals"] == {"purchases": 4, "actual": points, "proposed": 2 * points,
                                "difference": points}
    # One point is worth 1 yen (LOYALTY_POINT_VALUE): the liability grows by as many yen.
    assert result["liability"] == {"points": points, "value": points, "currency": "JPY"}


async def test_double_points_at_one_store_change_that_store_alone(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str]
) -> None:
    tills = {code: bearer((await actors.terminal(code))[0]) for code in ("STORE-A", "STORE-B")}
    member = (await actors.member()).member_id
    for code, total in (("STORE-A", 1_000), ("STORE-A", 4_000), ("STORE-B", 3_000)):
        await buy(client, tills[code], member, total)

    result = (await backtest(client, marketer, {"multipliers": [
        {"name": "Store A double", "percent": 200,
         "when": [{"type": "store", "stores": ["STORE-A"]}]}]}, settings))["result"]

    assert result["by_store"] == [
        {"store": "STORE-A", "purchases": 2, "actual": 50, "proposed": 100, "difference": 50},
        {"store": "STORE-B", "purchases": 1, "actual": 30, "proposed": 30, "difference": 0},
    ]
    assert result["by_tier"] == [
        {"tier": None, "purchases": 3, "actual": 80, "proposed": 130, "difference": 50}]
    assert result["totals"]["difference"] == 50


async def test_purchases_outside_the_period_are_left_out(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str]
) -> None:
    till = bearer((await actors.terminal("STORE-A"))[0])
    member = (await actors.member()).member_id
    await buy(client, till, member, 1_000, days_ago=1)
    await buy(client, till, member, 9_000, days_ago=60)
    result = (await backtest(client, marketer, {}, settings))["result"]
    assert result["totals"] == {"purchases": 1, "actual": 10, "proposed": 10, "difference": 0}


async def test_imported_purchases_without_lines_are_counted_apart(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str]
) -> None:
    till = bearer((await actors.terminal("STORE-A"))[0])
    member = (await actors.member()).member_id
    await buy(client, till, member, 1_000)
    assert settings.database_url
    # What ``loyalty import purchases`` leaves: the purchase and its points, no lines.
    await query(settings.database_url, "update purchases set lines = '[]'::jsonb")
    result = (await backtest(client, marketer, {}, settings))["result"]
    assert (result["skipped"], result["skipped_points"]) == (1, 10)
    assert result["totals"]["purchases"] == 0


# -- the background path -----------------------------------------------------------------------


async def test_a_large_period_runs_in_the_background_with_its_progress(
    app_with: AppWith,
) -> None:
    async with app_with(backtest_sync_purchases=2) as (client, actors):
        marketer = bearer(await actors.staff("marketer"))
        till = bearer((await actors.terminal("STORE-A"))[0])
        member = (await actors.member()).member_id
        for total in (100, 200, 300, 400, 500):
            await buy(client, till, member, total)
        started = await client.post(BACKTEST, headers=marketer, json={
            "rules": {"base": {"points": 3, "per_amount": 100}}, **period(actors.settings)})
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        assert location == f"/v1/earning-rules/backtests/{started.json()['backtest_id']}"
        assert started.json()["state"] == "running"
        assert started.json()["total"] == 5

        async with asyncio.timeout(30):
            while (status := (await client.get(location, headers=marketer)).json())[
                    "state"] == "running":
                assert 0 <= status["done"] <= status["total"] == 5
                await asyncio.sleep(0.05)
        assert status["state"] == "done", status
        assert (status["done"], status["total"]) == (5, 5)
        assert status["finished_at"] is not None
        assert status["result"]["totals"] == {"purchases": 5, "actual": 15, "proposed": 45,
                                              "difference": 30}


async def test_progress_is_reported_after_every_batch(
    client: Client, actors: Actors, settings: Settings
) -> None:
    till = bearer((await actors.terminal("STORE-A"))[0])
    for _ in range(2):
        member = (await actors.member()).member_id
        for total in (100, 200, 300):
            await buy(client, till, member, total)
    seen: list[int] = []

    async def progress(done: int) -> None:
        seen.append(done)

    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await init_connection(conn)
        programme = Programme.from_settings(settings)
        last = today(settings)
        result = await reearn_period(
            conn, EarningRules(), backtest_period(last - dt.timedelta(days=3), last,
                                                  tz=programme.timezone, today=last),
            programme=programme, point_value=1.0, progress=progress, batch_size=4)
    finally:
        await conn.close()
    assert seen == [4, 6]
    assert result.totals.purchases == 6


async def test_a_backtest_whose_process_stopped_reads_as_failed(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str]
) -> None:
    done = await backtest(client, marketer, {}, settings)
    assert settings.database_url
    await query(settings.database_url,
                "update rule_backtests set state = 'running', result = null,"
                " updated_at = now() - interval '1 hour' where backtest_id = $1",
                done["backtest_id"])
    status = await client.get(f"/v1/earning-rules/backtests/{done['backtest_id']}",
                              headers=marketer)
    assert status.status_code == 200, status.text
    assert status.json()["state"] == "failed"
    assert "start the backtest again" in status.json()["error"]


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ({"from": "2026-02-30", "to": "2026-03-01"}, 400, "validation_failed", None),
    ({"from": "yesterday", "to": "2026-03-01"}, 400, "validation_failed", None),
    ({"from": "2026-03-02", "to": "2026-03-01"}, 422, "invalid_input", "from"),
    ({"from": "2025-01-01", "to": "2026-03-01"}, 422, "period_too_long", "from"),
    ({"from": "2026-03-01", "to": "2099-12-31"}, 422, "invalid_input", "to"),
])
async def test_a_bad_period_is_refused_with_what_to_fix(
    client: Client, marketer: dict[str, str], settings: Settings, body: dict[str, str],
    status: int, code: str, field: str | None,
) -> None:
    response = await client.post(BACKTEST, headers=marketer, json={"rules": {}, **body})
    assert response.status_code == status, response.text
    assert problem_code(response) == code
    assert response.json().get("field") == field
    assert await backtests_kept(settings) == 0


async def backtests_kept(settings: Settings) -> int:
    assert settings.database_url
    return int((await query(settings.database_url, "select count(*) from rule_backtests"))[0][0])


async def test_rules_missing_or_out_of_range_are_refused(
    client: Client, marketer: dict[str, str], settings: Settings
) -> None:
    missing = await client.post(BACKTEST, headers=marketer, json=period(settings))
    assert missing.status_code == 400, missing.text
    huge = await client.post(BACKTEST, headers=marketer, json={"rules": {
        "base": {"points": 10_000, "per_amount": 1},
        "multipliers": [{"name": "x100", "percent": 10_000}]}, **period(settings)})
    assert huge.status_code == 422, huge.text
    assert problem_code(huge) == "points_out_of_range"
    assert await backtests_kept(settings) == 0


async def test_an_unknown_backtest_is_404(client: Client, marketer: dict[str, str]) -> None:
    response = await client.get(
        "/v1/earning-rules/backtests/00000000-0000-7000-8000-000000000000", headers=marketer)
    assert response.status_code == 404
    assert problem_code(response) == "backtest_not_found"


async def test_only_the_rules_editors_may_backtest(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str]
) -> None:
    done = await backtest(client, marketer, {}, settings)
    for role in ("analyst", "support"):
        headers = bearer(await actors.staff(role))
        started = await client.post(BACKTEST, headers=headers,
                                    json={"rules": {}, **period(settings)})
        read = await client.get(f"/v1/earning-rules/backtests/{done['backtest_id']}",
                                headers=headers)
        assert (started.status_code, read.status_code) == (403, 403), role
    admin = bearer(await actors.staff("admin"))
    assert (await client.post(BACKTEST, headers=admin, json={
        "rules": {}, **period(settings)})).status_code == 200
