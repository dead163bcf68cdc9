"""Waking delivery workers (migration 0028): a transaction that fans an event out notifies only
when no worker is busy (a NOTIFY serialises commits), and an idle worker is still woken at once,
not at its next poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import uuid4

import asyncpg

from loyalty.core.db import Connection
from loyalty.ops.delivery import BUSY_LOCK, CHANNEL, IDLE_AGAIN
from tests.loyalty.ops.receiver import receiving
from tests.loyalty.ops.test_delivery import conn, earn, endpoint, settings_for, worker

__all__ = ["conn", "settings_for"]  # fixtures


async def test_an_idle_worker_is_woken_at_once_each_time(conn: Connection,
                                                         settings_for: Any) -> None:
    async with receiving() as receiver:
        await endpoint(conn, receiver.url)
        async with worker(settings_for(webhooks_poll_seconds=60)):
            await asyncio.sleep(0.5)  # idle now
            for round_ in range(1, 4):
                started = time.monotonic()
                await earn(conn, 1, member=uuid4(), start=round_)
                expected = round_
                await receiver.wait_for(lambda got: len(got) >= expected, seconds=5)  # noqa: B023 - awaited in this iteration
                assert time.monotonic() - started < 3, "woken by its poll, not by NOTIFY"
                await asyncio.sleep(0.3)  # idle again


async def test_no_notification_while_a_worker_is_busy(conn: Connection,
                                                     fresh_database: str) -> None:
    await endpoint(conn, "http://127.0.0.1:9/hooks")
    listener = await asyncpg.connect(fresh_database)
    busy = await asyncpg.connect(fresh_database)
    heard: list[str] = []
    arrived = asyncio.Event()

    def hear(_conn: Any, _pid: int, channel: str, _payload: object) -> None:
        heard.append(channel)
        arrived.set()

    try:
        await listener.add_listener(CHANNEL, hear)
        await busy.execute(BUSY_LOCK)
        await earn(conn, 3, member=uuid4())
        await asyncio.sleep(0.5)
        assert heard == []
        await busy.execute(IDLE_AGAIN)
        await earn(conn, 1, member=uuid4(), start=3)
        async with asyncio.timeout(5):
            await arrived.wait()
        assert heard == [CHANNEL]
    finally:
        await listener.close()
        await busy.close()
