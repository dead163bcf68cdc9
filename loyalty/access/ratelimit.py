"""Rate limits counted atomically in Redis (GCRA: one key, one script call per check).

Redis only holds counters that may be lost: if it is unreachable the request is allowed
and a warning logged, so the API degrades instead of failing
(docs/decisions/0004-readiness-without-redis.md). A check may take an allowance of several
tokens at once and answer the next requests under its key from them in this process
(docs/decisions/0020-rate-limit-allowance.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# The theoretical arrival time (TAT) of the next request is stored per key. A request is
# allowed while TAT - period <= now, i.e. at most ``limit`` requests in any ``period``.
# ``cost`` 0 only asks whether the next request would pass. A request that passes takes up to
# ``want`` tokens (at least its cost) while the key has room for them, the rest of an
# allowance. One call checks every request of a batch, in order (the same key twice counts
# twice), and answers each one's wait in ms and the tokens it took.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local answers = {}
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[4 * i - 3])
    local period = tonumber(ARGV[4 * i - 2])
    local cost = tonumber(ARGV[4 * i - 1])
    local want = tonumber(ARGV[4 * i])
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local interval = period / limit
    local next_tat = tat + interval * math.max(cost, 1)
    local allow_at = next_tat - period
    if allow_at > now then
        answers[2 * i - 1] = allow_at - now
        answers[2 * i] = 0
    else
        local more = 0
        if want > cost then
            more = math.min(want - cost, math.floor((now - allow_at) / interval))
            -- The division may round up: never past the room one by one would find.
            if more > 0 and allow_at + interval * more > now then more = more - 1 end
            next_tat = next_tat + interval * more
        end
        answers[2 * i - 1] = 0
        answers[2 * i] = cost + more
        if cost > 0 then
            -- At least 1 ms: with a very high limit the interval is below a millisecond and
            -- next_tat - now can round to 0, which SET refuses.
            redis.call('SET', key, next_tat, 'PX', math.max(1, math.ceil(next_tat - now)))
        end
    end
end
return answers
"""

# An allowance is taken only for a limit at least this many times its size: a process never
# holds more than a fiftieth of a key's limit, and the low limits (sign-in, lookups, codes)
# are counted one by one, exactly as without an allowance.
ALLOWANCE_SHARE = 50


def allowance_for(allowance: int, limit: int) -> int:
    """The tokens a check of ``limit`` may take at once: ``allowance`` when the limit is at
    least ``ALLOWANCE_SHARE`` times it, else 1 (one by one)."""
    return allowance if limit >= ALLOWANCE_SHARE * allowance else 1


class _Check(NamedTuple):
    key: str
    limit: int
    period_ms: int
    cost: int
    want: int
    asked: asyncio.Future[int]


