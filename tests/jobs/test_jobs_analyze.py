"""A job that changed many rows refreshes the planner's statistics of what it wrote; one that
changed few leaves them to autovacuum."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import loyalty.core.db
from jobs.catalogue import job_named
from jobs.definition import Job, JobContext, make_context
from jobs.runs import run_once
from loyalty.core.db import create_pool
from tests.conftest import make_settings
from tests.factories import make_members

NOW = dt.datetime(2027, 3, 1, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
async def ctx(fresh_database: str, tmp_path: Path) -> AsyncIterator[JobContext]:
    settings = make_settings(fresh_database, "redis://127.0.0.1:1/0", tmp_path)
    pool = await create_pool(fresh_database, min_size=1, max_size=4)
    try:
        yield make_context(fresh_database, pool, settings)
    finally:
        await pool.close()


def _dormancy() -> Job:
    job = job_named("dormancy")
    assert job is not None
    return job


async def _analyses(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "select analyze_count from pg_stat_user_tables"
            " where relname = 'member_status_changes'"))
    finally:
        await conn.close()


async def test_the_dormancy_job_analyzes_after_flagging_more_than_the_threshold(
        ctx: JobContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loyalty.core.db, "ANALYZE_AFTER_ROWS", 2)
    members = await make_members(ctx.dsn, 4)
    conn = await asyncpg.connect(ctx.dsn)
    try:
        # Two members quiet for a year: two flags, not more than the threshold.
        await conn.execute("update members set last_activity_at = $2"
                           " where member_id = any($1::uuid[])", members[:2],
                           NOW - dt.timedelta(days=365))
    finally:
        await conn.close()
    before = await _analyses(ctx.dsn)
    run = await run_once(ctx, _dormancy(), as_of=NOW)
    assert run is not None
    assert run.counts["flagged"] == 2
    assert await _analyses(ctx.dsn) == before

    # The next day all four are quiet: four flags, over the threshold, and the history table
    # is analyzed.
    conn = await asyncpg.connect(ctx.dsn)
    try:
        await conn.execute("update members set status = 'active', last_activity_at = $1",
                           NOW - dt.timedelta(days=365))
    finally:
        await conn.close()
    run = await run_once(ctx, _dormancy(), as_of=NOW + dt.timedelta(days=1))
    assert run is not None
    assert run.counts["flagged"] == 4
    assert await _analyses(ctx.dsn) == before + 1
