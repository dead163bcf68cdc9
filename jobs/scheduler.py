"""The scheduler: APScheduler under a leader lock, so one instance acts at a time.

Leadership is a PostgreSQL advisory lock held on a dedicated connection. The lock lives as
long as that session does, so a leader that dies (process killed, machine gone, connection
cut) releases it on its own and a follower takes over at its next poll (every five seconds).

APScheduler is the alarm clock; what runs is decided by the run history. When a job's alarm
rings, and once for every job when an instance starts leading, the leader runs each tick of
that job's schedule that has no run yet, oldest first, back to the job's last recorded tick (a
job never run before runs only its latest tick of the last day). So ticks that fell while no
one led, or while the leader was dying, are run by the next leader, and a tick is never run
twice (jobs/runs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from jobs.catalogue import JOBS, schedules
from jobs.definition import Job, JobContext, cron_trigger, make_context
from jobs.runs import INSTANCE, JobBusy, last_tick, run_once
from loyalty.core.db import Connection, create_pool
from loyalty.core.settings import Settings
from schemas.jobs import JobRun

log = logging.getLogger(__name__)
# APScheduler logs every alarm twice at INFO ("Running job", "executed successfully"); the runs
# log what they did (jobs/runs.py), so its own lines are kept for warnings.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

# Any fixed 64-bit number; it only has to differ from the migration lock.
LEADER_LOCK_KEY = 0x4C4F59414C5460
# Jobs are batch work: each statement may take longer than an API request's.
JOB_STATEMENT_TIMEOUT_SECONDS = 1800


class Leadership:
    """Try to hold the leader lock on a connection of its own."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> bool:
        """True when this instance now leads. Never blocks: a follower just answers False."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn, server_settings={"application_name": f"loyalty leader {INSTANCE}"})
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
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError,
                asyncpg.InternalClientError):
            # A session killed under the connection can leave asyncpg's protocol mid-operation
            # ("cannot switch to state ..."): not leading either way, and the connection is
            # dropped by release().
            return False
        return held

    async def release(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError,
                                     asyncpg.InternalClientError):
                await self._conn.close()
        self._conn = None


# A scheduler back after a long stop catches up at most this far: a week of a daily job's
# ticks, each run as of its own tick.
CATCH_UP_LIMIT = dt.timedelta(days=7)
# A job with no run yet starts from its latest tick within the longest of these that has one.
_FIRST_LOOK_BACK = (dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1))
# While a job is running by hand, its tick waits for it, trying again this often.
BUSY_RETRY_SECONDS = 5.0


def ticks_between(trigger: BaseTrigger, after: dt.datetime,
                  until: dt.datetime) -> list[dt.datetime]:
    """The trigger's ticks t with ``after`` < t <= ``until``, oldest first."""
    ticks: list[dt.datetime] = []
    tick = trigger.get_next_fire_time(None, after + dt.timedelta(microseconds=1))
    while tick is not None and tick <= until:
        ticks.append(tick)
        tick = trigger.get_next_fire_time(tick, tick + dt.timedelta(microseconds=1))
    return ticks


async def due_ticks(conn: Connection, job: str, trigger: BaseTrigger,
                    now: dt.datetime) -> list[dt.datetime]:
    """The ticks of ``job`` that should have run by ``now`` and have no run yet."""
    last = await last_tick(conn, job)
    if last is None:
        for window in _FIRST_LOOK_BACK:
            ticks = ticks_between(trigger, now - window, now)
            if ticks:
                return ticks[-1:]
        return []
    return ticks_between(trigger, max(last, now - CATCH_UP_LIMIT), now)


