"""The GCRA limiter against a real Redis: exact counts, and no failure when Redis is gone."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from loyalty.access.ratelimit import RateLimiter, allowance_for
from loyalty.access.sign_in import limit_address
from loyalty.core.settings import Settings


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


# -- an allowance: several tokens taken at once, spent in the process ---------------------------

# 400 an hour with an allowance of 8: the smallest limit that takes one (50 × 8), and a token
# every 9 s, so that no burst of these tests sees one counted back (GCRA counts from the burst's
# first request).
WIDE = dict(limit=400, period_seconds=3600, allowance=8)


def count_calls(limiter: RateLimiter) -> list[int]:
    """Counts the limiter's script calls, each one call to Redis: ``calls[0]``."""
    calls = [0]
    script = limiter._script

    async def counted(**kwargs: Any) -> Any:
        calls[0] += 1
        return await script(**kwargs)

    limiter._script = counted  # type: ignore[assignment]
    return calls


async def admitted(limiter: RateLimiter, key: str, requests: int, **window: Any) -> int:
    return [await limiter.hit(key, **window) for _ in range(requests)].count(0)


def test_an_allowance_is_taken_only_for_a_limit_fifty_times_its_size() -> None:
    assert allowance_for(8, 400) == 8
    assert allowance_for(8, 399) == 1
    assert allowance_for(8, 1_000_000) == 8
    assert allowance_for(1, 1_000_000) == 1


@pytest.mark.parametrize("requests", [1, 7, 8, 9, 20])
async def test_an_allowance_of_n_answers_n_requests_with_one_call(
    limiter: RateLimiter, requests: int
) -> None:
    calls = count_calls(limiter)
    assert await admitted(limiter, "one", requests, **WIDE) == requests
    assert calls[0] == math.ceil(requests / 8)


async def test_tokens_one_process_holds_are_spent_in_redis_for_every_process(
    redis_client: aioredis.Redis,
) -> None:
    """Every request a process admits from its allowance was counted in Redis when taken:
    another process finds the key that much fuller, and the holder admits no more than it took."""
    holder, other = RateLimiter(redis_client), RateLimiter(redis_client)
    holder_calls = count_calls(holder)
    assert await holder.hit("shared", **WIDE) == 0  # took 8, holds 7
    assert await admitted(other, "shared", 400, limit=400, period_seconds=3600) == 392
    assert await other.peek("shared", limit=400, period_seconds=3600) > 0
    # Held tokens: the holder's next request would pass; peeking takes none of them.
    assert await holder.peek("shared", limit=400, period_seconds=3600) == 0
    assert await admitted(holder, "shared", 7, **WIDE) == 7
    assert holder_calls[0] == 1
    assert await holder.hit("shared", **WIDE) > 0
    assert await holder.peek("shared", limit=400, period_seconds=3600) > 0


async def test_two_processes_alternating_admit_exactly_the_limit(
    redis_client: aioredis.Redis,
) -> None:
    """A burst of three times the limit, alternating between two processes: exactly the limit
    passes. 405 = 25 × 16 + 5: the first process takes the last 5 tokens and spends them while
    the second is refused."""
    first, second = RateLimiter(redis_client), RateLimiter(redis_client)
    window = dict(WIDE, limit=405)
    passed = {first: 0, second: 0}
    for i in range(3 * 405):
        process = first if i % 2 == 0 else second
        passed[process] += await process.hit("burst", **window) == 0
    assert (passed[first], passed[second]) == (25 * 8 + 5, 25 * 8)


async def test_tokens_held_by_a_process_that_gets_no_more_requests_are_refused_to_others(
    redis_client: aioredis.Redis,
) -> None:
    """The cost of an allowance: tokens the holder never uses are lost to the others until they
    expire, at most allowance - 1 per other process (4 here: the holder took the last 5)."""
    first, second = RateLimiter(redis_client), RateLimiter(redis_client)
    window = dict(WIDE, limit=405)
    passed = 0
    for i in range(2 * 25 * 8 + 1):  # the first process's request takes the last 5
        passed += await (first if i % 2 == 0 else second).hit("left", **window) == 0
    passed += await admitted(second, "left", 405, **window)
    assert passed == 405 - 4


