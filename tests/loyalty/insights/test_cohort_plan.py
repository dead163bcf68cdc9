"""The cohort query finds each member's status changes through the index made for it
(migration 0025), whatever the planner's statistics say; bulk writes refresh the statistics
(ANALYZE) themselves."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg

from loyalty.core.db import Connection, analyze_after
from loyalty.insights.cohorts import cohorts
from loyalty.insights.dormancy import flag_dormant
from tests.factories import TOKYO, make_members

NOW = dt.datetime(2026, 6, 15, 3, 0, tzinfo=TOKYO)


async def _plan_of_cohorts(db: Connection) -> str:
    """The plan of the cohort query that reads member_status_changes, with sequential scans
    priced out so that only a lookup no index serves reads the table whole."""
    seen: list[tuple[str, Any]] = []

    def log(record: Any) -> None:
        seen.append((record.query, record.args))

    await db.execute("set local enable_seqscan = off")
    db.add_query_logger(log)
    try:
        await cohorts(db, first=dt.date(2026, 1, 1), last=dt.date(2026, 6, 1), tz=TOKYO, now=NOW)
        await asyncio.sleep(0)  # the logger is called soon after the query, not within it
    finally:
        db.remove_query_logger(log)
    [(query, args)] = [(q, a) for q, a in seen if "member_status_changes" in q]
    rows = await db.fetch(f"explain {query}", *args)
    return "\n".join(row[0] for row in rows)


async def test_the_cohort_query_reads_each_members_changes_by_the_member_index(
        fresh_database: str) -> None:
    # A dormancy run stamps many members' changes with one moment, and nobody has analyzed
    # the table since: the case that walked the (changed_at) index for every member.
    await make_members(fresh_database, 200)
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("update members set joined_at = '2026-02-01T00:00:00Z',"
                           " last_activity_at = '2026-02-01T00:00:00Z'")
        await flag_dormant(conn, now=NOW, tz=TOKYO, days=30)
        async with conn.transaction():
            plan = await _plan_of_cohorts(conn)
    finally:
        await conn.close()
    assert "member_status_changes_by_member" in plan, plan
    assert "member_status_changes_at" not in plan, plan


async def _analyses(conn: Connection, table: str) -> int:
    await conn.execute("select pg_stat_clear_snapshot()")
    count = await conn.fetchval(
        "select analyze_count from pg_stat_user_tables where relname = $1", table)
    return int(count)


async def test_a_bulk_write_over_the_threshold_analyzes_its_tables(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        before = await _analyses(conn, "member_status_changes")
        small = await analyze_after(conn, 10, "member_status_changes", threshold=10)
        after_small = await _analyses(conn, "member_status_changes")
        large = await analyze_after(conn, 11, "member_status_changes", threshold=10)
        after_large = await _analyses(conn, "member_status_changes")
    finally:
        await conn.close()
    assert (small, after_small) == (False, before)
    assert (large, after_large) == (True, before + 1)
