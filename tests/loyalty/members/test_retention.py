"""Retention (issue 16): members without a purchase or engagement for
LOYALTY_MEMBER_RETENTION_YEARS are erased by the member_retention job, one transaction each,
with the count in the run history; off (0) by default; a re-run erases nobody twice."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from jobs.catalogue import job_named
from jobs.definition import JobContext, make_context
from jobs.runs import run_once
from loyalty.core.db import Pool, create_pool, init_connection
from loyalty.core.settings import Settings
from tests.conftest import make_settings
from tests.factories import insert_member
from tests.ledger_checks import check_invariants, ledger_rows

NOW = dt.datetime(2027, 3, 1, 3, 0, tzinfo=dt.UTC)


async def _context(dsn: str, tmp_path: Path, **overrides: object) -> tuple[JobContext, Pool]:
    settings: Settings = make_settings(dsn, "redis://127.0.0.1:1/0", tmp_path, **overrides)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    return make_context(dsn, pool, settings), pool


@pytest.fixture
async def conn(fresh_database: str) -> AsyncIterator[asyncpg.Connection]:
    opened = await asyncpg.connect(fresh_database)
    await init_connection(opened)
    yield opened
    await opened.close()


async def _member(conn: asyncpg.Connection, name: str, phone: str, last_activity: dt.datetime,
                  status: str = "active") -> object:
    member_id = await insert_member(conn, name, status=status)
    await conn.execute(
        "update members set last_activity_at = $2, email = $3, phone = $4,"
        " attributes = '{\"shop\": \"Ginza Six\"}' where member_id = $1",
        member_id, last_activity, f"{name.lower().replace(' ', '.')}@example.com",
        phone)
    return member_id


async def test_members_inactive_for_years_are_erased_by_the_job_and_only_they(
    fresh_database: str, conn: asyncpg.Connection, tmp_path: Path,
) -> None:
    years = dt.timedelta(days=365)
    quiet = await _member(conn, "Quiet Sato", "+819011110001", NOW - 3 * years)
    dormant = await _member(conn, "Dormant Ito", "+819011110002",
                            NOW - 2 * years - dt.timedelta(days=5), status="dormant")
    recent = await _member(conn, "Recent Kato", "+819011110003",
                           NOW - 2 * years + dt.timedelta(days=5))
    # The dormant member had asked for their erasure: the job's erasure is that one.
    await conn.execute(
        "insert into member_erasures (member_id, requested_at, due_at, requested_by_kind)"
        " values ($1, $2, $3, 'member')", dormant, NOW, NOW + dt.timedelta(days=14))

    off, off_pool = await _context(fresh_database, tmp_path)
    on, on_pool = await _context(fresh_database, tmp_path, member_retention_years=2)
    try:
        job = job_named("member_retention")
        assert job is not None
        assert off.settings.member_retention_years == 0
        run = await run_once(off, job, as_of=NOW)
        assert run is not None
        assert run.counts == {"erased": 0}
        run = await run_once(on, job, as_of=NOW + dt.timedelta(minutes=1))
        assert run is not None
        assert run.counts == {"erased": 2}
        run = await run_once(on, job, as_of=NOW + dt.timedelta(minutes=2))
        assert run is not None
        assert run.counts == {"erased": 0}
    finally:
        await off_pool.close()
        await on_pool.close()

    rows = {r["member_id"]: r for r in await conn.fetch(
        "select member_id, status, email, phone, name, attributes from members")}
    for erased in (quiet, dormant):
        assert (rows[erased]["status"], rows[erased]["email"], rows[erased]["phone"],
                rows[erased]["name"], rows[erased]["attributes"]) == ("erased", None, None, "", {})
    assert rows[recent]["status"] == "active"
    assert rows[recent]["email"] is not None
    requests = await conn.fetch(
        "select member_id, requested_by_kind, erased_at is not null as done"
        " from member_erasures order by requested_by_kind")
    assert sorted((r["member_id"] == dormant, r["requested_by_kind"], r["done"])
                  for r in requests) == [(False, "retention", True), (True, "member", True)]
    reasons = await conn.fetch("select distinct reason from member_status_changes"
                               " where to_status = 'erased'")
    assert [r["reason"] for r in reasons] == ["erasure after years of inactivity"]
    erased_events = await conn.fetch("select member_id from outbox where type = 'member.erased'")
    assert {r["member_id"] for r in erased_events} == {quiet, dormant}
    history = await conn.fetch("select counts from job_runs where job = 'member_retention'"
                               " order by run_id")
    assert [r["counts"] for r in history] == [{"erased": 0}, {"erased": 2}, {"erased": 0}]
    check_invariants(await ledger_rows(fresh_database))
