"""The read-through cache on a real Redis: computed once, kept, recomputed when asked or when
what is kept no longer decodes, and computed anyway when Redis is unreachable."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import redis.asyncio as aioredis

from loyalty.core.cache import cache_key, database_scope, read_through, refreshes_done


class Figures(msgspec.Struct):
    total: int


async def test_computed_once_then_read_until_refreshed(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    calls: list[int] = []

    async def compute() -> Figures:
        calls.append(1)
        return Figures(total=len(calls))

    key = cache_key("kpis", "2026-11-01", "2026-11-30")
    try:
        first = await read_through(redis, key, compute, Figures, ttl_seconds=60)
        again = await read_through(redis, key, compute, Figures, ttl_seconds=60)
        assert first.value == again.value == Figures(total=1)
        assert again.computed_at == first.computed_at
        assert 0 < await redis.ttl(key) <= 60
        fresh = await read_through(redis, key, compute, Figures, ttl_seconds=60, refresh=True)
        assert fresh.value == Figures(total=2)
        assert (await read_through(redis, key, compute, Figures, ttl_seconds=60)).value.total == 2
        assert len(calls) == 2
    finally:
        await redis.aclose()


async def test_keys_differ_by_every_part() -> None:
    assert cache_key("kpis", 1, 2) != cache_key("kpis", 1, 3)
    assert cache_key("kpis", "1", "2") == cache_key("kpis", 1, 2)


async def test_a_value_of_another_shape_is_computed_again(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    key = cache_key("shape")
    try:
        await redis.set(key, b'{"value": {"other": 1}, "computed_at": "2026-01-01T00:00:00Z"}')

        async def compute() -> Figures:
            return Figures(total=7)

        assert (await read_through(redis, key, compute, Figures, ttl_seconds=5)).value.total == 7
    finally:
        await redis.aclose()


async def test_redis_unreachable_means_computing_every_time() -> None:
    redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    calls: list[int] = []

    async def compute() -> Figures:
        calls.append(1)
        return Figures(total=len(calls))

    try:
        for expected in (1, 2):
            found = await read_through(redis, cache_key("down"), compute, Figures,
                                       ttl_seconds=5)
            assert found.value.total == expected
    finally:
        await redis.aclose()


async def test_a_stale_value_is_answered_and_computed_again_behind(redis_url: str) -> None:
    """Older than fresh_seconds: the kept figures come back at once, and the next read has the
    ones computed in the background."""
    redis = aioredis.from_url(redis_url)
    calls: list[int] = []

    async def compute() -> Figures:
        calls.append(1)
        return Figures(total=len(calls))

    key = cache_key("stale")
    try:
        first = await read_through(redis, key, compute, Figures, ttl_seconds=60,
                                   fresh_seconds=0)
        assert first.value.total == 1
        stale = await read_through(redis, key, compute, Figures, ttl_seconds=60,
                                   fresh_seconds=0)
        assert stale.value.total == 1  # answered without waiting
        await refreshes_done()
        assert len(calls) == 2
        kept = await read_through(redis, key, compute, Figures, ttl_seconds=60,
                                  fresh_seconds=3600)
        assert kept.value.total == 2
        assert kept.computed_at > first.computed_at
    finally:
        await redis.aclose()


async def test_one_refresh_at_a_time(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    started = asyncio.Event()
    release = asyncio.Event()
    calls: list[int] = []

    async def slow() -> Figures:
        calls.append(1)
        started.set()
        await release.wait()
        return Figures(total=len(calls))

    key = cache_key("one at a time")
    try:
        await redis.set(key, msgspec.json.encode(
            {"value": {"total": 0}, "computed_at": "2026-01-01T00:00:00Z"}))
        for _ in range(5):
            found = await read_through(redis, key, slow, Figures, ttl_seconds=60,
                                       fresh_seconds=60)
            assert found.value.total == 0
        await started.wait()
        release.set()
        await refreshes_done()
        assert len(calls) == 1
    finally:
        await redis.aclose()


async def test_two_databases_have_scopes_of_their_own(
    shared_database: str, fresh_database: str,
) -> None:
    """Figures of two databases sharing one Redis never answer for each other."""
    first = await asyncpg.create_pool(shared_database, min_size=1, max_size=1)
    second = await asyncpg.create_pool(fresh_database, min_size=1, max_size=1)
    try:
        one, other = await database_scope(first), await database_scope(second)
        assert one != other
        assert await database_scope(first) == one
        assert cache_key(one, "figures") != cache_key(other, "figures")
    finally:
        await first.close()
        await second.close()
