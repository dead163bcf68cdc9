"""Group commit (docs/decisions/0022-group-commit.md): purchases of many members at once,
written in groups by one statement each, every one exactly once, with real connections racing.
The same races with groups off are tests/api/test_ledger_concurrency.py's other modes."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from api.app import create_app
from tests.conftest import held, make_settings, serve
from tests.factories import Actors, SignedUp, bearer, purchase_body
from tests.ledger_checks import check_invariants, ledger_rows

_keys = itertools.count()


@dataclass
class Shop:
    client: httpx.AsyncClient
    actors: Actors
    database_url: str
    till: dict[str, str]


@pytest.fixture
async def shop(fresh_database: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Shop]:
    # One writer: purchases gather behind it, so groups of several form at once. Forty
    # connections race at a time (the rest wait for one): at sixty, this module and the batch
    # tests on the other test worker took the server's last connections (100, three of them
    # reserved), and whichever asked next was refused.
    settings = make_settings(fresh_database, redis_url, tmp_path, db_pool_max=40,
                             group_commit_writers=1, group_commit_most=16)
    async for client in held(serve(create_app(settings))):
        actors = Actors(client, settings)
        api_key, _ = await actors.terminal("GROUP-01")
        yield Shop(client, actors, fresh_database, bearer(api_key))


def _groups() -> tuple[float, float]:
    """Groups written so far by this process, and the purchases they held."""
    count = REGISTRY.get_sample_value("loyalty_purchase_group_size_count") or 0.0
    total = REGISTRY.get_sample_value("loyalty_purchase_group_size_sum") or 0.0
    return count, total


async def _buy(shop: Shop, member: SignedUp, total: int, *, key: str | None = None,
               **fields: Any) -> httpx.Response:
    return await shop.client.post(
        "/v1/pos/purchases", json=purchase_body(member.member_id, total, prefix="G", **fields),
        headers={**shop.till, "Idempotency-Key": key or f"group-{next(_keys)}"})


async def _count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_two_hundred_purchases_of_forty_members_at_once_land_in_groups_exactly_once(
    shop: Shop,
) -> None:
    members = [await shop.actors.member() for _ in range(40)]
    for member in members:
        seeded = await _buy(shop, member, 10_000)
        assert seeded.status_code == 201, seeded.text
    groups_before, grouped_before = _groups()
    # Five each, one in five using points: the groups write draws on lots and allocations too;
    # the first of each is two lines, the others one.
    two_lines = [{"sku": "A", "quantity": 1, "unit_price": 400},
                 {"sku": "B", "quantity": 2, "unit_price": 300}]
    responses = await asyncio.gather(*(
        _buy(shop, member, 1_000 * (n + 1), redeem_points=10 if n == 4 else 0,
             lines=two_lines if n == 0 else None)
        for n in range(5) for member in members))
    assert [r.status_code for r in responses] == [201] * 200, \
        [r.text for r in responses if r.status_code != 201][:3]
    assert not any("idempotent-replayed" in r.headers for r in responses)
    groups_after, grouped_after = _groups()
    groups, grouped = groups_after - groups_before, grouped_after - grouped_before
    # Every purchase went through a group, and the groups held several at once.
    assert grouped >= 200
    assert groups < grouped

    rows = await ledger_rows(shop.database_url)
    check_invariants(rows)
    by_member = {b["member_id"]: b for b in rows.balances}
    # 10, 20, 30 and 40 points, and 49 on the 4,990 paid after 10 points used; 100 before.
    assert sorted({r.json()["points_earned"] for r in responses}) == [10, 20, 30, 40, 49]
    after = 100 + 10 + 20 + 30 + 40 + 49 - 10
    for member in members:
        balance = by_member[member.member_uuid]
        assert (balance["available"], balance["purchase_count"], balance["lifetime_redeemed"],
                balance["version"]) == (after, 6, 10, 6)
    kinds = Counter(e["kind"] for e in rows.entries)
    assert kinds == {"earn": 240, "redeem": 40}
    assert await _count(shop.database_url, "select count(*) from purchases") == 240
    # Each purchase's lines as sent: 40 of two lines, the seeds and the rest of one.
    assert await _count(shop.database_url, "select sum(jsonb_array_length(lines)) from purchases "
                                           "where jsonb_typeof(lines) = 'array'") == 280
    assert await _count(shop.database_url, "select count(*) from idempotency_keys") == 240
    assert await _count(
        shop.database_url,
        "select count(*) from outbox where type = 'purchase.recorded'") == 240
    # Each purchase's answer is its own: the balance it reports is the member's after it.
    last_available = {r.json()["member_id"] for r in responses
                      if r.json()["balance"]["available"] == after}
    assert len(last_available) == 40


async def test_each_key_sent_three_times_at_once_by_thirty_members_is_written_once(
    shop: Shop,
) -> None:
    members = [await shop.actors.member() for _ in range(30)]
    bodies = {f"storm-{i}": purchase_body(m.member_id, 5_000, prefix="S")
              for i, m in enumerate(members)}
    sends = [(key, body) for key, body in bodies.items() for _ in range(3)]
    responses = await asyncio.gather(*(
        shop.client.post("/v1/pos/purchases", json=body,
                         headers={**shop.till, "Idempotency-Key": key})
        for key, body in sends))
    assert [r.status_code for r in responses] == [201] * 90
    answers: dict[str, set[bytes]] = {}
    fresh: Counter[str] = Counter()
    for (key, _), response in zip(sends, responses, strict=True):
        answers.setdefault(key, set()).add(response.content)
        fresh[key] += "idempotent-replayed" not in response.headers
    assert all(len(bodies_seen) == 1 for bodies_seen in answers.values())
    assert fresh == dict.fromkeys(bodies, 1)
    rows = await ledger_rows(shop.database_url)
    check_invariants(rows)
    assert [e["amount"] for e in rows.entries] == [50] * 30
    assert await _count(shop.database_url, "select count(*) from purchases") == 30


async def test_fifty_purchases_of_one_member_at_once_all_land(shop: Shop) -> None:
    # One member's purchases never share a group; each group after the first finds the
    # version moved and writes its row again under the balance's lock.
    member = await shop.actors.member()
    others = [await shop.actors.member() for _ in range(10)]
    responses = await asyncio.gather(
        *(_buy(shop, member, 1_000) for _ in range(50)),
        *(_buy(shop, other, 2_000) for other in others))
    assert [r.status_code for r in responses] == [201] * 60
    rows = await ledger_rows(shop.database_url)
    check_invariants(rows)
    balance = next(b for b in rows.balances if b["member_id"] == member.member_uuid)
    assert (balance["available"], balance["purchase_count"], balance["version"]) == (500, 50, 50)
    assert sorted(r.json()["balance"]["available"] for r in responses[:50]) == \
        list(range(10, 510, 10))


async def test_one_receipt_under_two_keys_in_a_group_is_recorded_once_and_the_rest_land(
    shop: Shop,
) -> None:
    members = [await shop.actors.member() for _ in range(10)]
    responses = await asyncio.gather(*(
        _buy(shop, member, 3_000, receipt_id="SAME-RECEIPT" if i < 2 else None)
        for i, member in enumerate(members)))
    statuses = [r.status_code for r in responses]
    assert sorted(statuses[:2]) == [201, 409]
    refused = next(r for r in responses[:2] if r.status_code == 409)
    assert refused.json()["type"].endswith(":receipt_already_recorded")
    assert statuses[2:] == [201] * 8
    rows = await ledger_rows(shop.database_url)
    check_invariants(rows)
    assert len(rows.entries) == 9
    assert await _count(shop.database_url, "select count(*) from purchases") == 9
    assert await _count(shop.database_url, "select count(*) from idempotency_keys "
                                           "where response_status = 201") == 9
