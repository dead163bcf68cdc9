"""Staff search finds a member through the indexes, whatever it is given: the plan of each kind
of search (name, kana, e-mail start, phone, member number) reads members by index, never by
walking the whole table (which at 1,000,000 members took 0.3 to 0.8 s a search)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from loyalty.core.db import Connection
from loyalty.members.profiles import search_members


async def _many_members(db: Connection) -> None:
    """Enough members, with statistics, that the planner weighs the plans as it does on a real
    programme's table (on a nearly empty one, any plan costs nothing)."""
    await db.execute(
        """
        insert into members (name, name_key, kana_key, member_number, email, phone)
        select '会員' || i, '会員' || i, 'カイイン' || i, (500000000000 + i)::text,
               'member' || i || '@plan.example', '+8190' || lpad(i::text, 8, '0')
          from generate_series(1, 5000) as i
        """)
    await db.execute("analyze members")


async def _plan_of_search(db: Connection, q: str) -> str:
    return await _plan_of(db, lambda: search_members(db, q=q, limit=25))


async def _plan_of(db: Connection, call: Callable[[], Awaitable[object]]) -> str:
    """The plan PostgreSQL chooses for the first query on members ``call`` runs, with
    sequential scans priced out so that only a query no index can answer walks the table."""
    seen: list[tuple[str, Any]] = []

    def log(record: Any) -> None:
        seen.append((record.query, record.args))

    await db.execute("set local enable_seqscan = off")
    db.add_query_logger(log)
    try:
        await call()
        await asyncio.sleep(0)  # the logger is called soon after the query, not within it
    finally:
        db.remove_query_logger(log)
    # The first query on members (asyncpg's own type lookups are logged too).
    query, args = next((query, args) for query, args in seen if "members" in query)
    rows = await db.fetch(f"explain {query}", *args)
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("q", ["山田", "ヤマダ", "taro.yamada", "090-1234-5678", "12345678"])
async def test_each_kind_of_search_reads_by_index(db: Connection, q: str) -> None:
    await _many_members(db)
    plan = await _plan_of_search(db, q)
    assert "Bitmap Index Scan" in plan or "Index Cond" in plan, plan
    assert "Index Scan Backward using members_pkey" not in plan, plan


async def test_a_members_look_alikes_are_found_by_index(db: Connection) -> None:
    """The member page's look-alikes (duplicates_of): each rule reads an index, none walks
    every member (0.5 s a page at 1,000,000 members before migration 0027)."""
    from loyalty.members.merge import duplicates_of
    from tests.factories import insert_member

    member_id = await insert_member(db, "山田 太郎")
    await db.execute(
        "update members set kana_key = 'ヤマダタロウ', birth_date = '1990-01-01',"
        " postal_code = '1500001', email = 'taro+shop@example.com',"
        " email_skeleton = 'taro@example.com', name_skeleton = 'yamada' where member_id = $1",
        member_id)
    plan = await _plan_of(db, lambda: duplicates_of(db, member_id))
    assert "Seq Scan on members" not in plan, plan
    # The mailbox rule looks its members up by the expression's index, not by reading every
    # member who has an address.
    assert "members_mailbox" in plan, plan
    assert "Recheck Cond: (email IS NOT NULL)" not in plan, plan
