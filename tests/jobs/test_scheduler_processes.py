"""Two ``loyalty serve`` processes and one ``loyalty scheduler`` against one database, as
deployed: every tick of every job runs once, and killing the leader (SIGKILL, no goodbye) hands
over within 30 seconds with no tick lost or doubled."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from jobs.scheduler import LEADER_LOCK_KEY
from tests.conftest import ROOT

# Two cheap jobs every two and three seconds; the rest off.
PERIODS = {"idempotency_cleanup": 2, "rfm_refresh": 3}
_OTHERS = ("points_release", "campaign_launch", "points_expiry", "tier_evaluation", "dormancy",
           "reactivation")
SCHEDULES = ";".join([f"{name}=*/{period} * * * * *" for name, period in PERIODS.items()]
                     + [f"{name}=off" for name in _OTHERS])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 (our own command, fixed arguments)
            [sys.executable, "-m", "cli.main", *command], cwd=ROOT,
            env=env, stdout=out, stderr=subprocess.STDOUT)


async def _leader_pid(dsn: str) -> int | None:
    """The process id (of the operating system) of the instance holding the leader lock."""
    conn = await asyncpg.connect(dsn)
    try:
        name = await conn.fetchval(
            """
            select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid
             where l.locktype = 'advisory' and l.granted
               and l.database = (select oid from pg_database where datname = current_database())
               and (l.classid::bigint << 32 | l.objid::bigint) = $1
            """, LEADER_LOCK_KEY)
    finally:
        await conn.close()
    return int(name.rsplit(":", 1)[1]) if name else None


async def _runs(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("select job, scheduled_for, outcome, attempts, instance"
                                " from job_runs order by job, scheduled_for")
    finally:
        await conn.close()


async def _wait_until_each_job_ran(dsn: str, times: int, since: dt.datetime,
                                   deadline: float) -> None:
    while True:
        runs = await _runs(dsn)
        done = {name: sum(1 for r in runs if r["job"] == name and r["outcome"] == "succeeded"
                          and r["scheduled_for"] > since) for name in PERIODS}
        if all(count >= times for count in done.values()):
            return
        assert time.monotonic() < deadline, f"jobs did not run: {done}"
        await asyncio.sleep(0.25)


async def test_two_servers_and_a_scheduler_run_each_tick_once_across_a_killed_leader(
        fresh_database: str, redis_url: str, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    base.update(LOYALTY_DATABASE_URL=fresh_database, LOYALTY_REDIS_URL=redis_url,
                LOYALTY_JOB_SCHEDULES=SCHEDULES, LOYALTY_LOG_LEVEL="info",
                LOYALTY_SCHEDULER="embedded")
    processes: dict[int, subprocess.Popen[bytes]] = {}
    for n, command in enumerate([["serve"], ["serve"], ["scheduler"]]):
        env = {**base, "LOYALTY_DATA_DIR": str(tmp_path / f"data{n}"),
               "LOYALTY_PORT": str(_free_port())}
        process = _start(command, env, tmp_path / f"process{n}.log")
        processes[process.pid] = process
    try:
        started = dt.datetime.now(dt.UTC)
        await _wait_until_each_job_ran(fresh_database, 3, started, time.monotonic() + 90)
        leader = await _leader_pid(fresh_database)
        assert leader in processes, (leader, list(processes))

        processes[leader].send_signal(signal.SIGKILL)
        processes[leader].wait(timeout=10)
        killed_at = time.monotonic()
        while (new_leader := await _leader_pid(fresh_database)) in (None, leader):
            assert time.monotonic() - killed_at < 30, "no instance took over within 30 s"
            await asyncio.sleep(0.2)
        handover = time.monotonic() - killed_at
        assert new_leader in processes
        assert handover < 30

        after_kill = dt.datetime.now(dt.UTC)
        await _wait_until_each_job_ran(fresh_database, 3, after_kill, time.monotonic() + 60)
        stopping = dt.datetime.now(dt.UTC)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    runs = await _runs(fresh_database)
    logs = "\n".join((tmp_path / f"process{n}.log").read_text()[-2000:] for n in range(3))
    for name, period in PERIODS.items():
        ticks = [r for r in runs if r["job"] == name and r["scheduled_for"] <= stopping]
        moments = [r["scheduled_for"] for r in ticks]
        # One row per tick (no tick doubled), every tick from the first to the last (none
        # lost, across the dead leader), each run to success; at most the tick the dead
        # leader was in the middle of was run a second time, in its own row.
        assert len(moments) == len(set(moments)), logs
        assert all(b - a == dt.timedelta(seconds=period)
                   for a, b in itertools.pairwise(moments)), (name, moments, logs)
        assert all(r["outcome"] == "succeeded" for r in ticks), (name, ticks, logs)
        assert sum(1 for r in ticks if r["attempts"] > 1) <= 1
        # Both the dead leader and its successor ran ticks.
        instances = {r["instance"].rsplit(":", 1)[1] for r in ticks}
        assert {str(leader), str(new_leader)} <= instances, (instances, leader, new_leader)
