"""Fixtures on real PostgreSQL and Redis, never mocks.

``LOYALTY_TEST_DATABASE_URL`` and ``LOYALTY_TEST_REDIS_URL`` point the suite at servers of your
choosing (the database named in the URL is only used to connect: the suite creates and drops
its own; the Redis database in the URL, and the next one for each further pytest-xdist worker,
is flushed before each test that takes ``redis_url``). Without them the suite starts the
embedded servers under ``.loyalty/test``, as ``make run`` does under ``.loyalty``, and turns
durability off in that PostgreSQL (fsync, full-page writes, synchronous commit): it holds
nothing but tests.

Isolation (docs/decisions/0002-test-isolation.md):

- The production migration runner builds one template database per worker and session.
- A domain test (``db``) runs in a transaction on a shared copy of it, rolled back at the end.
- A test that commits (``fresh_database``, and ``client`` built on it) gets a database of its
  own, cloned from the template with ``strategy wal_log`` and dropped when it ends, so it may
  use many connections at once, as the API and the concurrency tests do. The copy is made
  while the test before it runs (``Clones``) and renamed when its test starts. The API tests of a
  worker get the same name in turn, so that equal settings build one app (``app_for``): the
  routes are built once per session, while each test's own entry into the app's lifespan makes
  its pools, Redis client and caches anew.
- One data directory, and so one signing key, per session (``data_dir``).
- Each pytest-xdist worker has its own database names (``_PREFIX``) and its own Redis: an
  embedded one under ``.loyalty/test/<worker>``, or the configured server's next database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from litestar import Litestar

from api.app import create_app
from loyalty.core.db import Connection, init_connection, migrate, with_database
from loyalty.core.embedded import ServiceUrls, embedded_redis, service_urls
from loyalty.core.settings import Settings, load_settings
from tests.factories import Actors

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
# pytest-xdist names its workers gw0, gw1, ...; a run without it is worker 0.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_WORKER_NUMBER = int(_WORKER.removeprefix("gw") or 0)
_PREFIX = f"loyalty_test_{_WORKER}_{os.getpid()}"
_clone_numbers = itertools.count()
# Durability is worth nothing to a test database: the embedded test cluster (never the one
# `make run` serves) runs without it, which makes every commit and clone cheaper.
_NOT_DURABLE = ("fsync", "full_page_writes", "synchronous_commit")


database_url = with_database


def worker_redis_url(url: str, worker: int) -> str:
    """``url`` moved ``worker`` Redis databases on: each pytest-xdist worker flushes only its
    own. A unix-socket URL names its database in the query (``?db=``), a TCP one in the path."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(int(query.get("db", 0)) + worker)
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{int(parts.path.strip('/') or 0) + worker}"))


@pytest.fixture(scope="session")
def servers() -> Iterator[ServiceUrls]:
    configured_redis = os.environ.get("LOYALTY_TEST_REDIS_URL")
    with contextlib.ExitStack() as stack:
        urls = stack.enter_context(service_urls(
            os.environ.get("LOYALTY_TEST_DATABASE_URL") or None, None,
            ROOT / ".loyalty" / "test", need_redis=False))
        if configured_redis:
            redis_url = worker_redis_url(configured_redis, _WORKER_NUMBER)
        else:
            # An embedded Redis of the worker's own: one shared by workers that stop at once
            # is left running, each seeing the other still connected.
            redis_url = stack.enter_context(embedded_redis(ROOT / ".loyalty" / "test" / _WORKER))
            stack.callback(_disconnect_other_clients, redis_url)
        yield ServiceUrls(urls.database_url, redis_url)


def _disconnect_other_clients(redis_url: str) -> None:
    """Drop the Redis connections tests left open: the embedded Redis stops only when its last
    client leaves, and would otherwise outlive the session."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.client_kill_filter(_type="normal", skipme=True)
    finally:
        client.close()


@pytest.fixture(scope="session")
async def maintenance(servers: ServiceUrls) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the ``postgres`` database, for creating and dropping test databases."""
    conn = await asyncpg.connect(database_url(servers.database_url, "postgres"))
    if not os.environ.get("LOYALTY_TEST_DATABASE_URL"):
        # Ours alone: the embedded test cluster. A configured server is someone else's.
        for setting in _NOT_DURABLE:
            await conn.execute(f"alter system set {setting} = off")
        await conn.execute("select pg_reload_conf()")
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


async def clone_database(maintenance: asyncpg.Connection, template: str,
                         name: str | None = None) -> str:
    """A copy of ``template`` named ``name`` (or a new name). ``wal_log`` copies the few pages
    of a migrated schema through the WAL; ``file_copy`` would force a checkpoint of the whole
    cluster each time, slow while other tests have written much (docs/decisions/0002)."""
    name = name or f"{_PREFIX}_{next(_clone_numbers)}"
    await maintenance.execute(f'create database "{name}" template "{template}" strategy wal_log')
    # Commits need not wait for the disk on any server (a per-database setting, so nobody's
    # server is reconfigured).
    await maintenance.execute(f'alter database "{name}" set synchronous_commit = off')
    return name


