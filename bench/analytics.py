"""Time the analytics the staff read at 1,000,000 members: the KPIs of a month and of a year, the
cohorts of a year, the sales trend, the RFM distribution and the liability forecast, each under
the statement timeout every request runs under (``LOYALTY_STATEMENT_TIMEOUT_SECONDS``, 60 s),
and the RFM refresh, a nightly job, without it (as the scheduler runs jobs).

    LOYALTY_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    LOYALTY_BENCH_DATABASE=loyalty_bench_analytics python -m bench.analytics --members 1000000

Loads the data set as ``make bench`` does (``bench/load.py``) into a fresh
``LOYALTY_BENCH_DATABASE`` (dropped at the end unless ``--keep``), then gives it a past as a
programme has one: last activity spread over two years as the ``dormancy`` scenario spreads it
(30 in a hundred past the 180-day threshold), the nightly dormancy job run, so that the status
history the cohorts and churn figures read holds about 300,000 changes stamped with one time
(the case the cohort query's plan once broke on), and tables analysed as the job leaves them.
Each query runs three times on one connection: the first time (cold plans and cache) and the
best of the others.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from bench.harness import DATA_DIR, DATABASE, say
from bench.load import fresh_data_set
from bench.scenarios import _SPREAD_ACTIVITY, DORMANCY_DAYS, DORMANT_PERCENT
from loyalty.core.db import drop_database, init_connection
from loyalty.core.embedded import service_urls
from loyalty.core.settings import load_settings
from loyalty.insights.cohorts import cohorts
from loyalty.insights.dormancy import flag_dormant
from loyalty.insights.kpis import kpis, sales_trend
from loyalty.insights.liability import liability_forecast
from loyalty.insights.rfm import refresh_rfm, rfm_distribution

TZ = ZoneInfo("Asia/Tokyo")
RUNS = 3


async def _timed(name: str, run: Callable[[], Awaitable[Any]]) -> tuple[str, float, float]:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    say(f"{name}: first {times[0]:.2f}s, best of the rest {min(times[1:]):.2f}s")
    return name, times[0], min(times[1:])


async def _as_a_job(conn: asyncpg.Connection, statement_timeout: int,
                    work: Awaitable[Any]) -> Any:
    """Jobs run without the requests' statement timeout (the scheduler's pool)."""
    await conn.execute("set statement_timeout = 0")
    try:
        return await work
    finally:
        await conn.execute(f"set statement_timeout = '{statement_timeout}s'")


async def measure(server_url: str, members: int, keep: bool, statement_timeout: int) -> None:
    try:
        loaded = await fresh_data_set(server_url, DATABASE, members=members, progress=say)
        dsn, now = loaded.dsn, loaded.now
        # As the API's pool runs every request: under the statement timeout.
        conn = await asyncpg.connect(dsn, server_settings={
            "statement_timeout": f"{statement_timeout}s", "jit": "off"})
        await init_connection(conn)
        try:
            # Setting the stage, as jobs run: without the requests' timeout.
            await conn.execute("set statement_timeout = 0")
            await conn.execute(_SPREAD_ACTIVITY, now, DORMANT_PERCENT)
            started = time.perf_counter()
            flagged = await flag_dormant(conn, now=now, tz=TZ, days=DORMANCY_DAYS)
            say(f"dormancy job: {flagged} in {time.perf_counter() - started:.1f}s")
            await conn.execute("vacuum analyze members, member_status_changes")
            await conn.execute(f"set statement_timeout = '{statement_timeout}s'")
            today = now.astimezone(TZ).date()
            month_ago = today - dt.timedelta(days=30)
            year_ago = today - dt.timedelta(days=364)
            first_month = year_ago.replace(day=1)
            this_month = today.replace(day=1)

            async def kpis_of(first: dt.date) -> Any:
                return await kpis(conn, first=first, last=today, tz=TZ, now=now, margin=0.3,
                                  point_value=1.0)

            rows = [
                await _timed("KPIs, last 30 days", lambda: kpis_of(month_ago)),
                await _timed("KPIs, last 365 days", lambda: kpis_of(year_ago)),
                await _timed("cohorts, 12 months", lambda: cohorts(
                    conn, first=first_month, last=this_month, tz=TZ, now=now)),
                await _timed("sales trend by week, a year", lambda: sales_trend(
                    conn, first=year_ago, last=today, tz=TZ, now=now, grain="week")),
                await _timed("RFM refresh (the nightly job)", lambda: _as_a_job(
                    conn, statement_timeout, refresh_rfm(conn, now=now, window_days=365))),
                await _timed("RFM distribution", lambda: rfm_distribution(conn)),
                await _timed("liability forecast, 12 months", lambda: liability_forecast(
                    conn, now=now, tz=TZ, point_value=1.0)),
            ]
            changes = await conn.fetchval("select count(*) from member_status_changes")
        finally:
            await conn.close()
        print(f"\n{members:,} members, {changes:,} status changes,"
              f" statement timeout {statement_timeout} s")
        print(f"{'query':<34} {'first (s)':>10} {'best (s)':>10}")
        for name, first, best in rows:
            print(f"{name:<34} {first:>10.2f} {best:>10.2f}")
    finally:
        if not keep:
            await drop_database(server_url, DATABASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    settings = load_settings()
    with service_urls(settings.database_url, None, DATA_DIR, need_redis=False) as urls:
        asyncio.run(measure(urls.database_url, args.members, args.keep,
                            settings.statement_timeout_seconds))


if __name__ == "__main__":
    main()
