"""Coupons redeemed exactly as often as allowed when purchases race, with many real connections
at once: one single-use code, one template's budget, one member's limit."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from tests.conftest import AppWith, held
from tests.factories import Staffed, bearer, make_members, purchase_body, query
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
_n = itertools.count()


class Race(Staffed):
    """A till and a marketer on an app whose pool has room for every request of a race."""


@pytest.fixture
async def race(fresh_database: str, app_with: AppWith) -> AsyncIterator[Race]:
    async for client, actors in held(app_with(db_pool_max=30)):
        api_key, _ = await actors.terminal("RACE-01")
        yield Race(client, actors, fresh_database, bearer(await actors.staff("marketer")),
                   bearer(api_key))


async def template(race: Race, **fields: Any) -> dict[str, Any]:
    response = await race.client.post("/v1/coupon-templates", headers=race.marketer, json={
        "name": "Race", "discount": {"type": "fixed_amount", "amount": 100}, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def purchase(member_id: UUID, coupon: dict[str, Any]) -> dict[str, Any]:
    return purchase_body(member_id, 900, prefix="RC", lines=[{"sku": "S", "unit_price": 1_000}],
                         coupons=[coupon])


async def buy_all(race: Race, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    return await asyncio.gather(*(
        race.client.post("/v1/pos/purchases", json=body,
                         headers={**race.till, "Idempotency-Key": f"race-{next(_n)}"})
        for body in bodies))


async def redemptions(database_url: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await query(database_url, "select * from coupon_redemptions")]


def refused_with(responses: list[httpx.Response], code: str) -> int:
    refused = [r for r in responses if r.status_code == 409]
    assert all(r.json()["type"].endswith(f":coupon_{code}") for r in refused), \
        {r.json()["type"] for r in refused}
    return len(refused)


async def test_two_hundred_members_racing_for_one_single_use_code_one_wins(race: Race) -> None:
    made = await template(race)
    codes = await race.client.post(f"/v1/coupon-templates/{made['template_id']}/codes",
                                   json={"count": 1}, headers=race.marketer)
    (code,) = codes.json()["codes"]
    members = await make_members(race.database_url, 200)
    responses = await buy_all(race, [purchase(m, {"code": code}) for m in members])
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1
    assert refused_with(responses, "already_used") == 199
    (redeemed,) = await redemptions(race.database_url)
    winner = next(r for r in responses if r.status_code == 201).json()
    assert str(redeemed["member_id"]) == winner["member_id"]
    rows = await ledger_rows(race.database_url)
    # Only the winning purchase was recorded: the losers were refused whole.
    assert sum(b["purchase_count"] for b in rows.balances) == 1
    check_invariants(rows)


async def test_a_budget_of_fifty_holds_under_two_hundred_racing_redemptions(race: Race) -> None:
    made = await template(race, public_code="FIFTY-ONLY", total_limit=50)
    members = await make_members(race.database_url, 200)
    responses = await buy_all(race, [purchase(m, {"code": "FIFTY-ONLY"}) for m in members])
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 50
    assert refused_with(responses, "limit_reached") == 150
    assert len(await redemptions(race.database_url)) == 50
    read = await race.client.get(f"/v1/coupon-templates/{made['template_id']}",
                                 headers=race.marketer)
    assert read.json()["redeemed"] == 50
    rows = await ledger_rows(race.database_url)
    assert sum(b["purchase_count"] for b in rows.balances) == 50
    check_invariants(rows)


async def test_one_member_racing_twenty_purchases_uses_a_once_each_coupon_once(
    race: Race,
) -> None:
    await template(race, public_code="ONCE-EACH", per_member_limit=1)
    (member,) = await make_members(race.database_url, 1)
    responses = await buy_all(race, [purchase(member, {"code": "ONCE-EACH"})
                                     for _ in range(20)])
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1
    assert refused_with(responses, "limit_reached") == 19
    assert len(await redemptions(race.database_url)) == 1
    rows = await ledger_rows(race.database_url)
    assert [b["purchase_count"] for b in rows.balances] == [1]
    check_invariants(rows)


async def test_one_wallet_coupon_presented_at_twenty_tills_at_once_is_used_once(
    race: Race,
) -> None:
    made = await template(race)
    (member,) = await make_members(race.database_url, 1)
    issued = await race.client.post(
        f"/v1/coupon-templates/{made['template_id']}/issue", json={"members": [str(member)]},
        headers={**race.marketer, "Idempotency-Key": "wallet-race"})
    assert issued.json()["issued"] == 1
    conn = await asyncpg.connect(race.database_url)
    try:
        coupon_id = await conn.fetchval("select coupon_id from member_coupons")
    finally:
        await conn.close()
    responses = await buy_all(race, [purchase(member, {"coupon_id": str(coupon_id)})
                                     for _ in range(20)])
    assert [r.status_code for r in responses].count(201) == 1
    assert refused_with(responses, "already_used") == 19
    assert len(await redemptions(race.database_url)) == 1
    check_invariants(await ledger_rows(race.database_url))