class Clones:
    """Copies of the template made one ahead, while a test runs, on a connection of their own:
    the next test that commits finds its database made and only renames it."""

    def __init__(self, conn: asyncpg.Connection, template: str) -> None:
        self._conn = conn
        self._template = template
        self._spare = f"{_PREFIX}_spare"
        self._making: asyncio.Task[str] | None = None

    def _make_next(self) -> None:
        self._making = asyncio.create_task(clone_database(self._conn, self._template, self._spare))

    async def take(self, name: str) -> str:
        """A fresh copy of the template, named ``name``."""
        if self._making is None:
            self._make_next()
        assert self._making is not None
        await self._making
        await self._conn.execute(f'alter database "{self._spare}" rename to "{name}"')
        self._make_next()
        return name

    async def close(self) -> None:
        if self._making is not None:
            await self._making
        await self._conn.execute(f'drop database if exists "{self._spare}" with (force)')
        await self._conn.close()


@pytest.fixture(scope="session")
async def clones(template_db: str, servers: ServiceUrls) -> AsyncIterator[Clones]:
    made = Clones(await asyncpg.connect(database_url(servers.database_url, "postgres")),
                  template_db)
    yield made
    await made.close()


@pytest.fixture
async def fresh_database(
    request: pytest.FixtureRequest, maintenance: asyncpg.Connection, clones: Clones,
    servers: ServiceUrls,
) -> AsyncIterator[str]:
    """The URL of a database of this test's own, migrated, dropped afterwards.

    A test that takes ``settings`` gets a name that every such test of this worker gets in
    turn, so that the settings, and with them the app built from them, are the same from test
    to test (``app_for``). Any other test (schedulers, processes, the CLI) gets a name never
    used before, so that whatever it leaves running finds no database, rather than the next
    test's."""
    if "settings" in request.fixturenames:
        name = f"{_PREFIX}_app"
    else:
        name = f"{_PREFIX}_{next(_clone_numbers)}"
    await clones.take(name)
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
    opened: list[Connection] = [await asyncpg.connect(fresh_database) for _ in range(3)]
    for conn in opened:
        await init_connection(conn)
    yield opened
    for conn in opened:
        await conn.close()


@pytest.fixture
async def redis_url(servers: ServiceUrls) -> str:
    """This worker's Redis database, emptied first: Redis holds only what may be lost
    (docs/decisions/0004-readiness-without-redis.md)."""
    client = aioredis.from_url(servers.redis_url)
    try:
        await client.flushdb()
    except redis.ResponseError as exc:
        pytest.fail(f"{servers.redis_url}: {exc}; each pytest-xdist worker takes the next Redis"
                    f" database after LOYALTY_TEST_REDIS_URL's, so name a lower one")
    finally:
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
        # Webhooks are delivered where a test runs a worker (tests/loyalty/ops/test_delivery*).
        "webhooks_worker": "off",
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the session's apps, so one signing key is generated (the first
    app writes it) and every test's default settings are equal."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def settings(fresh_database: str, redis_url: str, data_dir: Path) -> Settings:
    return make_settings(fresh_database, redis_url, data_dir)


_apps: dict[bytes, Litestar] = {}


def app_for(settings: Settings) -> Litestar:
    """``create_app(settings)``, built once for equal settings. Building the routes is most of
    the cost of an API test's setup; everything a request changes lives in the services that
    each entry of the app's lifespan builds anew (api/app.py), so tests cannot see each
    other's state through a shared app."""
    key = msgspec.json.encode(settings)
    if key not in _apps:
        _apps[key] = create_app(settings)
    return _apps[key]


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return app_for(settings)


def asgi_transport(app: Litestar) -> httpx.ASGITransport:
    """httpx's transport straight into ``app``, from the client address the tests expect."""
    # httpx types an ASGI app's scope and messages as plain mutable mappings, litestar as
    # TypedDicts: the same protocol that neither type describes in the other's terms.
    return httpx.ASGITransport(app=app, client=("testclient", 50000))  # type: ignore[arg-type]


@asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``app`` running in the test's own event loop, lifespan included.

    Not litestar's AsyncTestClient: that one runs each request to completion on a separate
    thread while the caller's loop waits, so requests sent together never overlap, and the
    concurrency tests need them to.
    """
    transport = asgi_transport(app)
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


class Served(NamedTuple):
    client: httpx.AsyncClient
    actors: Actors


class AppWith(Protocol):
    def __call__(self, **overrides: object) -> AbstractAsyncContextManager[Served]: ...


@pytest.fixture
def app_with(fresh_database: str, redis_url: str, tmp_path: Path) -> AppWith:
    """For a test of a setting: an app of the test's own, built from ``make_settings`` with
    ``overrides`` on the test's database and a data directory of its own, served with its
    lifespan: ``async with app_with(rate_limit_per_minute=5) as (client, actors):``."""

    @asynccontextmanager
    async def served(**overrides: object) -> AsyncIterator[Served]:
        settings = make_settings(fresh_database, redis_url, tmp_path, **overrides)
        async with serve(create_app(settings)) as client:
            yield Served(client, Actors(client, settings))

    return served
