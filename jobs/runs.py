"""Running a job once and recording it: the one path for scheduled ticks, manual runs from the
API and ``loyalty jobs run``.

A run holds its job's advisory lock on a connection of its own from start to end, so one job
never runs twice at once across every process, and a run whose process died is known by its
lock being free while its row still says ``running``: the next run of that job marks it
``abandoned``. A scheduled run is for one tick; ``job_runs`` has one row per tick (a unique
index), so a tick already run is not run again by any scheduler, and an abandoned tick is run
again in its own row. Every job is idempotent and resumable, so running a tick again finishes
what the dead run started.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from jobs.definition import Job, JobContext
from loyalty.core.db import Connection, init_connection, repeat_in_batches
from loyalty.core.errors import Conflict, InvalidInput
from loyalty.core.metrics import JOB_RUNS
from schemas.base import Page
from schemas.jobs import JobRun

log = logging.getLogger(__name__)

# The first half of every job's advisory lock key (the second is the hash of its name): any
# fixed 32-bit number, distinct from the other locks' keys.
JOB_LOCK_CLASS = 0x4A4F4253  # "JOBS"

INSTANCE = f"{socket.gethostname()}:{os.getpid()}"


RUN_COLUMNS = """
    run_id, job, trigger, scheduled_for, as_of, started_at, finished_at, outcome, attempts, counts,
    error, instance, started_by
"""


def job_run(row: Any) -> JobRun:
    return msgspec.convert(dict(row), JobRun)


class JobBusy(Conflict):
    """The job is running (in this process or another): one run of a job at a time."""

    code = "job_running"


@dataclass
class Claim:
    """A run that has its job's lock and its row: ``execute`` carries it out and lets go."""

    job: Job
    run: JobRun
    lock: asyncpg.Connection[asyncpg.Record]


async def _lock(dsn: str, name: str) -> asyncpg.Connection[asyncpg.Record] | None:
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        got = await conn.fetchval("select pg_try_advisory_lock($1, hashtext($2))",
                                  JOB_LOCK_CLASS, name)
    except BaseException:
        await conn.close()
        raise
    if not got:
        await conn.close()
        return None
    return conn


_ABANDON = """
update job_runs set outcome = 'abandoned', finished_at = now(),
                    error = 'the process running it stopped before it finished'
 where job = $1 and outcome = 'running'
"""

# A tick is claimed once; an abandoned tick is claimed again, in its own row.
_CLAIM_TICK = f"""
insert into job_runs as r (job, trigger, scheduled_for, as_of, started_at, instance)
values ($1, 'schedule', $2, $2, now(), $3)
on conflict (job, scheduled_for) where scheduled_for is not null do update
   set outcome = 'running', attempts = r.attempts + 1, started_at = now(), finished_at = null,
       error = null, instance = excluded.instance
 where r.outcome = 'abandoned'
returning {RUN_COLUMNS}
"""  # noqa: S608 - a module constant column list

_CLAIM_MANUAL = f"""
insert into job_runs (job, trigger, as_of, started_at, instance, started_by)
values ($1, 'manual', $2, now(), $3, $4)
returning {RUN_COLUMNS}
"""  # noqa: S608 - a module constant column list


async def claim(
    dsn: str, job: Job, *, tick: dt.datetime | None = None, as_of: dt.datetime | None = None,
    started_by: UUID | None = None,
) -> Claim | None:
    """Take ``job``'s lock and record a run: of the schedule's ``tick``, or by hand as of
    ``as_of``. None when ``tick`` has been run already; ``JobBusy`` while the job runs."""
    if (tick is None) == (as_of is None):
        raise ValueError("a run is either for a tick or by hand as of a moment")
    lock = await _lock(dsn, job.name)
    if lock is None:
        raise JobBusy(f"job {job.name} is running; try again when it has finished",
                      field="name")
    try:
        await lock.execute(_ABANDON, job.name)
        if tick is not None:
            row = await lock.fetchrow(_CLAIM_TICK, job.name, tick, INSTANCE)
        else:
            row = await lock.fetchrow(_CLAIM_MANUAL, job.name, as_of, INSTANCE, started_by)
    except BaseException:
        await lock.close()
        raise
    if row is None:
        await lock.close()
        return None
    return Claim(job=job, run=job_run(row), lock=lock)


async def execute(claim: Claim, ctx: JobContext) -> JobRun:
    """Run the claimed job as of its moment, record how it ended, and release its lock. If
    this task is cancelled (the process stopping), the row stays ``running`` and the next run
    of the job marks it abandoned."""
    run = claim.run
    try:
        outcome, counts, error = "failed", {}, None
        try:
            log.debug("job %s: started (run %d, as of %s)", run.job, run.run_id, run.as_of)
            counts = await claim.job.run(ctx, run.as_of)
            outcome = "succeeded"
            # A run that found nothing to do (the launch check every minute, mostly) is not news.
            log.log(logging.INFO if any(counts.values()) else logging.DEBUG,
                    "job %s: succeeded %s", run.job, counts)
        except Exception as exc:  # recorded in the run and logged, not swallowed
            error = f"{type(exc).__name__}: {exc}"[:2000]
            log.exception("job %s: failed", run.job)
        JOB_RUNS.labels(run.job, outcome).inc()
        row = await claim.lock.fetchrow(
            f"""
            update job_runs set outcome = $2, counts = $3, error = $4, finished_at = now()
             where run_id = $1
            returning {RUN_COLUMNS}
            """, run.run_id, outcome, counts, error)  # noqa: S608 - a module constant column list
        assert row is not None
        return job_run(row)
    finally:
        with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            await claim.lock.close()