async def run_due(ctx: JobContext, job: Job, trigger: BaseTrigger, now: dt.datetime, *,
                  busy_retry_seconds: float = BUSY_RETRY_SECONDS) -> list[JobRun]:
    """Run every due tick of ``job`` as of ``now``, oldest first; a tick another scheduler ran
    meanwhile is skipped. While the job runs by hand, waits for it."""
    async with ctx.pool.acquire() as conn:
        ticks = await due_ticks(conn, job.name, trigger, now)
    runs: list[JobRun] = []
    for tick in ticks:
        while True:
            try:
                run = await run_once(ctx, job, tick=tick)
                break
            except JobBusy:
                await asyncio.sleep(busy_retry_seconds)
        if run is not None:
            runs.append(run)
    return runs


async def _alarm(ctx: JobContext, job: Job, trigger: BaseTrigger,
                 ringing: set[asyncio.Task[object]]) -> None:
    task = asyncio.current_task()
    assert task is not None
    ringing.add(task)
    try:
        await run_due(ctx, job, trigger, dt.datetime.now(dt.UTC))
    except (asyncpg.PostgresError, OSError) as exc:
        # The ticks stay due and are run at the job's next alarm or by the next leader.
        log.warning("scheduler: job %s could not run: %s", job.name, exc)
    finally:
        ringing.discard(task)


def build_scheduler(ctx: JobContext, jobs: list[tuple[Job, str]],
                    ringing: set[asyncio.Task[object]]) -> AsyncIOScheduler:
    """An APScheduler ringing each job's alarm on its schedule, and once at start, at most one
    ring of a job at a time; the alarms in progress are kept in ``ringing``."""
    scheduler = AsyncIOScheduler(timezone=ctx.settings.timezone)
    start = dt.datetime.now(dt.UTC)
    for job, cron in jobs:
        trigger = cron_trigger(cron, ctx.settings.timezone)
        scheduler.add_job(_alarm, trigger, args=[ctx, job, trigger, ringing], id=job.name,
                          max_instances=1, coalesce=True, misfire_grace_time=None,
                          next_run_time=start)
    return scheduler


async def _stop(scheduler: AsyncIOScheduler, ringing: set[asyncio.Task[object]]) -> None:
    """No more alarms, and the runs in progress cancelled: their rows stay ``running`` and the
    next leader runs their ticks again (every job is resumable)."""
    scheduler.shutdown(wait=False)
    for task in list(ringing):
        task.cancel()
    for task in list(ringing):
        with contextlib.suppress(asyncio.CancelledError):
            await task


def scheduled_jobs(settings: Settings) -> list[tuple[Job, str]]:
    """The jobs with a schedule, and their cron expression."""
    chosen = schedules(settings)
    return [(job, cron) for job in JOBS if (cron := chosen[job.name]) is not None]


# Polls a leader whose session was lost waits before it competes for the lock again.
LOST_LEADER_WAITS_POLLS = 3


async def run_scheduler(
    settings: Settings, dsn: str, *, poll_seconds: float = 5.0, stop: asyncio.Event | None = None,
    jobs: list[tuple[Job, str]] | None = None, on_leading: Callable[[bool], None] | None = None,
) -> None:
    """Follow until the leader lock is free, then run the jobs until leadership is lost."""
    stop = stop or asyncio.Event()
    jobs = scheduled_jobs(settings) if jobs is None else jobs
    leadership = Leadership(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=4,
                             statement_timeout_seconds=JOB_STATEMENT_TIMEOUT_SECONDS)
    ctx = make_context(dsn, pool, settings)
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
                ringing: set[asyncio.Task[object]] = set()
                scheduler = build_scheduler(ctx, jobs, ringing)
                scheduler.start()
                try:
                    while not stop.is_set() and await leadership.still_held():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), poll_seconds)
                finally:
                    await _stop(scheduler, ringing)
                    await leadership.release()
                    if on_leading:
                        on_leading(False)
                    log.info("scheduler: no longer leading")
                # Leadership lost with the session: the others, whose sessions held, take over
                # first. Trying again at once, this instance won the lock back before a
                # follower's next look about as often as not.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LOST_LEADER_WAITS_POLLS * poll_seconds)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_seconds)
    finally:
        await leadership.release()
        await pool.close()
