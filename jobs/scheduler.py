"""The scheduler: APScheduler under a leader lock, so one instance acts at a time.

Leadership is a PostgreSQL advisory lock held on a dedicated connection. The lock lives as
long as that session does, so a leader that dies (process killed, machine gone, connection
cut) releases it on its own and a follower takes over at its next poll. Jobs are registered
in ``JOBS``; the points, tiers and analytics work adds them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from loyalty.db import Pool, create_pool

log = logging.getLogger(__name__)

# Any fixed 64-bit number; it only has to differ from the migration lock.
LEADER_LOCK_KEY = 0x4C4F59414C5460


@dataclass(frozen=True)
class Job:
    name: str
    cron: str
    run: Callable[[Pool], Awaitable[object]]


# Filled in by the issues that add jobs (expiry, dormancy, tiers, ...).
JOBS: list[Job] = []


class Leadership:
    """Try to hold the leader lock on a connection of its own."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> bool:
        """True when this instance now leads. Never blocks: a follower just answers False."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn)
        got: bool = await self._conn.fetchval("select pg_try_advisory_lock($1)", LEADER_LOCK_KEY)
        return got

    async def still_held(self) -> bool:
        """False once the session holding the lock is gone."""
        if self._conn is None or self._conn.is_closed():
            return False
        try:
            held: bool = await self._conn.fetchval(
                """
                select exists (
                    select 1 from pg_locks
                     where locktype = 'advisory' and pid = pg_backend_pid() and granted
                       and (classid::bigint << 32 | objid::bigint) = $1)
                """,
                LEADER_LOCK_KEY,
            )
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            return False
        return held

    async def release(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                await self._conn.close()
        self._conn = None


def build_scheduler(pool: Pool, timezone: str, jobs: list[Job]) -> AsyncIOScheduler:
    """An APScheduler with every job in ``jobs`` on its cron schedule, at most one run at once."""
    from apscheduler.triggers.cron import CronTrigger

    scheduler = AsyncIOScheduler(timezone=timezone)
    for job in jobs:
        scheduler.add_job(job.run, CronTrigger.from_crontab(job.cron, timezone=timezone),
                          args=[pool], id=job.name, max_instances=1, coalesce=True)
    return scheduler


async def run_scheduler(
    dsn: str, *, timezone: str, poll_seconds: float = 5.0, stop: asyncio.Event | None = None,
    jobs: list[Job] | None = None, on_leading: Callable[[bool], None] | None = None,
) -> None:
    """Follow until the leader lock is free, then run the jobs until leadership is lost."""
    stop = stop or asyncio.Event()
    leadership = Leadership(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        while not stop.is_set():
            try:
                leading = await leadership.acquire()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("scheduler: cannot reach PostgreSQL: %s", exc)
                leading = False
            if leading:
                log.info("scheduler: leading")
                if on_leading:
                    on_leading(True)
                scheduler = build_scheduler(pool, timezone, JOBS if jobs is None else jobs)
                scheduler.start()
                try:
                    while not stop.is_set() and await leadership.still_held():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), poll_seconds)
                finally:
                    scheduler.shutdown(wait=False)
                    await leadership.release()
                    if on_leading:
                        on_leading(False)
                    log.info("scheduler: no longer leading")
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_seconds)
    finally:
        await leadership.release()
        await pool.close()
