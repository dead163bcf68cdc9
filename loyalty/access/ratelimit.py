"""Rate limits counted atomically in Redis (GCRA: one key, one script call per check).

Redis only holds counters that may be lost: if it is unreachable the request is allowed
and a warning logged, so the API degrades instead of failing
(docs/decisions/0004-readiness-without-redis.md).
"""

from __future__ import annotations

import logging
import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# The theoretical arrival time (TAT) of the next request is stored per key. A request is
# allowed while TAT - period <= now, i.e. at most ``limit`` requests in any ``period``.
# ``cost`` 0 only asks whether the next request would pass.
_GCRA = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local interval = period / limit
local next_tat = tat + interval * math.max(cost, 1)
local allow_at = next_tat - period
if allow_at > now then
    return allow_at - now
end
if cost > 0 then
    -- At least 1 ms: with a very high limit the interval is below a millisecond and
    -- next_tat - now can round to 0, which SET refuses.
    redis.call('SET', KEYS[1], next_tat, 'PX', math.max(1, math.ceil(next_tat - now)))
end
return 0
"""


class RateLimiter:
    # After a failure Redis is left alone this long: an unreachable host would otherwise cost
    # every request a connect timeout.
    RETRY_AFTER_FAILURE_SECONDS = 5.0

    def __init__(self, client: aioredis.Redis, *, prefix: str = "rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_GCRA)
        self._warned_at = -math.inf
        self._skip_until = -math.inf

    async def hit(self, key: str, *, limit: int, period_seconds: int, cost: int = 1) -> int:
        """Count a request under ``key``; 0 when allowed, else seconds until it would be."""
        if time.monotonic() < self._skip_until:
            return 0
        try:
            wait_ms = await self._script(
                keys=[self._prefix + key], args=[limit, period_seconds * 1000, cost]
            )
        except RedisError as exc:
            now = time.monotonic()
            self._skip_until = now + self.RETRY_AFTER_FAILURE_SECONDS
            # Once a minute, not once a request: an outage must not flood the log.
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("rate limits not enforced for a while, Redis failed: %s", exc)
            return 0
        return math.ceil(int(wait_ms) / 1000) if int(wait_ms) > 0 else 0

    async def peek(self, key: str, *, limit: int, period_seconds: int) -> int:
        """Seconds until a request under ``key`` would pass, without counting one."""
        return await self.hit(key, limit=limit, period_seconds=period_seconds, cost=0)
