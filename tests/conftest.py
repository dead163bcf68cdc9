"""Fixtures on real PostgreSQL and Redis, never mocks.

``LOYALTY_TEST_DATABASE_URL`` and ``LOYALTY_TEST_REDIS_URL`` point the suite at servers of your
choosing (the database named in the URL is only used to connect: the suite creates and drops
its own; the Redis database in the URL is flushed before each API test). Without them the suite
starts the embedded servers under ``.loyalty/test``, exactly as ``make run`` does.

Isolation: the production migration runner builds one template database per session. A domain
test (``db``) runs in a transaction on a shared copy and rolls it back; an API test (``client``)
gets a database of its own, cloned from the template, so it may commit and use many connections
at once.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from litestar import Litestar

from api.app import create_app
from loyalty.core.db import Connection, init_connection, migrate, with_database
from loyalty.core.embedded import ServiceUrls, service_urls
from loyalty.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
_PREFIX = f"loyalty_test_{os.getpid()}"
_clone_numbers = itertools.count()


database_url = with_database


@pytest.fixture(scope="session")
def servers() -> Iterator[ServiceUrls]:
    with service_urls(
        os.environ.get("LOYALTY_TEST_DATABASE_URL") or None,
        os.environ.get("LOYALTY_TEST_REDIS_URL") or None,
        ROOT / ".loyalty" / "test",
    ) as urls:
        yield urls


@pytest.fixture(scope="session")
async def maintenance(servers: ServiceUrls) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the ``postgres`` database, for creating and dropping test databases."""
    conn = await asyncpg.connect(database_url(servers.database_url, "postgres"))
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def template_db(maintenance: asyncpg.Connection, servers: ServiceUrls) -> AsyncIterator[str]:
    """A database migrated once per session by the production runner; never used directly."""
    name = f"{_PREFIX}_template"
    await maintenance.execute(f'drop database if exists "{name}" with (force)')
    await maintenance.execute(f'create database "{name}"')
    await migrate(database_url(servers.database_url, name))
    yield name
    await maintenance.execute(f'drop database if exists "{name}" with (force)')


async def clone_database(maintenance: asyncpg.Connection, template: str) -> str:
    name = f"{_PREFIX}_{next(_clone_numbers)}"
    await maintenance.execute(
        f'create database "{name}" template "{template}" strategy file_copy'
    )
    return name


@pytest.fixture
async def fresh_database(
    maintenance: asyncpg.Connection, template_db: str, servers: ServiceUrls
) -> AsyncIterator[str]:
    """The URL of a database of this test's own, migrated, dropped afterwards."""
    name = await clone_database(maintenance, template_db)
    yield database_url(servers.database_url, name)
    await maintenance.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
async def shared_database(
    maintenance: asyncpg.Connection, template_db: str, servers: ServiceUrls
) -> AsyncIterator[str]:
    name = await clone_database(maintenance, template_db)
    yield database_url(servers.database_url, name)
    await maintenance.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
async def db(shared_database: str) -> AsyncIterator[Connection]:
    """A connection inside a transaction that is rolled back when the test ends."""
    conn = await asyncpg.connect(shared_database)
    from loyalty.core.db import init_connection

    await init_connection(conn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


async def query(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement on a connection of its own (jsonb decoded as the service does): for
    tests reading or arranging rows beside the API."""
    conn = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.fixture
def cli_env(fresh_database: str, redis_url: str, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ``loyalty`` command's environment for a test: a fresh database (its URL is what the
    fixture gives), Redis, a data directory of its own, cheap password hashing."""
    monkeypatch.setenv("LOYALTY_DATABASE_URL", fresh_database)
    monkeypatch.setenv("LOYALTY_REDIS_URL", redis_url)
    monkeypatch.setenv("LOYALTY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LOYALTY_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("LOYALTY_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("LOYALTY_ARGON2_PARALLELISM", "1")
    # The CLI installs a SIGTERM handler for the embedded servers; keep the test runner's.
    previous = signal.getsignal(signal.SIGTERM)
    yield fresh_database
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
async def connections(fresh_database: str) -> AsyncIterator[list[Connection]]:
    """Three connections of their own to a fresh database: one to set up, two to race."""
    opened = [await asyncpg.connect(fresh_database) for _ in range(3)]
    for conn in opened:
        await init_connection(conn)
    yield opened
    for conn in opened:
        await conn.close()


@pytest.fixture
async def redis_url(servers: ServiceUrls) -> str:
    """The test Redis, emptied first: Redis holds only what may be lost
    (docs/decisions/0004-readiness-without-redis.md)."""
    client = aioredis.from_url(servers.redis_url)
    await client.flushdb()
    await client.aclose()
    return servers.redis_url


def make_settings(database: str, redis: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test: cheap password hashing, limits high enough not to get in the way."""
    values: dict[str, object] = {
        "database_url": database,
        "redis_url": redis,
        "data_dir": str(data_dir),
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8,
        "argon2_parallelism": 1,
        "db_pool_min": 1,
        "login_rate_limit_per_minute": 10_000,
        "rate_limit_per_minute": 100_000,
        # Jobs run where a test runs them; tests/jobs/test_scheduler*.py run schedulers.
        "scheduler": "off",
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture
def settings(fresh_database: str, redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(fresh_database, redis_url, tmp_path)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``app`` running in the test's own event loop, lifespan included.

    Not litestar's AsyncTestClient: that one runs each request to completion on a separate
    thread while the caller's loop waits, so requests sent together never overlap, and the
    concurrency tests need them to.
    """
    transport = httpx.ASGITransport(app=app, client=("testclient", 50000))
    async with app.lifespan(), httpx.AsyncClient(
        transport=transport, base_url="http://testserver.local"
    ) as client:
        yield client


async def held(manager: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """``async with manager`` for a fixture: entered and exited in one task of its own, since
    pytest-asyncio may tear a fixture down in another task than set it up, and anyio's cancel
    scopes (in the app's lifespan) must be left where they were entered."""
    entered: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def hold() -> None:
        try:
            async with manager as value:
                entered.set_result(value)
                await done.wait()
        except BaseException as exc:
            if not entered.done():
                entered.set_exception(exc)
            raise

    task = asyncio.create_task(hold())
    try:
        yield await entered
    finally:
        done.set()
        await task


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async for client in held(serve(app)):
        yield client