# Runs started by hand in this process (the API's and the console's "run now"), kept referenced
# until they finish (the event loop holds tasks weakly).
_background: set[asyncio.Task[JobRun]] = set()


async def start_run(ctx: JobContext, job: Job, *, as_of: dt.datetime,
                    started_by: UUID | None) -> JobRun:
    """Run ``job`` by hand as of ``as_of``, in the background of this process, under the same
    lock as the scheduler's runs: the run as it starts (``running``); ``JobBusy`` while the job
    is running anywhere. Follow it with ``list_runs``."""
    claimed = await claim(ctx.dsn, job, as_of=as_of, started_by=started_by)
    assert claimed is not None  # a run by hand is never for a tick already run
    task = asyncio.create_task(execute(claimed, ctx))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return claimed.run


async def cancel_started_runs() -> None:
    """At shutdown: stop the runs ``start_run`` started here. Their rows stay ``running`` until
    the next run of the job marks them abandoned (a scheduled tick is then run again; a run by
    hand is not, start it again)."""
    for task in list(_background):
        task.cancel()
    for task in list(_background):
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_once(
    ctx: JobContext, job: Job, *, tick: dt.datetime | None = None,
    as_of: dt.datetime | None = None, started_by: UUID | None = None,
) -> JobRun | None:
    """Claim and execute: the run's record, or None if its tick was run already."""
    claimed = await claim(ctx.dsn, job, tick=tick, as_of=as_of, started_by=started_by)
    if claimed is None:
        return None
    return await execute(claimed, ctx)


async def last_tick(conn: Connection, job: str) -> dt.datetime | None:
    """The latest tick of ``job`` that has a run (whatever its outcome)."""
    tick: dt.datetime | None = await conn.fetchval(
        "select max(scheduled_for) from job_runs where job = $1", job)
    return tick


# -- reading ---------------------------------------------------------------------------------

# The jobs among $2 whose lock is held now: by a run in progress, in whatever process.
_RUNNING = """
select name from unnest($2::text[]) as name
 where exists (select 1 from pg_locks
                where locktype = 'advisory' and granted and classid = $1::oid
                  and objid = hashtext(name)::oid and objsubid = 2)
"""


async def latest_runs(conn: Connection) -> dict[str, JobRun]:
    """Each job's latest run, by the job's name."""
    return {row["job"]: job_run(row) for row in await conn.fetch(
        f"""
        select distinct on (job) {RUN_COLUMNS} from job_runs
         order by job, run_id desc
        """)}  # noqa: S608 - a module constant column list


async def running_jobs(conn: Connection, names: list[str]) -> set[str]:
    """The jobs among ``names`` running now, in whatever process."""
    return {row["name"] for row in await conn.fetch(_RUNNING, JOB_LOCK_CLASS, names)}


async def list_runs(conn: Connection, job: str, *, limit: int,
                    cursor: str | None) -> Page[JobRun]:
    """A job's runs, newest first."""
    after = _decode_run_cursor(cursor) if cursor else None
    rows = await conn.fetch(
        f"""
        select {RUN_COLUMNS} from job_runs
         where job = $1 and ($2::bigint is null or run_id < $2)
         order by run_id desc limit $3
        """, job, after, limit + 1)  # noqa: S608 - a module constant column list
    items = [job_run(row) for row in rows[:limit]]
    next_cursor = str(items[-1].run_id) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def _decode_run_cursor(cursor: str) -> int:
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidInput("cursor is not valid", field="cursor")
    return int(cursor)


# -- keeping the history bounded -------------------------------------------------------------

# How long runs are kept: a quarter of history to look back on, about 130,000 rows with the
# minute-by-minute launch check.
RUNS_KEPT = dt.timedelta(days=90)

# Finished runs started before $1, oldest first, $2 at a time; each job's latest tick stays,
# since catching up starts from it.
_DELETE_OLD_RUNS = """
with old as (
    select run_id from job_runs r
     where started_at < $1 and outcome <> 'running'
       and scheduled_for is distinct from (select max(scheduled_for) from job_runs l
                                            where l.job = r.job)
     order by run_id limit $2
), deleted as (
    delete from job_runs r using old where r.run_id = old.run_id returning 1
)
select count(*) from deleted
"""


async def delete_old_runs(conn: Connection, *, before: dt.datetime,
                          batch_size: int = 10_000) -> dict[str, int]:
    """Delete the finished runs started before ``before``, a batch per transaction."""
    deleted = await repeat_in_batches(conn, _DELETE_OLD_RUNS, before, batch_size=batch_size)
    return {"deleted": deleted}
