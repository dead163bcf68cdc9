"""Time a rule backtest (loyalty.insights.backtest) over a year of the benchmark's purchases:
the rules in force (which must re-earn exactly what was earned) and a doubled base rate.

    LOYALTY_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    LOYALTY_BENCH_DATABASE=loyalty_bench_backtest python -m bench.backtest --members 100000

Loads the data set as ``make bench`` does (``bench/load.py``: ``n % 5`` purchases per member over
the last year, earned at 1 point per 100) into a fresh ``LOYALTY_BENCH_DATABASE`` (dropped at the
end unless ``--keep``), on the configured server or the embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from zoneinfo import ZoneInfo

import asyncpg

from bench.harness import DATA_DIR, DATABASE, say
from bench.load import fresh_data_set
from loyalty.core.db import drop_database, init_connection
from loyalty.core.embedded import service_urls
from loyalty.core.programme import Programme
from loyalty.core.settings import load_settings
from loyalty.insights.backtest import BATCH, backtest_period, reearn_period
from schemas.rules import BaseRate, EarningRules


async def measure(server_url: str, members: int, keep: bool) -> None:
    try:
        loaded = await fresh_data_set(server_url, DATABASE, members=members, progress=say)
        dsn, now = loaded.dsn, loaded.now
        programme = Programme(currency="JPY", timezone=ZoneInfo("Asia/Tokyo"))
        today = now.astimezone(programme.timezone).date()
        period = backtest_period(today - dt.timedelta(days=365), today,
                                 tz=programme.timezone, today=today)
        conn = await asyncpg.connect(dsn)
        await init_connection(conn)
        try:
            for name, rules in (("rules in force", EarningRules()),
                                ("doubled base rate", EarningRules(base=BaseRate(points=2)))):
                started = time.perf_counter()
                result = await reearn_period(conn, rules, period, programme=programme,
                                             point_value=1.0)
                took = time.perf_counter() - started
                totals = result.totals
                print(f"{name}: {totals.purchases:,} purchases in {took:.1f}s "
                      f"({totals.purchases / took:,.0f} a second, batches of {BATCH:,}); "
                      f"earned {totals.actual:,}, re-earned {totals.proposed:,}")
        finally:
            await conn.close()
    finally:
        if not keep:
            await drop_database(server_url, DATABASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    settings = load_settings()
    with service_urls(settings.database_url, None, DATA_DIR, need_redis=False) as urls:
        asyncio.run(measure(urls.database_url, args.members, args.keep))


if __name__ == "__main__":
    main()
