"""PostgreSQL access: the pool, the one transaction helper, and the migration runner."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec

from schemas.base import encode_edge

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    # Either a connection of its own or one lent by the pool: the same methods, and the
    # domain functions take whichever they are given.
    Connection: TypeAlias = (
        asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    )
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    # At run time asyncpg's classes are not generic; a pool's proxy passes as a Connection.
    Connection = asyncpg.Connection
    Pool = asyncpg.Pool

# Any fixed 64-bit number works; it only has to be the same for every instance.
MIGRATION_LOCK_KEY = 0x4C4F59414C5459  # "LOYALTY"

# The bounded types of schemas.base are plain dates and times once stored.
_json_encode = msgspec.json.Encoder(enc_hook=encode_edge).encode
_json_decode = msgspec.json.Decoder().decode


async def init_connection(conn: Connection) -> None:
    # jsonb travels as text; msgspec encodes and decodes it once here for every query.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: _json_encode(value).decode(),
        decoder=_json_decode,
        schema="pg_catalog",
    )


async def _keep_session(conn: Connection) -> None:
    """What the pool does to a connection handed back, beyond rolling back an open
    transaction (asyncpg always does that): nothing. asyncpg's default sends a reset query
    (unlisten, unlock advisory locks, reset settings) with every release, a round trip per
    request; pool connections never change session state here (no LISTEN, no SET, no
    session-level advisory locks, which only the dedicated connections of the migration
    runner and the scheduler's leader take)."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20,
                      statement_timeout_seconds: int = 60) -> Pool:
    """One pool per process, with the jsonb codec on every connection."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, reset=_keep_session,
        # The server enforces the time limit: asyncpg's own command_timeout arms an asyncio
        # timeout around every query, measurable on every request. No JIT: a segment's
        # per-member subqueries look costly enough to trigger it, and compiling took longer
        # than it saved (a spend segment over 100,000 members: 1.2 s with it, 0.7 s without).
        server_settings={"statement_timeout": f"{statement_timeout_seconds}s", "jit": "off"},
    )
    assert pool is not None
    return pool


async def ping(db: Pool | Connection) -> None:
    """Ask PostgreSQL for an answer, through the pool or one connection; raises if none comes."""
    await db.fetchval("select 1")


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    """A connection inside one transaction: commit when the block returns, roll back on raise."""
    async with pool.acquire() as conn, conn.transaction():
        yield conn


async def repeat_in_batches(conn: Connection, statement: str, *args: object,
                            batch_size: int) -> int:
    """Run ``statement`` (which handles at most ``batch_size`` rows, its last parameter, and
    returns how many it did) in a transaction of its own, again and again until a run handles
    fewer: a purge in bounded transactions. Returns the rows handled in all."""
    total = 0
    while True:
        async with conn.transaction():
            count: int = await conn.fetchval(statement, *args, batch_size)
        total += count
        if count < batch_size:
            return total


# A bulk write of more rows than this (an import, a night's dormancy, expiry, RFM or tier run)
# refreshes the planner's statistics of the tables it wrote at once: autovacuum would come round
# only later, and meanwhile the analytics queries were planned on figures of a table a fraction
# of the size, or with one changed_at for thousands of new rows (16-56 s for a cohort query
# instead of under one, issue 17).
ANALYZE_AFTER_ROWS = 10_000


async def analyze(conn: Connection, *tables: str) -> None:
    """ANALYZE ``tables`` (names from the code, never from input)."""
    for table in tables:
        if not table.isidentifier():
            raise ValueError(f"not a table name: {table!r}")
        await conn.execute(f"analyze {table}")


async def analyze_after(conn: Connection, changed: int, *tables: str,
                        threshold: int | None = None) -> bool:
    """ANALYZE ``tables`` if a job ``changed`` more than ``threshold`` (ANALYZE_AFTER_ROWS)
    rows; whether it did."""
    if changed <= (ANALYZE_AFTER_ROWS if threshold is None else threshold):
        return False
    await analyze(conn, *tables)
    return True


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (host and unix-socket URLs alike)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def recreate_database(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``server_url``, dropped if it existed,
    created empty and migrated: for the benchmark and the fuzzer, which each want one of their
    own."""
    await drop_database(server_url, name)
    admin: Connection = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    await migrate(url)
    return url


async def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``server_url``, sessions and all."""
    admin: Connection = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


def bundled_migrations() -> list[Migration]:
    """The SQL files shipped in ``loyalty/migrations``, in the order of their numbers."""
    folder = resources.files("loyalty") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(version, rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


class MigrationError(Exception):
    pass


async def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; return their names.

    An advisory lock serialises instances that start together: the second waits, then finds
    nothing left to do. A recorded migration whose file has changed stops the run.
    """
    todo = bundled_migrations() if migrations is None else migrations
    conn: Connection = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("select pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """
                create table if not exists schema_migrations (
                    version    text primary key,
                    name       text not null,
                    checksum   text not null,
                    applied_at timestamptz not null default now()
                )
                """
            )
            done = {
                row["version"]: row["checksum"]
                for row in await conn.fetch("select version, checksum from schema_migrations")
            }
            for migration in todo:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version}_{migration.name} was changed after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "insert into schema_migrations (version, name, checksum)"
                        " values ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                log.info("applied migration %s_%s", migration.version, migration.name)
                applied.append(f"{migration.version}_{migration.name}")
        finally:
            await conn.execute("select pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied


async def fetch_returning(conn: Connection, sql: str, *args: Any) -> asyncpg.Record:
    """The row of a statement that always yields one (``insert ... returning``)."""
    row = await conn.fetchrow(sql, *args)
    if row is None:
        raise RuntimeError("statement returned no row")
    return row
