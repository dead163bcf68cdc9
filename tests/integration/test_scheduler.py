"""One scheduler leads across all instances, and another takes over when the leader dies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from jobs.scheduler import LEADER_LOCK_KEY, run_scheduler


async def _wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (the scheduler reports by callback, polled)
            await asyncio.sleep(0.05)


async def test_one_leader_and_a_takeover_when_its_session_dies(fresh_database: str) -> None:
    leading: dict[str, bool] = {"a": False, "b": False}
    stop_a, stop_b = asyncio.Event(), asyncio.Event()

    def tracker(name: str):  # type: ignore[no-untyped-def]
        return lambda now_leading: leading.__setitem__(name, now_leading)

    a = asyncio.create_task(run_scheduler(fresh_database, timezone="Asia/Tokyo",
                                          poll_seconds=0.1, stop=stop_a, jobs=[],
                                          on_leading=tracker("a")))
    await _wait_for(lambda: leading["a"])
    b = asyncio.create_task(run_scheduler(fresh_database, timezone="Asia/Tokyo",
                                          poll_seconds=0.1, stop=stop_b, jobs=[],
                                          on_leading=tracker("b")))
    await asyncio.sleep(0.5)
    assert leading == {"a": True, "b": False}

    # The leader's database session is killed, as when its machine vanishes.
    conn = await asyncpg.connect(fresh_database)
    try:
        killed = await conn.fetchval(
            """
            select count(pg_terminate_backend(pid)) from pg_locks
             where locktype = 'advisory' and granted
               and (classid::bigint << 32 | objid::bigint) = $1
            """,
            LEADER_LOCK_KEY,
        )
    finally:
        await conn.close()
    assert killed == 1
    await _wait_for(lambda: leading["b"])
    assert leading["b"] is True

    stop_a.set()
    stop_b.set()
    await asyncio.gather(a, b)
    assert leading == {"a": False, "b": False}