class RateLimiter:
    """Checks requests against their limits in Redis, one script call per batch.

    The checks asked for while the event loop runs one round (every request that arrived
    together) go to Redis in one call when the round ends: still global and atomic in Redis,
    without a round trip and its client work (about 140 µs of CPU in redis-py) per request
    (docs/performance.md). A request alone waits for no one; it is sent at once, in a batch
    of one.

    A check with an ``allowance`` above 1 may take that many tokens from Redis at once; the
    ones it did not use answer the next requests under its key here, without Redis, until
    used or until the time they stand for at the key's rate has passed
    (docs/decisions/0020-rate-limit-allowance.md)."""

    # After a failure Redis is left alone this long: an unreachable host would otherwise cost
    # every request a connect timeout.
    RETRY_AFTER_FAILURE_SECONDS = 5.0
    # The shortest time tokens are held: enough for a client's requests in quick succession
    # (an app's first calls, a till's scan and sale) to share them. Longer than the time they
    # stand for only for a limit of more than ``allowance`` per 100 ms (4,800 a minute at 8),
    # where the allowance - 1 tokens a process may then spend after Redis counted them back
    # are fewer than the limit grants in those 100 ms anyway.
    MIN_HOLD_SECONDS = 0.1
    # Past this many keys holding tokens the expired ones are dropped, and all of them if
    # most are not: dropping tokens only loses them, it never admits a request.
    HELD_KEYS_MAX = 4096

    def __init__(self, client: aioredis.Redis, *, prefix: str = "rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_GCRA)
        self._warned_at = -math.inf
        self._skip_until = -math.inf
        self._batch: list[_Check] = []
        # The calls under way, held so that they are not collected before they end.
        self._checking: set[asyncio.Future[None]] = set()
        # Per key, the tokens taken from Redis and not used yet, and the monotonic time they
        # are good until.
        self._held: dict[str, tuple[int, float]] = {}
        # Keys with an allowance asked for and not answered yet: one at a time, so that a key
        # never holds more than one allowance's tokens.
        self._asking: set[str] = set()

    async def hit(self, key: str, *, limit: int, period_seconds: int, cost: int = 1,
                  allowance: int = 1) -> int:
        """Count a request under ``key``; 0 when allowed, else seconds until it would be.
        ``allowance``: how many tokens one call to Redis may take for later requests under
        ``key`` (see ``allowance_for``); 1 counts each request in Redis."""
        now = time.monotonic()
        if now < self._skip_until:
            return 0
        key = self._prefix + key
        if cost == 1 and self._held and self._use_held(key, now):
            return 0
        want = cost
        if cost == 1 and allowance > 1 and key not in self._asking:
            want = allowance_for(allowance, limit)
            if want > 1:
                self._asking.add(key)
        loop = asyncio.get_running_loop()
        asked: asyncio.Future[int] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._send)
        self._batch.append(_Check(key, limit, period_seconds * 1000, cost, want, asked))
        wait_ms = await asked
        return math.ceil(wait_ms / 1000) if wait_ms > 0 else 0

    async def peek(self, key: str, *, limit: int, period_seconds: int) -> int:
        """Seconds until a request under ``key`` would pass, without counting one: 0 while
        this process holds a token for it."""
        held = self._held.get(self._prefix + key)
        if held is not None and time.monotonic() < held[1]:
            return 0
        return await self.hit(key, limit=limit, period_seconds=period_seconds, cost=0)

    async def forget(self, key: str) -> None:
        """What was counted under ``key`` is forgotten: its next request starts a fresh
        window (an account's wrong passwords, once its owner has proved themselves another
        way). Redis unreachable: nothing is forgotten, and the caller is not failed for it."""
        key = self._prefix + key
        self._held.pop(key, None)
        try:
            await self._client.delete(key)
        except (RedisError, OSError) as exc:
            log.warning("a rate-limit count was not cleared, Redis failed: %s", exc)

    def _use_held(self, key: str, now: float) -> bool:
        """Takes one of the tokens held for ``key``, if one is still good."""
        held = self._held.get(key)
        if held is None:
            return False
        tokens, good_until = held
        if now >= good_until:
            del self._held[key]
            return False
        if tokens > 1:
            self._held[key] = (tokens - 1, good_until)
        else:
            del self._held[key]
        return True

    def _hold(self, key: str, tokens: int, good_until: float) -> None:
        if len(self._held) >= self.HELD_KEYS_MAX and key not in self._held:
            now = time.monotonic()
            self._held = {k: v for k, v in self._held.items() if v[1] > now}
            if len(self._held) >= self.HELD_KEYS_MAX // 2:
                self._held = {}
        # Replaces what the key held: an allowance is asked for only when nothing good is held
        # for the key, and one at a time, so what is replaced has expired.
        self._held[key] = (tokens, good_until)

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._check(batch))
        self._checking.add(task)
        task.add_done_callback(self._checking.discard)

    async def _check(self, batch: list[_Check]) -> None:
        # Before the call: Redis takes the tokens a moment after it, so a hold measured from
        # here ends no later than Redis has counted them back.
        sent_at = time.monotonic()
        try:
            answers = await self._script(
                keys=[check.key for check in batch],
                args=[value for check in batch
                      for value in (check.limit, check.period_ms, check.cost, check.want)])
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            self._skip_until = now + self.RETRY_AFTER_FAILURE_SECONDS
            # Once a minute, not once a request: an outage must not flood the log.
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("rate limits not enforced for a while, Redis failed: %s", exc)
            answers = [0, 0] * len(batch)
        except BaseException as exc:
            self._asking.difference_update(check.key for check in batch if check.want > 1)
            for check in batch:
                if not check.asked.done():
                    check.asked.set_exception(exc)
            raise
        now = time.monotonic()
        for i, check in enumerate(batch):
            wait, taken = int(answers[2 * i]), int(answers[2 * i + 1])
            if check.want > 1:
                self._asking.discard(check.key)
                if taken > 1:
                    # Good for as long as the tokens stand for at the key's rate: by then
                    # Redis has counted them back, so tokens left unused cost the client no
                    # more time than has passed. At least MIN_HOLD_SECONDS, or a high limit's
                    # tokens (microseconds each) would be gone before the next request.
                    stand_for = taken * check.period_ms / check.limit / 1000
                    self._hold(check.key, taken - 1,
                               sent_at + max(stand_for, self.MIN_HOLD_SECONDS))
            elif wait > 0 and check.cost == 1 and self._held and self._use_held(check.key, now):
                # Refused by Redis, but the process holds tokens for the key: an earlier check
                # of this batch took the room for them (or one answered meanwhile).
                wait = 0
            if not check.asked.done():
                check.asked.set_result(wait)
