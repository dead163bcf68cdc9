"""``loyalty worker`` as a process of its own, killed with SIGKILL in the middle of a delivery:
after a restart the event is delivered again with the same webhook-id, and nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import asyncpg

from loyalty.core.db import init_connection
from tests.conftest import ROOT
from tests.loyalty.ops.receiver import Answer, Received, receiving, verify
from tests.loyalty.ops.test_delivery import earn, endpoint


def _worker(log: Path, **settings: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings, "LOYALTY_WEBHOOKS_ALLOW_PRIVATE": "true",
           "LOYALTY_WEBHOOKS_POLL_SECONDS": "0.3", "LOYALTY_WEBHOOKS_LEASE_SECONDS": "15",
           "LOYALTY_WEBHOOKS_RETRY_BASE_SECONDS": "0.2",
           "LOYALTY_WEBHOOKS_RETRY_MAX_SECONDS": "0.5"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT)


async def test_a_worker_killed_mid_delivery_delivers_again_after_restart(
    cli_env: str, tmp_path: Path,
) -> None:
    first_seen: list[str] = []

    def hold_the_first(request: Received, count: int) -> Answer:
        if count == 0:
            first_seen.append(request.headers["webhook-id"])
            return Answer(hold=True)
        return Answer()

    conn = await asyncpg.connect(cli_env)
    await init_connection(conn)
    log = tmp_path / "worker.log"
    try:
        async with receiving(hold_the_first) as receiver:
            hook = await endpoint(conn, receiver.url)
            ids = await earn(conn, 5, member=uuid4())
            worker = _worker(log)
            try:
                await receiver.wait_for(lambda got: len(got) >= 1, seconds=30)
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                await asyncio.sleep(0.5)
                assert len(receiver.received) == 1  # the others wait behind it (one member)
                worker = _worker(log)
                await receiver.wait_for(lambda got: len(got) >= 6, seconds=60)
                await asyncio.sleep(0.5)
            finally:
                worker.kill()
                worker.wait(10)
            got = [r.headers["webhook-id"] for r in receiver.received]
            assert first_seen == [str(ids[0])]
            assert got == [str(ids[0]), *map(str, ids)], log.read_text()
            assert all(verify(hook.secret, r) for r in receiver.received)
        rows = await conn.fetch("select status, attempts from webhook_deliveries order by seq")
        assert [r["status"] for r in rows] == ["delivered"] * 5
        assert rows[0]["attempts"] == 2
    finally:
        await conn.close()


async def test_a_worker_gives_the_tills_the_cpu_first(cli_env: str, tmp_path: Path) -> None:
    """``loyalty worker`` lowers its priority by LOYALTY_WEBHOOKS_WORKER_NICE once started, so
    on a machine it shares with the API, requests are served first."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    worker = _worker(tmp_path / "worker.log", LOYALTY_WEBHOOKS_WORKER_NICE="7")
    try:
        for _ in range(300):
            if os.getpriority(os.PRIO_PROCESS, worker.pid) != ours:
                break
            await asyncio.sleep(0.1)
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(ours + 7, 19)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
    finally:
        worker.kill()
        worker.wait(10)
