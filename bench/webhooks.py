"""The ``webhooks`` scenario (issue 15): does one delivery worker keep up with the earn rate, and
what does delivering cost the earn path?

In one run, on the loaded database, against the service (started with its own workers off, so
that exactly one worker delivers: ``loyalty worker``, as production runs it on its own) and a
receiver answering 200 at once (bench/receiver.py):

1. **Off**: earn at saturation with no endpoint, then pgbench's earn reference: the earn ratio
   without webhooks.
2. **On**: an endpoint subscribed to ``purchase.recorded`` and ``points.earned``, the worker
   running; earn at saturation again (how many deliveries were written and how many delivered
   meanwhile is recorded: whether one worker keeps up while the service takes the machine);
   then the backlog left is drained (timed), and only then pgbench (so the worker's catch-up
   does not slow the reference): the earn ratio with webhooks on.
3. **Off again**: the endpoint disabled, earn and pgbench once more. The database grows from
   run to run: off is the mean of the earn rates before and after on, so a steady drift
   cancels out. pgbench writes no events, so its three measurements measure one thing: both
   ratios use their mean. Every measurement starts right after a checkpoint.
4. **Drain**: the worker stopped, earn for the same time makes a backlog; the worker started
   again delivers it alone. Its rate (events delivered per second, from the first attempt to
   the last delivery, as the database recorded them) against the events the earn scenario's
   rate writes per second (two per purchase): the ratio is ≥ 1 when one worker keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import asyncpg

from bench.harness import DATA_DIR, ROOT, Result, checkpoint, say
from bench.http import pgbench, wrk
from bench.receiver import Counts, receiving
from loyalty.core.db import init_connection
from loyalty.ops.webhooks import create_endpoint, delete_endpoint
from schemas.webhooks import EndpointCreate

TYPES = ["purchase.recorded", "points.earned"]
# The worker's priority as production starts it (LOYALTY_WEBHOOKS_WORKER_NICE's default);
# BENCH_WORKER_NICE=0 measures it competing with the service as an equal.
WORKER_NICE = os.environ.get("BENCH_WORKER_NICE", "10")
DRAIN_TIMEOUT_SECONDS = 300


@contextlib.contextmanager
def delivery_worker(dsn: str) -> Iterator[subprocess.Popen[bytes]]:
    """One ``loyalty worker`` process on the bench database, private addresses allowed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(LOYALTY_DATABASE_URL=dsn, LOYALTY_DATA_DIR=str(DATA_DIR),
               LOYALTY_MIGRATE_ON_START="false", LOYALTY_LOG_LEVEL="warning",
               LOYALTY_WEBHOOKS_ALLOW_PRIVATE="true", LOYALTY_WEBHOOKS_WORKER_NICE=WORKER_NICE)
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], cwd=ROOT, env=env)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    return conn


async def _add_endpoint(dsn: str, url: str) -> UUID:
    conn = await _connect(dsn)
    try:
        async with conn.transaction():
            made = await create_endpoint(conn, EndpointCreate(
                url=url, event_types=TYPES, description="bench receiver"), allow_private=True)
        return made.endpoint_id
    finally:
        await conn.close()


async def _remove_endpoint(dsn: str, endpoint_id: UUID) -> None:
    conn = await _connect(dsn)
    try:
        await delete_endpoint(conn, endpoint_id)
    finally:
        await conn.close()


