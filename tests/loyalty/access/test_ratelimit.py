"""The GCRA limiter against a real Redis: exact counts, and no failure when Redis is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from loyalty.access.ratelimit import RateLimiter


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def limiter(redis_client: aioredis.Redis) -> RateLimiter:
    """A limiter on this worker's Redis, emptied first."""
    return RateLimiter(redis_client)


async def test_allows_exactly_the_limit_then_says_how_long_to_wait(limiter: RateLimiter) -> None:
    waits = [await limiter.hit("k", limit=3, period_seconds=60) for _ in range(5)]
    assert waits[:3] == [0, 0, 0]
    assert all(1 <= w <= 20 for w in waits[3:])
    assert await limiter.hit("other", limit=3, period_seconds=60) == 0


async def test_concurrent_hits_never_exceed_the_limit(redis_url: str) -> None:
    import asyncio

    client = aioredis.from_url(redis_url, max_connections=50)
    limiter = RateLimiter(client)
    waits = await asyncio.gather(*(limiter.hit("burst", limit=10, period_seconds=60)
                                   for _ in range(40)))
    assert sum(1 for w in waits if w == 0) == 10
    await client.aclose()


async def test_peek_does_not_count(limiter: RateLimiter) -> None:
    for _ in range(5):
        assert await limiter.peek("p", limit=1, period_seconds=60) == 0
    assert await limiter.hit("p", limit=1, period_seconds=60) == 0
    assert await limiter.peek("p", limit=1, period_seconds=60) > 0


async def test_unreachable_redis_lets_requests_through() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(client)
    assert await limiter.hit("k", limit=1, period_seconds=60) == 0
    assert await limiter.hit("k", limit=1, period_seconds=60) == 0
    await client.aclose()


async def test_after_a_failure_redis_is_left_alone_for_a_while(
    redis_client: aioredis.Redis, limiter: RateLimiter
) -> None:
    # A value the script cannot read makes the call fail inside Redis.
    await redis_client.set("rl:broken", "not a number")
    assert await limiter.hit("broken", limit=1, period_seconds=60) == 0
    await redis_client.delete("rl:broken")
    for _ in range(3):
        assert await limiter.hit("fine", limit=1, period_seconds=60) == 0
    # Not one of those calls reached Redis: nothing was counted.
    assert await redis_client.exists("rl:fine") == 0


async def test_a_limit_far_above_one_per_millisecond_still_counts(
    redis_client: aioredis.Redis, limiter: RateLimiter
) -> None:
    for _ in range(50):
        assert await limiter.hit("fast", limit=1_000_000_000, period_seconds=60) == 0
    # A failing script would make the limiter leave Redis alone for a while, allowing
    # everything: a limit of one a minute, hit twice, must still refuse the second. (Whether
    # the fast key still exists proves nothing: its lifetime is a millisecond.)
    assert await limiter.hit("slow", limit=1, period_seconds=60) == 0
    assert await limiter.hit("slow", limit=1, period_seconds=60) > 0


async def test_requests_that_arrive_together_are_checked_in_one_call_in_order(
    redis_client: aioredis.Redis, limiter: RateLimiter
) -> None:
    """Side by side checks go to Redis as one script call, counted as if one by one: the same
    key twice counts twice, and each gets its own answer."""
    import asyncio

    await limiter.hit("warm", limit=1, period_seconds=60)  # the script loaded, from now EVALSHA
    calls_before = (await redis_client.info("commandstats")).get("cmdstat_evalsha", {})
    waits = await asyncio.gather(
        limiter.hit("a", limit=2, period_seconds=60),
        limiter.hit("b", limit=1, period_seconds=60),
        limiter.hit("a", limit=2, period_seconds=60),
        limiter.hit("a", limit=2, period_seconds=60),
        limiter.peek("b", limit=1, period_seconds=60),
        limiter.hit("c", limit=5, period_seconds=60),
    )
    assert waits[0] == waits[1] == waits[2] == waits[5] == 0
    assert waits[3] > 0
    assert waits[4] > 0
    calls_after = (await redis_client.info("commandstats")).get("cmdstat_evalsha", {})
    assert calls_after["calls"] - calls_before.get("calls", 0) == 1
    assert await redis_client.exists("rl:a", "rl:b", "rl:c") == 3
