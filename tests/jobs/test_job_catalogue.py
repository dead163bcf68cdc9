"""Every job in the catalogue runs against a real database, and the cleanup deletes exactly the
keys past their 72 hours."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from jobs.catalogue import JOBS
from jobs.definition import Job, JobContext, make_context
from jobs.runs import run_once
from loyalty.core.db import create_pool
from loyalty.core.idempotency import IDEMPOTENCY_KEPT, delete_old_idempotency_keys
from tests.conftest import make_settings
from tests.factories import make_members

NOW = dt.datetime(2027, 3, 1, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
async def ctx(fresh_database: str, redis_url: str, tmp_path: Path) -> AsyncIterator[JobContext]:
    settings = make_settings(fresh_database, redis_url, tmp_path, birthday_points=100)
    pool = await create_pool(fresh_database, min_size=1, max_size=4)
    try:
        yield make_context(fresh_database, pool, settings)
    finally:
        await pool.close()


@pytest.mark.parametrize("job", JOBS, ids=[job.name for job in JOBS])
async def test_each_job_runs_and_reports_its_counts(ctx: JobContext, job: Job) -> None:
    await make_members(ctx.dsn, 3)
    run = await run_once(ctx, job, as_of=NOW)
    assert run is not None
    assert (run.outcome, run.error) == ("succeeded", None)
    assert run.counts, "every job says what it did"
    assert all(isinstance(value, int) for value in run.counts.values())


async def test_idempotency_keys_older_than_72_hours_are_deleted_in_batches(
        fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        # Seven keys: 73, 72 (exactly: kept), 71 hours old, and four old ones.
        ages = [73, 72, 71, 100, 200, 300, 400]
        for n, hours in enumerate(ages):
            await conn.execute(
                """
                insert into idempotency_keys (principal_id, idempotency_key, request_hash,
                                              response_status, response_body, created_at)
                values (gen_random_uuid(), $1, '\\x00', 201, '\\x00', $2)
                """, f"key-{n}", NOW - dt.timedelta(hours=hours))
        first = await delete_old_idempotency_keys(conn, before=NOW - IDEMPOTENCY_KEPT,
                                                  batch_size=2)
        again = await delete_old_idempotency_keys(conn, before=NOW - IDEMPOTENCY_KEPT,
                                                  batch_size=2)
        kept = sorted(r["idempotency_key"] for r in await conn.fetch(
            "select idempotency_key from idempotency_keys"))
    finally:
        await conn.close()
    assert first == {"deleted": 5}
    assert again == {"deleted": 0}
    assert kept == ["key-1", "key-2"]
