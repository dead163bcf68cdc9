"""The console dashboard's figures, computed together and kept a few minutes (loyalty.core.cache):
the KPIs of a period and of the one before it, sales by day, week or month, the join cohorts'
retention, the RFM segments and the forecast of the points liability. Each is the function the
API's analytics endpoints call; at 1,000,000 members they take seconds together, which a page
read many times a day should not wait for each time (docs/console.md)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import msgspec
import redis.asyncio as aioredis

from loyalty.core.cache import Cached, cache_key, database_scope, read_through
from loyalty.core.db import Pool
from loyalty.insights.cohorts import cohorts
from loyalty.insights.kpis import Grain, kpis, sales_trend
from loyalty.insights.liability import liability_forecast
from loyalty.insights.rfm import rfm_distribution
from schemas.analytics import Cohorts, Kpis, LiabilityForecast, RfmDistribution

# Figures older than this are answered and computed again behind; kept a day at most.
FRESH_SECONDS = 300
KEPT_SECONDS = 86_400


class DashboardFigures(msgspec.Struct):
    current: Kpis
    previous: Kpis
    # (first day of the bucket, orders, sales) for each day, week or month of the period.
    trend: list[tuple[dt.date, int, int]]
    cohorts: Cohorts
    rfm: RfmDistribution
    liability: LiabilityForecast


async def dashboard_figures(pool: Pool, *, first: dt.date, last: dt.date, grain: Grain,
                            cohorts_from: dt.date, tz: ZoneInfo, margin: float,
                            point_value: float) -> DashboardFigures:
    """Computes the figures as of now, on a connection of its own (outside any transaction, as
    the API's analytics do: each computation opens its own repeatable-read view)."""
    now = dt.datetime.now(dt.UTC)
    async with pool.acquire() as conn:
        current = await kpis(conn, first=first, last=last, tz=tz, now=now, margin=margin,
                             point_value=point_value)
        span = dt.timedelta(days=current.days)
        previous = await kpis(conn, first=first - span, last=last - span, tz=tz, now=now,
                              margin=margin, point_value=point_value)
        trend = await sales_trend(conn, first=first, last=last, tz=tz, now=now, grain=grain)
        retention = await cohorts(conn, first=cohorts_from, last=last.replace(day=1), tz=tz,
                                  now=now)
        rfm = await rfm_distribution(conn)
        liability = await liability_forecast(conn, now=now, tz=tz, point_value=point_value)
    return DashboardFigures(current=current, previous=previous, trend=trend,
                            cohorts=retention, rfm=rfm, liability=liability)


async def kept_dashboard_figures(redis: aioredis.Redis, pool: Pool, *, first: dt.date,
                                 last: dt.date, grain: Grain, cohorts_from: dt.date,
                                 tz: ZoneInfo, margin: float, point_value: float,
                                 refresh: bool = False) -> Cached[DashboardFigures]:
    """The figures for these arguments as last computed (at most FRESH_SECONDS old, or being
    computed again), computing them now when none are kept or ``refresh`` asks."""
    key = cache_key(await database_scope(pool), "dashboard", 2, first, last, grain,
                    cohorts_from, tz.key, margin, point_value)

    async def compute() -> DashboardFigures:
        return await dashboard_figures(pool, first=first, last=last, grain=grain,
                                       cohorts_from=cohorts_from, tz=tz, margin=margin,
                                       point_value=point_value)

    return await read_through(redis, key, compute, DashboardFigures, ttl_seconds=KEPT_SECONDS,
                              fresh_seconds=FRESH_SECONDS, refresh=refresh)
