"""Figures that take long to compute, kept in Redis for a while: a read-through cache keyed by
what they were computed from. Only what may be recomputed at any time goes here (Redis may lose
it), each entry says when it was computed, and Redis being down only means computing again
(as the rate limits fail open, docs/decisions/0004-readiness-without-redis.md)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
T = TypeVar("T")
_PREFIX = "cache:"


class Cached(msgspec.Struct, Generic[T]):
    """A value and the moment it was computed (what a page shows as "as of")."""

    value: T
    computed_at: dt.datetime


def cache_key(*parts: object) -> str:
    """A key naming everything the value depends on (each part's text, in order)."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).hexdigest()
    return _PREFIX + digest[:40]


async def read_through(redis: aioredis.Redis, key: str, compute: Callable[[], Awaitable[T]],
                       type_: type[T], *, ttl_seconds: int, refresh: bool = False) -> Cached[T]:
    """The value kept under ``key`` when there is one (and ``refresh`` is not asked), else
    ``compute()``'s, kept for ``ttl_seconds``."""
    kind = Cached[type_]  # type: ignore[valid-type]
    if not refresh:
        try:
            raw = await redis.get(key)
        except RedisError:
            log.warning("cache unreachable: computing %s", key)
            raw = None
        if raw is not None:
            try:
                found: Cached[T] = msgspec.json.decode(raw, type=kind)
                return found
            except msgspec.ValidationError:
                pass  # written by another version of the code: computed again below
    fresh = Cached(value=await compute(), computed_at=dt.datetime.now(dt.UTC))
    try:
        await redis.set(key, msgspec.json.encode(fresh), ex=ttl_seconds)
    except RedisError:
        log.warning("cache unreachable: %s not kept", key)
    return fresh
