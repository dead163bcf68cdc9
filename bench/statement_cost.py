"""What one statement costs the service's process, in CPU, beside what the database does: the
purchase's ledger read (the statement every purchase starts with) against a bare ``select 1``
and a balance row by primary key, each run back to back on one connection with uvloop (as the
service runs), on the data set ``make bench`` loads.

    python -m bench.statement_cost [--members N] [--calls N]

A statement's fixed part (the round trip's messages, the future, waking the loop) is what the
bare ``select 1`` costs; what a statement adds above it is its own parameters and rows. So the
share a group read (one statement for the ledgers of several purchases) could save is at most
that fixed part, per purchase, less one such part per group.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import uvloop

from bench.harness import DATA_DIR, say
from bench.run import drop_data_set, prepare
from loyalty.core.db import init_connection
from loyalty.core.embedded import service_urls
from loyalty.core.idempotency import Idempotency
from loyalty.core.programme import Programme
from loyalty.core.settings import load_settings
from loyalty.points.ledger import read_ledger
from loyalty.points.purchases import _purchase_read
from loyalty.points.rules import RuleBook
from loyalty.points.tiers import current_window_start

WARM_UP = 200


async def _cost(calls: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Client CPU and wall time of one call, in microseconds."""
    for _ in range(WARM_UP):
        await call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call()
    return ((time.process_time() - cpu) / calls * 1e6,
            (time.perf_counter() - wall) / calls * 1e6)


async def measure(dsn: str, calls: int) -> list[tuple[str, float, float]]:
    settings = load_settings()
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        # A member with the open lots a member of the data set typically has.
        member = await conn.fetchval(
            "select member_id from point_lots where remaining > 0"
            " group by member_id order by count(*) desc, member_id limit 1")
        store = await conn.fetchval("select store_id from stores order by store_id limit 1")
        _, rules = await RuleBook().newest(conn)
        now = dt.datetime.now(dt.UTC)
        read = _purchase_read(rules.tiers)
        values = {"store_id": store, "receipt_id": "bench-statement-cost",
                  "tier_window": current_window_start(
                      rules.tiers, now, Programme.from_settings(settings).timezone),
                  "now": now, "template_ids": [], "at": now}
        idempotency = Idempotency(uuid.uuid4(), "bench-statement-cost", b"-")
        statement = read.by_id
        arguments = statement.args({**values, "member": member,
                                    "principal_id": idempotency.principal_id,
                                    "idempotency_key": idempotency.key})
        lots = await conn.fetchval(
            "select count(*) from point_lots where member_id = $1 and remaining > 0", member)
        measured = []
        for name, call in (
            ("select 1", lambda: conn.fetchrow("select 1")),
            ("a balance row by primary key", lambda: conn.fetchrow(
                "select * from point_balances where member_id = $1", member)),
            (f"the purchase's ledger read ({lots} open lots), fetched",
             lambda: conn.fetchrow(statement.text, *arguments)),
            ("the same, decoded into the ledger", lambda: read_ledger(
                conn, member, read, values, idempotency=idempotency)),
        ):
            measured.append((name, *await _cost(calls, call)))
        return measured
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.statement_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    settings = load_settings()
    with service_urls(settings.database_url, settings.redis_url, DATA_DIR,
                      need_redis=False) as urls:
        prepared = asyncio.run(prepare(urls.database_url, args.members))
        try:
            say(f"each statement {args.calls:,} times, back to back, on one connection")
            rows = uvloop.run(measure(prepared["dsn"], args.calls))
        finally:
            asyncio.run(drop_data_set(urls.database_url))
    width = max(len(name) for name, _, _ in rows)
    print(f"\n{'statement':{width}}  client CPU  wall (µs)")
    for name, cpu, wall in rows:
        print(f"{name:{width}}  {cpu:10.1f}  {wall:9.1f}")


if __name__ == "__main__":
    main()
