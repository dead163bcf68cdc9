"""The GCRA limiter against a real Redis: exact counts, and no failure when Redis is gone."""

from __future__ import annotations

import redis.asyncio as aioredis

from loyalty.access.ratelimit import RateLimiter


async def test_allows_exactly_the_limit_then_says_how_long_to_wait(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    waits = [await limiter.hit("k", limit=3, period_seconds=60) for _ in range(5)]
    assert waits[:3] == [0, 0, 0]
    assert all(1 <= w <= 20 for w in waits[3:])
    assert await limiter.hit("other", limit=3, period_seconds=60) == 0
    await client.aclose()


async def test_concurrent_hits_never_exceed_the_limit(redis_url: str) -> None:
    import asyncio

    client = aioredis.from_url(redis_url, max_connections=50)
    limiter = RateLimiter(client)
    waits = await asyncio.gather(*(limiter.hit("burst", limit=10, period_seconds=60)
                                   for _ in range(40)))
    assert sum(1 for w in waits if w == 0) == 10
    await client.aclose()


async def test_peek_does_not_count(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    for _ in range(5):
        assert await limiter.peek("p", limit=1, period_seconds=60) == 0
    assert await limiter.hit("p", limit=1, period_seconds=60) == 0
    assert await limiter.peek("p", limit=1, period_seconds=60) > 0
    await client.aclose()


async def test_unreachable_redis_lets_requests_through() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(client)
    assert await limiter.hit("k", limit=1, period_seconds=60) == 0
    assert await limiter.hit("k", limit=1, period_seconds=60) == 0
    await client.aclose()



async def test_after_a_failure_redis_is_left_alone_for_a_while(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    # A value the script cannot read makes the call fail inside Redis.
    await client.set("rl:broken", "not a number")
    assert await limiter.hit("broken", limit=1, period_seconds=60) == 0
    await client.delete("rl:broken")
    for _ in range(3):
        assert await limiter.hit("fine", limit=1, period_seconds=60) == 0
    # Not one of those calls reached Redis: nothing was counted.
    assert await client.exists("rl:fine") == 0
    await client.aclose()


async def test_a_limit_far_above_one_per_millisecond_still_counts(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    for _ in range(50):
        assert await limiter.hit("fast", limit=1_000_000_000, period_seconds=60) == 0
    # Each hit was stored (a failing script would leave no key and skip Redis for a while).
    assert await client.exists("rl:fast") == 1
    await client.aclose()
