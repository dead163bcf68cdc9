"""Time the weekly ``churn_model`` job on the benchmark's data set: the fit (every member's
summary read in batches, BG/NBD and Gamma-Gamma maximised) and the whole job (the fit again,
then every member scored and written in batches).

    LOYALTY_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    LOYALTY_BENCH_DATABASE=loyalty_bench_model python -m bench.churn_model --members 1000000

Loads the data set as ``make bench`` does (``bench/load.py``: ``n % 5`` purchases per member over
the last year) into a fresh ``LOYALTY_BENCH_DATABASE`` (dropped at the end unless ``--keep``),
on the configured server or the embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg

from bench.harness import DATA_DIR, DATABASE, say
from bench.load import fresh_data_set
from loyalty.core.db import drop_database, init_connection
from loyalty.core.embedded import service_urls
from loyalty.core.settings import load_settings
from loyalty.insights.churn_model import fit_and_score, fit_churn_model


async def measure(server_url: str, members: int, batch_size: int, keep: bool) -> None:
    try:
        loaded = await fresh_data_set(server_url, DATABASE, members=members, progress=say)
        dsn, now = loaded.dsn, loaded.now
        conn = await asyncpg.connect(dsn)
        await init_connection(conn)
        try:
            purchases = await conn.fetchval("select count(*) from purchases")
            # The job first (its first read warms the cache for both), then the fit alone.
            started = time.perf_counter()
            counts = await fit_and_score(conn, now=now, margin=0.3, batch_size=batch_size)
            whole = time.perf_counter() - started
            say(f"job (fit and score): {whole:.1f}s, {counts}")
            started = time.perf_counter()
            fit = await fit_churn_model(conn, as_of=now, batch_size=batch_size)
            fitted = time.perf_counter() - started
            say(f"fit: {fitted:.1f}s, {fit}")
        finally:
            await conn.close()
        print(f"{members:,} members, {purchases:,} purchases, batches of {batch_size:,}: "
              f"fit {fitted:.1f}s, fit and score (the job) {whole:.1f}s, "
              f"so scoring about {whole - fitted:.1f}s")
    finally:
        if not keep:
            await drop_database(server_url, DATABASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    settings = load_settings()
    with service_urls(settings.database_url, None, DATA_DIR, need_redis=False) as urls:
        asyncio.run(measure(urls.database_url, args.members, args.batch_size, args.keep))


if __name__ == "__main__":
    main()
