"""Rate limits counted atomically in Redis (GCRA: one key, one script call per check).

Redis only holds counters that may be lost: if it is unreachable the request is allowed
and a warning logged, so the API degrades instead of failing
(docs/decisions/0004-readiness-without-redis.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# The theoretical arrival time (TAT) of the next request is stored per key. A request is
# allowed while TAT - period <= now, i.e. at most ``limit`` requests in any ``period``.
# ``cost`` 0 only asks whether the next request would pass. One call checks every request of
# a batch, in order (the same key twice counts twice), and answers each one's wait in ms.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waits = {}
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[3 * i - 2])
    local period = tonumber(ARGV[3 * i - 1])
    local cost = tonumber(ARGV[3 * i])
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local interval = period / limit
    local next_tat = tat + interval * math.max(cost, 1)
    local allow_at = next_tat - period
    if allow_at > now then
        waits[i] = allow_at - now
    else
        waits[i] = 0
        if cost > 0 then
            -- At least 1 ms: with a very high limit the interval is below a millisecond and
            -- next_tat - now can round to 0, which SET refuses.
            redis.call('SET', key, next_tat, 'PX', math.max(1, math.ceil(next_tat - now)))
        end
    end
end
return waits
"""


class RateLimiter:
    """Checks requests against their limits in Redis, one script call per batch.

    The checks asked for while the event loop runs one round (every request that arrived
    together) go to Redis in one call when the round ends: still global and atomic in Redis,
    without a round trip and its client work (about 140 µs of CPU in redis-py) per request
    (docs/performance.md). A request alone waits for no one; it is sent at once, in a batch
    of one."""

    # After a failure Redis is left alone this long: an unreachable host would otherwise cost
    # every request a connect timeout.
    RETRY_AFTER_FAILURE_SECONDS = 5.0

    def __init__(self, client: aioredis.Redis, *, prefix: str = "rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_GCRA)
        self._warned_at = -math.inf
        self._skip_until = -math.inf
        self._batch: list[tuple[str, int, int, int, asyncio.Future[int]]] = []
        # The calls under way, held so that they are not collected before they end.
        self._checking: set[asyncio.Future[None]] = set()

    async def hit(self, key: str, *, limit: int, period_seconds: int, cost: int = 1) -> int:
        """Count a request under ``key``; 0 when allowed, else seconds until it would be."""
        if time.monotonic() < self._skip_until:
            return 0
        loop = asyncio.get_running_loop()
        asked: asyncio.Future[int] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._send)
        self._batch.append((self._prefix + key, limit, period_seconds * 1000, cost, asked))
        wait_ms = await asked
        return math.ceil(wait_ms / 1000) if wait_ms > 0 else 0

    async def peek(self, key: str, *, limit: int, period_seconds: int) -> int:
        """Seconds until a request under ``key`` would pass, without counting one."""
        return await self.hit(key, limit=limit, period_seconds=period_seconds, cost=0)

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._check(batch))
        self._checking.add(task)
        task.add_done_callback(self._checking.discard)

    async def _check(self, batch: list[tuple[str, int, int, int, asyncio.Future[int]]]) -> None:
        try:
            waits = await self._script(
                keys=[key for key, *_ in batch],
                args=[value for _, limit, period, cost, _ in batch
                      for value in (limit, period, cost)])
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            self._skip_until = now + self.RETRY_AFTER_FAILURE_SECONDS
            # Once a minute, not once a request: an outage must not flood the log.
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("rate limits not enforced for a while, Redis failed: %s", exc)
            waits = [0] * len(batch)
        except BaseException as exc:
            for *_, asked in batch:
                if not asked.done():
                    asked.set_exception(exc)
            raise
        for (*_, asked), wait in zip(batch, waits, strict=True):
            if not asked.done():
                asked.set_result(int(wait))