async def _checkpoint(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await checkpoint(conn)
    finally:
        await conn.close()


async def _set_enabled(dsn: str, endpoint_id: UUID, enabled: bool) -> None:
    conn = await _connect(dsn)
    try:
        await conn.execute("update webhook_endpoints set enabled = $2 where endpoint_id = $1",
                           endpoint_id, enabled)
    finally:
        await conn.close()


async def _counts(dsn: str, endpoint_id: UUID) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            select count(*) as written,
                   count(*) filter (where status = 'pending') as pending,
                   count(*) filter (where status = 'delivered') as delivered,
                   count(*) filter (where status = 'failed') as failed,
                   coalesce(sum(attempts), 0) as attempts
              from webhook_deliveries where endpoint_id = $1
            """, endpoint_id)
        assert row is not None
        return dict(row)
    finally:
        await conn.close()


async def _drain_rate(dsn: str, endpoint_id: UUID, since: int) -> dict[str, Any]:
    """Deliveries beyond the first ``since`` (in outbox order): how many, and the seconds from
    their first attempt to their last delivery, as recorded."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            with late as (
                select delivery_id, delivered_at from webhook_deliveries
                 where endpoint_id = $1 order by seq offset $2
            )
            select count(*) as delivered,
                   extract(epoch from max(late.delivered_at)
                           - (select min(a.attempted_at) from webhook_attempts a
                               where a.delivery_id in (select delivery_id from late)))
                       as seconds
              from late
            """, endpoint_id, since)
        assert row is not None
        return {"delivered": row["delivered"], "seconds": float(row["seconds"] or 0.0)}
    finally:
        await conn.close()


def _wait_drained(dsn: str, endpoint_id: UUID) -> tuple[float, dict[str, int]]:
    started = time.monotonic()
    while True:
        counts = asyncio.run(_counts(dsn, endpoint_id))
        if counts["pending"] == 0 or time.monotonic() - started > DRAIN_TIMEOUT_SECONDS:
            return time.monotonic() - started, counts
        time.sleep(0.2)


def webhooks_scenario(*, wrk_binary: str, pgbench_binary: str | None, base: str, dsn: str,
                      prepared: dict[str, Any], members: int, duration: int, connections: int,
                      threads: int, run_id: str, common: dict[str, Any]) -> list[Result]:
    wrk_args = {"connections": connections, "threads": threads}
    earn_env = {"BENCH_TERMINAL_KEY": prepared["terminal_key"]}
    defines = {"members": str(members), "terminal": prepared["terminal_id"],
               "store": prepared["store_id"]}

    def earn(prefix: str) -> dict[str, Any]:
        asyncio.run(_checkpoint(dsn))
        return wrk(wrk_binary, base, "earn.lua", seconds=duration, **wrk_args,
                   env={**earn_env, "BENCH_RUN": f"{prefix}{run_id}"})

    def reference() -> tuple[float, dict[str, float]]:
        if pgbench_binary is None:
            return 0.0, {}
        asyncio.run(_checkpoint(dsn))
        for _ in range(5):
            try:
                return pgbench(pgbench_binary, dsn, seconds=duration, connections=connections,
                               threads=threads, defines=defines)
            except RuntimeError as exc:
                # A server shared with other runs may be out of connections for a moment.
                if "too many clients" not in str(exc):
                    raise
                say("webhooks: the server has too many clients; pgbench again in 5s")
                time.sleep(5)
        raise RuntimeError("pgbench: the server stayed out of connections")

    say("webhooks: warming up, no endpoint")
    wrk(wrk_binary, base, "earn.lua", seconds=3, **wrk_args,
        env={**earn_env, "BENCH_RUN": f"HW{run_id}"})
    say(f"webhooks off: earn for {duration}s, then pgbench")
    off = earn("HF")
    off_tps, off_cpu = reference()
    receiver: Counts
    with receiving() as (url, receiver):
        endpoint_id = asyncio.run(_add_endpoint(dsn, url))
        try:
            with delivery_worker(dsn):
                time.sleep(1.5)  # the worker's start (imports, pool) is not what is measured
                say(f"webhooks on: earn for {duration}s with one worker delivering to {url}")
                on = earn("HN")
                during = asyncio.run(_counts(dsn, endpoint_id))
                say(f"webhooks on: {during['written']:,} deliveries written,"
                    f" {during['delivered']:,} delivered meanwhile; draining the rest")
                catch_up, after_on = _wait_drained(dsn, endpoint_id)
                say(f"webhooks on: drained in {catch_up:.1f}s; pgbench")
                on_tps, on_cpu = reference()
            # Off again, the endpoint disabled: the database has grown by two runs since the
            # first measurement (and vacuum and checkpoints come in their own time); the
            # reference is the mean of the ratios before and after, so drift cancels out.
            asyncio.run(_set_enabled(dsn, endpoint_id, False))
            say(f"webhooks off again: earn for {duration}s, then pgbench")
            off_again = earn("HG")
            off_again_tps, off_again_cpu = reference()
            asyncio.run(_set_enabled(dsn, endpoint_id, True))
            say(f"webhooks drain: earn for {duration}s with no worker, then one worker alone")
            backlog_earn = earn("HD")
            before = asyncio.run(_counts(dsn, endpoint_id))
            started = time.monotonic()
            with delivery_worker(dsn):
                wall, drained = _wait_drained(dsn, endpoint_id)
            wall = time.monotonic() - started
            rate = asyncio.run(_drain_rate(dsn, endpoint_id, after_on["written"]))
        finally:
            asyncio.run(_remove_endpoint(dsn, endpoint_id))
        received = receiver.requests

    def ratio(rps: float, tps: float) -> float:
        return rps / tps if tps else float("nan")

    events_per_purchase = len(TYPES)
    drain_eps = rate["delivered"] / rate["seconds"] if rate["seconds"] else 0.0
    written_eps = off["rps"] * events_per_purchase
    on_during = {"events_written": during["written"], "events_delivered": during["delivered"],
                 "delivered_share": round(during["delivered"] / max(1, during["written"]), 3),
                 "catch_up_s": round(catch_up, 2)}
    all_delivered = (drained["pending"] == 0 and drained["failed"] == 0
                     and drained["delivered"] == drained["written"]
                     and received == drained["attempts"])
    say(f"webhooks drain: {rate['delivered']:,} events in {rate['seconds']:.1f}s"
        f" ({drain_eps:.0f}/s; {wall:.1f}s with the worker's start); earn wrote"
        f" {written_eps:.0f} events/s; receiver got {received:,} requests")
    drain = Result(
        "webhooks: one worker's drain", drain_eps, written_eps, "events/s",
        f"events/s earn writes ({events_per_purchase} a purchase)",
        {**common, "event_types": TYPES, "worker_nice": int(WORKER_NICE)},
        {"backlog": before["pending"], "delivered": rate["delivered"],
         "seconds": round(rate["seconds"], 2), "wall_s_with_start": round(wall, 2),
         "events_per_s_per_purchase_per_s": round(drain_eps / off["rps"], 2)
         if off["rps"] else None,
         "earn_rps": round(off["rps"], 1), "backlog_earn_rps": round(backlog_earn["rps"], 1),
         "received_requests": received, "deliveries": drained,
         "while_earning": on_during, "all_delivered_once": all_delivered},
        passed=all_delivered and backlog_earn["errors"] == 0)
    # pgbench runs the same writes in all three (its script writes no events): one reference,
    # the mean of its three measurements, serves both ratios. Measured apart it varied by a
    # quarter between consecutive runs, more than what is measured here.
    tps = (off_tps + on_tps + off_again_tps) / 3
    cost = Result(
        "webhooks: earn ratio on", ratio(on["rps"], tps),
        ratio((off["rps"] + off_again["rps"]) / 2, tps),
        "earn/pgbench", "earn/pgbench with no endpoint, before and after (mean)",
        {**common, "event_types": TYPES, "worker_nice": int(WORKER_NICE)},
        {"pgbench_tps_mean": round(tps, 1),
         "earn_on_over_off": round(on["rps"] / ((off["rps"] + off_again["rps"]) / 2), 3),
         "on": {"earn_rps": round(on["rps"], 1), "pgbench_tps": round(on_tps, 1),
                "earn_cpu_cores": on["cpu_cores"], "pgbench_cpu_cores": on_cpu,
                **on_during},
         "off": {"earn_rps": round(off["rps"], 1), "pgbench_tps": round(off_tps, 1),
                 "earn_cpu_cores": off["cpu_cores"], "pgbench_cpu_cores": off_cpu},
         "off_again": {"earn_rps": round(off_again["rps"], 1),
                       "pgbench_tps": round(off_again_tps, 1),
                       "earn_cpu_cores": off_again["cpu_cores"],
                       "pgbench_cpu_cores": off_again_cpu}},
        passed=on["errors"] == 0 and off["errors"] == 0 and off_again["errors"] == 0)
    return [drain, cost]
