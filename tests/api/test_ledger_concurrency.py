"""Exactly once under concurrency, with many real connections at once: retries of one key,
redemptions racing for one balance, actions racing for one daily cap. Each runs with Redis up,
with Redis being flushed throughout, and with Redis gone: PostgreSQL is the truth. Purchases go
in groups (docs/decisions/0022-group-commit.md) in those three, and alone in a fourth."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from api.app import create_app
from tests.conftest import AppWith, held, make_settings, serve
from tests.factories import Actors, bearer, purchase_body
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
_n = itertools.count()


@dataclass
class Scene:
    client: Client
    actors: Actors
    database_url: str
    till: dict[str, str]


@pytest.fixture(params=["redis up", "redis flushed throughout", "redis down",
                        "purchases alone"])
async def scene(
    request: pytest.FixtureRequest, fresh_database: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Scene]:
    mode = request.param
    redis = "redis://127.0.0.1:1/0" if mode == "redis down" else redis_url
    # Purchases are written in groups by default (decision 0022); alone, as before it, too.
    alone = {"group_commit_writers": 0} if mode == "purchases alone" else {}
    settings = make_settings(fresh_database, redis, tmp_path, db_pool_max=30, **alone)
    flusher = None
    stop = asyncio.Event()
    if mode == "redis flushed throughout":
        flusher = asyncio.create_task(_flush_until(stop, redis_url))
    try:
        async for client in held(serve(create_app(settings))):
            actors = Actors(client, settings)
            api_key, _ = await actors.terminal("RACE-01")
            yield Scene(client, actors, fresh_database, bearer(api_key))
    finally:
        if flusher is not None:
            # Asked to stop between two flushes, not cancelled in the middle of one: a Redis
            # client cancelled mid-command could hang in its own close (it did, in teardown).
            stop.set()
            await flusher


async def _flush_until(stop: asyncio.Event, url: str) -> None:
    client = aioredis.from_url(url)
    try:
        while not stop.is_set():
            # This test's database only: FLUSHALL would empty every suite's on a shared server.
            await client.flushdb()
            await asyncio.sleep(0.002)
    finally:
        await client.aclose()


def _purchase(member_id: str, *, total: int, redeem: int = 0) -> dict[str, Any]:
    return purchase_body(member_id, total, prefix="C", redeem_points=redeem)


async def test_fifty_concurrent_retries_of_one_purchase_record_it_once(scene: Scene) -> None:
    member = await scene.actors.member()
    body = _purchase(member.member_id, total=25_000)
    headers = {**scene.till, "Idempotency-Key": "one-key-fifty-tries"}
    responses = await asyncio.gather(*(
        scene.client.post("/v1/pos/purchases", json=body, headers=headers) for _ in range(50)))
    assert [r.status_code for r in responses] == [201] * 50
    assert len({r.content for r in responses}) == 1
    fresh = [r for r in responses if "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1
    assert all(r.headers.get("idempotent-replayed") == "true"
               for r in responses if r is not fresh[0])
    rows = await ledger_rows(scene.database_url)
    assert [e["amount"] for e in rows.entries] == [250]
    assert len(rows.lots) == 1
    check_invariants(rows)


async def test_hundred_concurrent_redemptions_take_exactly_what_the_balance_allows(
    scene: Scene,
) -> None:
    member = await scene.actors.member()
    seeded = await scene.client.post(
        "/v1/pos/purchases", json=_purchase(member.member_id, total=100_000),
        headers={**scene.till, "Idempotency-Key": "seed"})
    assert seeded.json()["balance"]["available"] == 1000
    amount = 30
    responses = await asyncio.gather(*(
        scene.client.post("/v1/pos/purchases",
                          json=_purchase(member.member_id, total=amount, redeem=amount),
                          headers={**scene.till, "Idempotency-Key": f"redeem-{i}"})
        for i in range(100)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1000 // amount
    assert statuses.count(409) == 100 - 1000 // amount
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith(":insufficient_points")
    rows = await ledger_rows(scene.database_url)
    assert len([e for e in rows.entries if e["kind"] == "redeem"]) == 1000 // amount
    (balance,) = rows.balances
    assert balance["available"] == 1000 % amount
    check_invariants(rows)


async def test_hundred_concurrent_site_visits_award_the_daily_cap_once(scene: Scene) -> None:
    member = await scene.actors.member()
    responses = await asyncio.gather(*(
        scene.client.post("/v1/me/actions", json={"type": "site_visit"}, headers=member.headers)
        for _ in range(100)))
    assert [r.status_code for r in responses] == [200] * 100
    awarded = [r.json() for r in responses if r.json()["points"] > 0]
    assert len(awarded) == 1
    assert awarded[0]["points"] == 1
    capped = [r.json() for r in responses if r.json()["points"] == 0]
    assert len(capped) == 99
    assert all("limit of 1 a day" in c["reason"] for c in capped)
    rows = await ledger_rows(scene.database_url)
    assert [e["amount"] for e in rows.entries] == [1]
    check_invariants(rows)


async def test_purchase_killed_mid_write_then_retried_is_recorded_once(
    client: Client, actors: Actors, settings: Any,
) -> None:
    api_key, _ = await actors.terminal("KILL-01")
    member = await actors.member()
    body = _purchase(member.member_id, total=7_000)
    headers = {**bearer(api_key), "Idempotency-Key": "killed-then-retried"}

    # Hold the member's balance row so the purchase's write statement has to wait on it.
    blocker = await asyncpg.connect(settings.database_url)
    killer = await asyncpg.connect(settings.database_url)
    try:
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("select 1 from point_balances where member_id = $1 for update",
                              member.member_uuid)
        attempt = asyncio.create_task(client.post("/v1/pos/purchases", json=body,
                                                  headers=headers))
        pid = None
        for _ in range(200):
            pid = await killer.fetchval(
                """
                select pid from pg_stat_activity
                 where wait_event_type = 'Lock' and query like '%idempotency_keys%'
                """)
            if pid is not None:
                break
            await asyncio.sleep(0.02)
        assert pid is not None, "the purchase never reached its write"
        assert await killer.fetchval("select pg_terminate_backend($1)", pid)
        first = await attempt
        await blocking.rollback()
    finally:
        await blocker.close()
        await killer.close()

    assert first.status_code == 503
    assert first.headers["content-type"].startswith("application/problem+json")
    assert (await ledger_rows(settings.database_url)).entries == []

    retried = await client.post("/v1/pos/purchases", json=body, headers=headers)
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    again = await client.post("/v1/pos/purchases", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    rows = await ledger_rows(settings.database_url)
    assert [e["amount"] for e in rows.entries] == [70]
    check_invariants(rows)


async def test_purchase_stopped_by_the_statement_timeout_is_503_and_writes_nothing(
    fresh_database: str, app_with: AppWith,
) -> None:
    async for client, actors in held(app_with(statement_timeout_seconds=1)):
        api_key, _ = await actors.terminal("SLOW-01")
        member = await actors.member()
        body = _purchase(member.member_id, total=5_000)
        headers = {**bearer(api_key), "Idempotency-Key": "held-up"}
        blocker = await asyncpg.connect(fresh_database)
        try:
            async with blocker.transaction():
                # The balance row is held longer than the statement may wait for it.
                await blocker.execute(
                    "select 1 from point_balances where member_id = $1 for update",
                    member.member_uuid)
                stopped = await client.post("/v1/pos/purchases", json=body, headers=headers)
        finally:
            await blocker.close()
        assert stopped.status_code == 503
        assert stopped.headers["content-type"].startswith("application/problem+json")
        assert stopped.headers["retry-after"]
        assert (await ledger_rows(fresh_database)).entries == []
        retried = await client.post("/v1/pos/purchases", json=body, headers=headers)
        assert retried.status_code == 201
        check_invariants(await ledger_rows(fresh_database))
