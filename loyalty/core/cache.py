"""Figures that take long to compute, kept in Redis for a while: a read-through cache keyed by
what they were computed from. Only what may be recomputed at any time goes here (Redis may lose
it), each entry says when it was computed, and Redis being down only means computing again
(as the rate limits fail open, docs/decisions/0004-readiness-without-redis.md).

An entry older than ``fresh_seconds`` is still answered at once, and computed again in the
background (one process at a time, under a short Redis lock), so a page read often never waits
for its figures after the first time; what it shows is at most a few minutes old and says as
of when."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from loyalty.core.db import Pool

log = logging.getLogger(__name__)
T = TypeVar("T")
_PREFIX = "cache:"
# Background refreshes under way, held so the event loop does not drop them.
_REFRESHING: set[asyncio.Task[None]] = set()
# Each pool's scope, by the pool's identity (asyncpg's pools take no weak references); a
# process has one pool, tests a few.
_SCOPES: dict[int, tuple[Pool, str]] = {}
_SCOPES_KEPT = 16
# How long one process may hold the right to refresh an entry.
_LOCK_SECONDS = 120


class Cached(msgspec.Struct, Generic[T]):
    """A value and the moment it was computed (what a page shows as "as of")."""

    value: T
    computed_at: dt.datetime


async def database_scope(pool: Pool) -> str:
    """Which database a pool reads (its server and name), so that figures of two databases
    sharing one Redis (two programmes, or tests) never answer for each other. Asked once per
    pool."""
    kept = _SCOPES.get(id(pool))
    if kept is not None and kept[0] is pool:
        return kept[1]
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "select inet_server_addr()::text as host, inet_server_port() as port,"
            " current_database() as name,"
            " (select oid from pg_database where datname = current_database()) as oid")
    assert row is not None
    # The oid too: a database dropped and made again under its name is another database.
    scope = f"{row['host']}:{row['port']}/{row['name']}#{row['oid']}"
    while len(_SCOPES) >= _SCOPES_KEPT:
        del _SCOPES[next(iter(_SCOPES))]
    _SCOPES[id(pool)] = (pool, scope)
    return scope


def cache_key(*parts: object) -> str:
    """A key naming everything the value depends on (each part's text, in order): the
    database's scope first."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).hexdigest()
    return _PREFIX + digest[:40]


async def _kept(redis: aioredis.Redis, key: str, type_: type[T]) -> Cached[T] | None:
    try:
        raw = await redis.get(key)
    except RedisError:
        log.warning("cache unreachable: computing %s", key)
        return None
    if raw is None:
        return None
    try:
        found: Cached[T] = msgspec.json.decode(raw, type=Cached[type_])  # type: ignore[valid-type]
    except msgspec.ValidationError:
        return None  # written by another version of the code: computed again
    return found


def _age(cached: Cached[T]) -> float:
    return (dt.datetime.now(dt.UTC) - cached.computed_at).total_seconds()


async def keep(redis: aioredis.Redis, key: str, value: Cached[T], *, ttl_seconds: int) -> None:
    """Keeps ``value`` under ``key`` for ``ttl_seconds``, where ``read_through`` finds it
    (figures computed ahead of their first reader). RedisError when Redis cannot."""
    await redis.set(key, msgspec.json.encode(value), ex=ttl_seconds)


async def _compute_and_keep(redis: aioredis.Redis, key: str,
                            compute: Callable[[], Awaitable[T]], ttl_seconds: int) -> Cached[T]:
    fresh = Cached(value=await compute(), computed_at=dt.datetime.now(dt.UTC))
    try:
        await keep(redis, key, fresh, ttl_seconds=ttl_seconds)
    except RedisError:
        log.warning("cache unreachable: %s not kept", key)
    return fresh


async def _refresh(redis: aioredis.Redis, key: str, compute: Callable[[], Awaitable[T]],
                   type_: type[T], ttl_seconds: int, fresh_seconds: int) -> None:
    lock = key + ":refreshing"
    try:
        if not await redis.set(lock, b"1", nx=True, ex=_LOCK_SECONDS):
            return  # another process is at it
        try:
            kept = await _kept(redis, key, type_)
            if kept is not None and _age(kept) <= fresh_seconds:
                return  # refreshed by another while this one waited
            await _compute_and_keep(redis, key, compute, ttl_seconds)
        finally:
            await redis.delete(lock)
    except Exception:
        log.exception("refreshing %s failed; the kept figures stay until it works", key)


async def read_through(redis: aioredis.Redis, key: str, compute: Callable[[], Awaitable[T]],
                       type_: type[T], *, ttl_seconds: int, fresh_seconds: int | None = None,
                       refresh: bool = False) -> Cached[T]:
    """The value kept under ``key`` when there is one (and ``refresh`` is not asked), else
    ``compute()``'s, kept for ``ttl_seconds``. With ``fresh_seconds``, a kept value older than
    that is answered and computed again in the background: ``compute`` must then not use a
    connection its caller holds, since it runs after the caller has answered."""
    found = None if refresh else await _kept(redis, key, type_)
    if found is None:
        return await _compute_and_keep(redis, key, compute, ttl_seconds)
    if fresh_seconds is not None and _age(found) > fresh_seconds:
        task = asyncio.create_task(
            _refresh(redis, key, compute, type_, ttl_seconds, fresh_seconds))
        _REFRESHING.add(task)
        task.add_done_callback(_REFRESHING.discard)
    return found


async def refreshes_done() -> None:
    """Waits for the background refreshes under way (tests; a graceful shutdown)."""
    while _REFRESHING:
        await asyncio.gather(*list(_REFRESHING), return_exceptions=True)
