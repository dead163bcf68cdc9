"""The migration runner: in order, once, each file in its own transaction, safe to start twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from loyalty.core.db import Migration, MigrationError, bundled_migrations, migrate
from loyalty.core.embedded import ServiceUrls
from tests.conftest import _PREFIX, database_url


@pytest.fixture
async def empty_database(
    maintenance: asyncpg.Connection, servers: ServiceUrls
) -> AsyncIterator[str]:
    name = f"{_PREFIX}_empty"
    await maintenance.execute(f'drop database if exists "{name}" with (force)')
    await maintenance.execute(f'create database "{name}"')
    yield database_url(servers.database_url, name)
    await maintenance.execute(f'drop database if exists "{name}" with (force)')


async def test_bundled_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in bundled_migrations()]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert versions[0] == "0001"


async def test_instances_starting_together_apply_each_migration_once(
    empty_database: str,
) -> None:
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(4)))
    applied = [name for result in results for name in result]
    expected = [f"{m.version}_{m.name}" for m in bundled_migrations()]
    assert sorted(applied) == sorted(expected)
    conn = await asyncpg.connect(empty_database)
    try:
        recorded = await conn.fetch("select version from schema_migrations order by version")
    finally:
        await conn.close()
    assert [r["version"] for r in recorded] == [m.version for m in bundled_migrations()]
    assert await migrate(empty_database) == []


async def test_a_failing_migration_leaves_nothing_behind(empty_database: str) -> None:
    good = Migration("0001", "good", "create table good (x int);")
    bad = Migration("0002", "bad", "create table half (x int); select 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(empty_database, [good, bad])
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("select to_regclass('good') is not null")
        assert await conn.fetchval("select to_regclass('half') is null")
        assert await conn.fetchval("select count(*) from schema_migrations") == 1
    finally:
        await conn.close()


async def test_an_applied_migration_that_changed_stops_the_run(empty_database: str) -> None:
    await migrate(empty_database, [Migration("0001", "first", "create table t (x int);")])
    with pytest.raises(MigrationError, match="0001_first was changed"):
        await migrate(empty_database,
                      [Migration("0001", "first", "create table t (x bigint);"),
                       Migration("0002", "second", "create table u (x int);")])
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("select to_regclass('u') is null")
    finally:
        await conn.close()


async def test_infinite_times_stored_before_the_bounds_are_brought_into_the_calendar(
    empty_database: str,
) -> None:
    """Year 1 and 9999 were once stored as -infinity / infinity; 0018 repairs such rows (so the
    jobs that subtract times run again) and refuses new ones."""
    before = [m for m in bundled_migrations() if m.version < "0018"]
    await migrate(empty_database, before)
    conn = await asyncpg.connect(empty_database)
    try:
        member_id = await conn.fetchval(
            "insert into members (member_number, name, name_key, birth_date)"
            " values ('1', 'Old', 'old', 'infinity') returning member_id")
        await conn.execute(
            "insert into campaigns (name, action, member_list, starts_at)"
            " values ('Year one', '{}', array[$1::uuid], '-infinity')", member_id)
        await migrate(empty_database)
        assert await conn.fetchval("select birth_date from members where member_id = $1",
                                   member_id) is None
        assert str(await conn.fetchval("select starts_at from campaigns")).startswith("2000-01-01")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("update members set birth_date = '-infinity'")
    finally:
        await conn.close()