async def test_a_limit_below_fifty_allowances_counts_exactly_as_one_by_one(
    limiter: RateLimiter,
) -> None:
    """100 < 50 × 8: the same requests admitted, the same waits, one call each, as with no
    allowance. Alternated, so that both keys see the same clock; a token every 20 s, so that
    the waits stay whole seconds apart from the burst's few hundred milliseconds."""
    calls = count_calls(limiter)
    window = dict(limit=100, period_seconds=2000)
    with_allowance, without = [], []
    for _ in range(2 * 100):
        with_allowance.append(await limiter.hit("asked", **window, allowance=8))
        without.append(await limiter.hit("plain", **window))
    assert with_allowance == without
    assert with_allowance.count(0) == 100
    assert calls[0] == 4 * 100


async def test_requests_of_one_round_share_the_allowance_one_of_them_took(
    redis_client: aioredis.Redis, limiter: RateLimiter
) -> None:
    """Five requests arrive together on a key with room for 3: the first takes all 3, and the
    next two, refused by Redis, are answered from them; exactly 3 pass, as one by one."""
    await limiter.hit("warm", limit=1, period_seconds=60)  # the script loaded
    calls = count_calls(limiter)
    seconds, micros = await redis_client.time()
    now_ms = seconds * 1000 + micros // 1000
    # Room for 3 more: the TAT is 3 tokens (27 s) short of the full hour.
    await redis_client.set("rl:round", now_ms + 3_600_000 - 27_000, px=3_600_000)
    waits = await asyncio.gather(*(limiter.hit("round", **WIDE) for _ in range(5)))
    assert waits == [0, 0, 0, 9, 9]
    assert calls[0] == 1


async def test_held_tokens_are_not_used_once_their_time_has_passed(limiter: RateLimiter) -> None:
    """100 per 30 s with an allowance of 2: the 2 tokens stand for 600 ms; after that the one
    left is dropped and the next request asks Redis."""
    window = dict(limit=100, period_seconds=30, allowance=2)
    await limiter.hit("warm", limit=1, period_seconds=60)
    calls = count_calls(limiter)
    assert await admitted(limiter, "expiring", 3, **window) == 3
    assert calls[0] == 2  # the third took 2 and holds 1
    await asyncio.sleep(0.7)
    assert await limiter.hit("expiring", **window) == 0
    assert calls[0] == 3


async def test_keys_past_the_cap_drop_what_they_hold(limiter: RateLimiter) -> None:
    """Holding is bounded: past HELD_KEYS_MAX keys, tokens are dropped (lost, never spent), and
    their keys ask Redis again."""
    limiter.HELD_KEYS_MAX = 4
    calls = count_calls(limiter)
    for key in "abcde":
        assert await limiter.hit(key, **WIDE) == 0
    assert calls[0] == 5
    # a-d were dropped when e took its tokens; e still holds 7.
    assert await limiter.hit("e", **WIDE) == 0
    assert calls[0] == 5
    assert await limiter.hit("a", **WIDE) == 0
    assert calls[0] == 6


async def test_unreachable_redis_lets_requests_through_with_an_allowance() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(client)
    for _ in range(3):
        assert await limiter.hit("k", **WIDE) == 0
    await client.aclose()


async def test_a_failed_call_holds_no_tokens(
    redis_client: aioredis.Redis, limiter: RateLimiter
) -> None:
    """A call that fails lets its request through, as without an allowance, and holds nothing:
    once Redis is asked again, the key's requests are counted there."""
    limiter.RETRY_AFTER_FAILURE_SECONDS = 0.0
    await redis_client.set("rl:broken", "not a number")
    assert await limiter.hit("broken", **WIDE) == 0
    await redis_client.delete("rl:broken")
    calls = count_calls(limiter)
    assert await limiter.hit("broken", **WIDE) == 0
    assert calls[0] == 1
    assert await redis_client.exists("rl:broken") == 1


async def test_a_high_limits_tokens_are_held_for_the_shortest_hold(limiter: RateLimiter) -> None:
    """A billion a minute: 8 tokens stand for half a microsecond, but are held 100 ms, long
    enough for the requests that follow at once."""
    window = dict(limit=1_000_000_000, period_seconds=60, allowance=8)
    await limiter.hit("warm", limit=1, period_seconds=60)
    calls = count_calls(limiter)
    assert await admitted(limiter, "fast", 16, **window) == 16
    assert calls[0] == 2


async def test_sign_in_attempts_are_counted_one_by_one_however_high_their_limit(
    limiter: RateLimiter,
) -> None:
    """Only the per-principal limit asks for an allowance: sign-in attempts from an address
    each call Redis, even under a limit wide enough to take one."""
    settings = Settings(login_rate_limit_per_minute=1_000_000, rate_limit_allowance=8)
    calls = count_calls(limiter)
    for _ in range(5):
        await limit_address(limiter, settings, "192.0.2.1")
    assert calls[0] == 5
