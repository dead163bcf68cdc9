"""A database connection lost mid-request is a 503 with Retry-After, never a 500: 16 clients
keep calling while every backend of the service is terminated once a second."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from tests.conftest import AppWith
from tests.factories import bearer, purchase_body
from tests.ledger_checks import check_invariants, ledger_rows

# What a caller sends: method, path, JSON body, headers.
Call = tuple[str, str, dict[str, Any] | None, dict[str, str]]

CLIENTS = 16
SECONDS = 10
_n = itertools.count()


async def _terminate_backends_every_second(database_url: str, stop: asyncio.Event) -> int:
    """Terminates every other backend of the test's database once a second; how many in all."""
    conn = await asyncpg.connect(database_url)
    killed = 0
    try:
        while not stop.is_set():
            killed += await conn.fetchval(
                """
                select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity
                 where datname = current_database() and pid <> pg_backend_pid()
                """)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
    finally:
        await conn.close()
    return killed


async def test_killed_backends_answer_503_with_retry_after_never_500(
    fresh_database: str, app_with: AppWith
) -> None:
    async with app_with(db_pool_min=4) as (client, actors):
        member = await actors.member()
        others = [await actors.member() for _ in range(2)]
        till_key, _ = await actors.terminal("KILL-01")
        till = bearer(till_key)
        staff = bearer(await actors.staff("support"))

        def purchase() -> Call:
            n = next(_n)
            body = purchase_body(member.member_id, 1000, receipt_id=f"K-{n}")
            return "POST", "/v1/pos/purchases", body, {**till, "Idempotency-Key": f"k-{n}"}

        def batch() -> Call:
            # Three members, three lanes: the batch's own connection and two of the pool's,
            # any of which may be the one killed.
            items = []
            for buyer in (member, *others) * 3:
                n = next(_n)
                items.append({"kind": "purchase", "idempotency_key": f"k-{n}",
                              "purchase": purchase_body(buyer.member_id, 500,
                                                        receipt_id=f"K-{n}")})
            return "POST", "/v1/pos/batches", {"items": items}, till

        calls: list[Callable[[], Call]] = [
            purchase,
            batch,
            lambda: ("GET", "/v1/pos/whoami", None, till),
            lambda: ("GET", "/v1/me/points", None, member.headers),
            lambda: ("GET", "/v1/me/coupons", None, member.headers),
            lambda: ("GET", "/v1/me", None, member.headers),
            lambda: ("GET", f"/v1/members/{member.member_id}/points/history", None, staff),
            lambda: ("GET", "/health/ready", None, {}),
        ]
        seen: collections.Counter[int] = collections.Counter()
        refusals: list[httpx.Response] = []
        stop = asyncio.Event()

        async def call_until_stopped(offset: int) -> None:
            for turn in itertools.count(offset):
                if stop.is_set():
                    return
                method, path, body, headers = calls[turn % len(calls)]()
                response = await client.request(method, path, json=body, headers=headers)
                seen[response.status_code] += 1
                if response.status_code >= 300:
                    refusals.append(response)

        killer = asyncio.create_task(_terminate_backends_every_second(fresh_database, stop))
        callers = [asyncio.create_task(call_until_stopped(i)) for i in range(CLIENTS)]
        await asyncio.sleep(SECONDS)
        stop.set()
        await asyncio.gather(*callers)
        killed = await killer

    assert killed > 0, "no backend was terminated: the test proved nothing"
    assert seen[503] > 0, f"no request met a killed backend: {dict(seen)}"
    assert set(seen) <= {200, 201, 503}, dict(seen)
    for response in refusals:
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) >= 1
    # Whatever was cut short rolled back whole: the ledger still adds up.
    check_invariants(await ledger_rows(fresh_database))
