"""The ``webhooks`` scenario (issue 15): does one delivery worker keep up with the earn rate, and
what does delivering cost the earn path?

In one run, on the loaded database, against the service (started with its own workers off, so
that exactly one worker delivers: ``loyalty worker``, as production runs it on its own) and a
receiver answering 200 at once (bench/receiver.py):

1. **Off and on, alternated**: earn at saturation with no endpoint enabled, then with an
   endpoint subscribed to ``purchase.recorded`` and ``points.earned`` and the worker delivering,
   ``BENCH_WEBHOOK_ROUNDS`` times, ending with off: off, on, off, on, …, off. Before each on
   phase's end is taken, the backlog it left is drained, so no off phase pays for delivering.
   The off phases bracket the on phases, so a steady drift of the machine or of the growing
   database weighs on both means alike. Every measurement starts with a checkpoint and then
   ``WARM_UP_SECONDS`` of the same load, not measured: right after a checkpoint each page
   written is logged whole, and the on phase writes more distinct pages, so a measurement
   starting at the checkpoint weighed that burst, not the steady cost. pgbench's earn
   reference (it writes no events) runs at the start, in the middle and at the end: both
   ratios use its mean.
2. **Drain**: the worker stopped, earn for the same time makes a backlog; the worker started
   again delivers it alone. Its rate (events delivered per second, from the first attempt to
   the last delivery, as the database recorded them) against the events the earn scenario's
   rate writes per second (two per purchase): the ratio is ≥ 1 when one worker keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import asyncpg

from bench.harness import DATA_DIR, ROOT, Result, checkpoint, say
from bench.http import pgbench, wrk
from bench.receiver import Counted, receiving
from loyalty.core.db import init_connection
from loyalty.ops.webhooks import create_endpoint, delete_endpoint
from schemas.webhooks import EndpointCreate

TYPES = ["purchase.recorded", "points.earned"]
# The worker's priority as production starts it (LOYALTY_WEBHOOKS_WORKER_NICE's default);
# BENCH_WORKER_NICE=0 measures it competing with the service as an equal.
WORKER_NICE = os.environ.get("BENCH_WORKER_NICE", "10")
DRAIN_TIMEOUT_SECONDS = 300
# On phases, each between two off phases (BENCH_WEBHOOK_ROUNDS), and the seconds of load after
# each checkpoint before a phase is measured.
ROUNDS = int(os.environ.get("BENCH_WEBHOOK_ROUNDS", "3"))
WARM_UP_SECONDS = 5


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
            -- A success is kept on its delivery (migration 0040), failures in the attempts.
            select count(*) as delivered,
                   extract(epoch from max(late.delivered_at)
                           - least(min(late.delivered_at),
                                   (select min(a.attempted_at) from webhook_attempts a
                                     where a.delivery_id in (select delivery_id from late))))
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
        wrk(wrk_binary, base, "earn.lua", seconds=WARM_UP_SECONDS, **wrk_args,
            env={**earn_env, "BENCH_RUN": f"{prefix}W{run_id}"})
        return wrk(wrk_binary, base, "earn.lua", seconds=duration, **wrk_args,
                   env={**earn_env, "BENCH_RUN": f"{prefix}{run_id}"})

    def reference() -> float:
        if pgbench_binary is None:
            return 0.0
        asyncio.run(_checkpoint(dsn))
        for _ in range(5):
            try:
                return pgbench(pgbench_binary, dsn, seconds=duration, connections=connections,
                               threads=threads, defines=defines)[0]
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
    references = [reference()]
    offs: list[dict[str, Any]] = []
    ons: list[dict[str, Any]] = []
    receiver: Counted
    with receiving() as (url, receiver):
        endpoint_id = asyncio.run(_add_endpoint(dsn, url))
        try:
            asyncio.run(_set_enabled(dsn, endpoint_id, False))

            def on_phase(round_: int) -> dict[str, Any]:
                """Earn with the endpoint on; what was written and delivered while it was
                measured; the backlog drained before the next phase."""
                before = asyncio.run(_counts(dsn, endpoint_id))
                measured = earn(f"HN{round_}")
                during = asyncio.run(_counts(dsn, endpoint_id))
                catch_up, _ = _wait_drained(dsn, endpoint_id)
                written = during["written"] - before["written"]
                delivered = during["delivered"] - before["delivered"]
                say(f"webhooks on: {written:,} deliveries written, {delivered:,} delivered"
                    f" meanwhile (the warm-up's too); drained the rest in {catch_up:.1f}s")
                return {**measured, "events_written": written, "events_delivered": delivered,
                        "catch_up_s": round(catch_up, 2)}

            with delivery_worker(dsn):
                time.sleep(1.5)  # the worker's start (imports, pool) is not what is measured
                for round_ in range(ROUNDS):
                    say(f"webhooks round {round_ + 1} of {ROUNDS}, off: earn for {duration}s")
                    offs.append(earn(f"HF{round_}"))
                    asyncio.run(_set_enabled(dsn, endpoint_id, True))
                    say(f"webhooks round {round_ + 1}, on: earn for {duration}s with one worker"
                        f" delivering to {url}")
                    ons.append(on_phase(round_))
                    asyncio.run(_set_enabled(dsn, endpoint_id, False))
                    if round_ == ROUNDS // 2:
                        references.append(reference())
                say(f"webhooks, off to end: earn for {duration}s")
                offs.append(earn("HF-end"))
            references.append(reference())
            written_before = asyncio.run(_counts(dsn, endpoint_id))["written"]
            asyncio.run(_set_enabled(dsn, endpoint_id, True))
            say(f"webhooks drain: earn for {duration}s with no worker, then one worker alone")
            backlog_earn = earn("HD")
            before = asyncio.run(_counts(dsn, endpoint_id))
            started = time.monotonic()
            with delivery_worker(dsn):
                wall, drained = _wait_drained(dsn, endpoint_id)
            wall = time.monotonic() - started
            rate = asyncio.run(_drain_rate(dsn, endpoint_id, written_before))
        finally:
            asyncio.run(_remove_endpoint(dsn, endpoint_id))
        received = receiver.requests

    events_per_purchase = len(TYPES)
    off_rps = statistics.fmean(o["rps"] for o in offs)
    on_rps = statistics.fmean(o["rps"] for o in ons)
    # Each on phase against the mean of the off phases either side of it.
    per_round = [on["rps"] / ((offs[i]["rps"] + offs[i + 1]["rps"]) / 2)
                 for i, on in enumerate(ons)]
    drain_eps = rate["delivered"] / rate["seconds"] if rate["seconds"] else 0.0
    written_eps = off_rps * events_per_purchase
    all_delivered = (drained["pending"] == 0 and drained["failed"] == 0
                     and drained["delivered"] == drained["written"]
                     and received == drained["attempts"])
    say(f"webhooks drain: {rate['delivered']:,} events in {rate['seconds']:.1f}s"
        f" ({drain_eps:.0f}/s; {wall:.1f}s with the worker's start); earn wrote"
        f" {written_eps:.0f} events/s; receiver got {received:,} requests")
    settings = {**common, "event_types": TYPES, "worker_nice": int(WORKER_NICE),
                "rounds": ROUNDS, "warm_up_s": WARM_UP_SECONDS}
    drain = Result(
        "webhooks: one worker's drain", drain_eps, written_eps, "events/s",
        f"events/s earn writes ({events_per_purchase} a purchase)", settings,
        {"backlog": before["pending"], "delivered": rate["delivered"],
         "seconds": round(rate["seconds"], 2), "wall_s_with_start": round(wall, 2),
         "earn_rps": round(off_rps, 1), "backlog_earn_rps": round(backlog_earn["rps"], 1),
         "received_requests": received, "deliveries": drained,
         "all_delivered_once": all_delivered},
        passed=all_delivered and backlog_earn["errors"] == 0)
    tps = statistics.fmean(references) if all(references) else 0.0

    def phase(summary: dict[str, Any]) -> dict[str, Any]:
        kept = ("events_written", "events_delivered", "catch_up_s")
        return {"earn_rps": round(summary["rps"], 1), "cpu_cores": summary["cpu_cores"],
                **{k: summary[k] for k in kept if k in summary}}

    cost = Result(
        "webhooks: earn ratio on", on_rps / tps if tps else float("nan"),
        off_rps / tps if tps else float("nan"), "earn/pgbench",
        f"earn/pgbench with no endpoint ({ROUNDS + 1} runs bracketing the {ROUNDS} on)",
        settings,
        {"pgbench_tps": [round(t, 1) for t in references],
         "earn_on_over_off": round(on_rps / off_rps, 3),
         "per_round_on_over_neighbours": [round(r, 3) for r in per_round],
         "median_round": round(statistics.median(per_round), 3),
         "phases_in_order": [phase(p) for pair in zip(offs, ons, strict=False) for p in pair]
         + [phase(offs[-1])]},
        passed=all(p["errors"] == 0 for p in (*offs, *ons)))
    return [drain, cost]
