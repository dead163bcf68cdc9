"""``make bench``: load a data set, start the service as production would, run the scenarios,
and print each figure next to a reference measured in the same run on the same database.

    python -m bench.run [--members N] [--scenarios earn,latency,read,storm,console,expiry,launch]
                        [--duration S]

``dormancy``, ``webhooks`` and ``batches`` are run only when named in ``--scenarios``.

With ``LOYALTY_DATABASE_URL`` / ``LOYALTY_REDIS_URL`` set it uses those servers (a database
``loyalty_bench`` is created on the PostgreSQL server and dropped at the end); otherwise it
starts the embedded ones under ``.loyalty/bench``. See bench/README.md.

This module prepares the data and runs the chosen scenarios; the scenarios through the service
are in ``bench.http``, those on copies of the data in ``bench.scenarios``, the table and files
of results in ``bench.report``, the data set's load in ``bench.load``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
from typing import Any
from uuid import UUID

import asyncpg

from bench.console import console_scenario
from bench.harness import DATA_DIR, DATABASE, WORK, Result, say
from bench.http import find_pgbench, find_wrk, http_scenarios, running_service
from bench.load import fresh_data_set, reused_data_set
from bench.report import report
from bench.scenarios import (
    batches_scenario,
    dormancy_scenario,
    expiry_scenario,
    launch_scenario,
)
from bench.webhooks import webhooks_scenario
from loyalty.access.sessions import start_session
from loyalty.access.tokens import TokenSigner, load_or_create_signing_key
from loyalty.core.db import with_database
from loyalty.core.embedded import service_urls
from loyalty.core.programme import Programme
from loyalty.core.settings import load_settings

# The scenarios that go through the service (and need wrk); the others call the project's
# functions on copies of the data set.
HTTP_SCENARIOS = ("earn", "latency", "read", "storm", "console")
SCENARIOS = (*HTTP_SCENARIOS, "expiry", "launch")
# Run only when asked for (--scenarios dormancy,webhooks,batches); the default stays the list
# above.
OPTIONAL_SCENARIOS = ("dormancy", "webhooks", "batches")
SAMPLE = 100_000
TOKENS = 2_000


# -- preparing the data ----------------------------------------------------------------------


async def prepare(server_url: str, members: int, *, reuse: bool = False) -> dict[str, Any]:
    """A fresh ``loyalty_bench`` database, migrated and loaded (with ``reuse``, the one an
    earlier run left, when it holds as many members); the sample files for wrk."""
    loaded = (await reused_data_set(server_url, DATABASE, members=members, progress=say)
              if reuse else None)
    if loaded is None:
        loaded = await fresh_data_set(server_url, DATABASE, members=members, progress=say)
    dsn = loaded.dsn

    signer = TokenSigner(load_or_create_signing_key(DATA_DIR), issuer="loyalty",
                         access_ttl=3600)
    conn = await asyncpg.connect(dsn)
    try:
        sample = [str(r[0]) for r in await conn.fetch(
            "select member_id from bench_members order by random() limit $1", SAMPLE)]
        # Signed in the way the app does it: an access token belongs to a session.
        tokens = [(await start_session(conn, signer, refresh_ttl=3600, max_age=3600,
                                       member_id=UUID(m))).access_token
                  for m in sample[:TOKENS]]
        size = await conn.fetchval("select pg_size_pretty(pg_database_size(current_database()))")
    finally:
        await conn.close()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "members.lua").write_text("return {" + ",".join(f'"{m}"' for m in sample) + "}\n")
    (WORK / "tokens.lua").write_text("return {" + ",".join(f'"{t}"' for t in tokens) + "}\n")
    return {"dsn": dsn, "terminal_key": loaded.terminal_key, "store_id": str(loaded.store_id),
            "terminal_id": str(loaded.terminal_id), "load_seconds": loaded.timings,
            "database_size": size}


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="keep the loyalty_bench database")
    parser.add_argument("--reuse", action="store_true",
                        help="use the loyalty_bench database an earlier run kept (or left by"
                             " failing) when it holds --members members, and keep it")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS) - set(OPTIONAL_SCENARIOS)
    if unknown:
        sys.exit(f"bench: unknown scenarios {sorted(unknown)}; "
                 f"choose from {(*SCENARIOS, *OPTIONAL_SCENARIOS)}")
    http = bool(set(chosen) & {*HTTP_SCENARIOS, "webhooks", "batches"})
    wrk_binary = find_wrk() if http else ""
    pgbench_binary = find_pgbench()
    settings = load_settings()
    common = {"members": args.members, "duration_s": args.duration,
              "connections": args.connections, "wrk_threads": args.threads,
              "workers": args.workers, "cpus": os.cpu_count(),
              "servers": "configured" if settings.database_url else "embedded"}
    results: list[Result] = []
    with service_urls(settings.database_url, settings.redis_url, DATA_DIR,
                      need_redis=http) as urls:
        prepared = asyncio.run(prepare(urls.database_url, args.members, reuse=args.reuse))
        dsn = prepared["dsn"]
        common["database_size"] = prepared["database_size"]
        pool = max(4, args.connections // args.workers + 2)
        service = (running_service(dsn, urls.redis_url, args.workers, pool) if http
                   else contextlib.nullcontext(""))
        with service as base:
            results += http_scenarios(
                chosen, wrk_binary=wrk_binary, pgbench_binary=pgbench_binary, base=base,
                dsn=dsn, prepared=prepared, members=args.members, duration=args.duration,
                connections=args.connections, threads=args.threads, common=common)
            if "console" in chosen:
                results.append(console_scenario(base, dsn, common))
            if "batches" in chosen:
                results.append(batches_scenario(
                    wrk_binary=wrk_binary, base=base, dsn=dsn, prepared=prepared,
                    duration=args.duration, connections=args.connections,
                    threads=args.threads, common=common))
            if "webhooks" in chosen:
                results += webhooks_scenario(
                    wrk_binary=wrk_binary, pgbench_binary=pgbench_binary, base=base, dsn=dsn,
                    prepared=prepared, members=args.members, duration=args.duration,
                    connections=args.connections, threads=args.threads,
                    run_id=dt.datetime.now().strftime("%H%M%S"), common=common)
        if "expiry" in chosen:
            results.append(asyncio.run(expiry_scenario(urls.database_url)))
        if "launch" in chosen:
            programme = Programme.from_settings(settings)
            results.append(asyncio.run(launch_scenario(urls.database_url, programme)))
        if "dormancy" in chosen:
            # Last: it reshapes the members' activity in the loaded database before copying.
            results.append(asyncio.run(dormancy_scenario(urls.database_url)))
        if not (args.keep or args.reuse):
            asyncio.run(drop_data_set(urls.database_url))
    report(results)
    if any(r.passed is False for r in results):
        sys.exit(1)


async def drop_data_set(server_url: str) -> None:
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await admin.execute(f"drop database if exists {DATABASE} with (force)")
    finally:
        await admin.close()


if __name__ == "__main__":
    main()
