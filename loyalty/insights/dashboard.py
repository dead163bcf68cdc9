"""The console dashboard's figures, computed together and kept a few minutes (loyalty.core.cache):
the KPIs of a period and of the one before it, sales by day, week or month, the join cohorts'
retention, the RFM segments and the forecast of the points liability. Each is the function the
API's analytics endpoints call; at 1,000,000 members they take seconds together (about ten; at
10,000,000 over a minute), which a page read many times a day should not wait for each time
(docs/console.md).

A new day is a new default period, so its first view would wait for all of them; the
``dashboard_figures`` job computes the three default views (by day, week and month) early each
day, the figures they share once, and keeps them where the page looks first."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import msgspec
import redis.asyncio as aioredis

from loyalty.core.cache import Cached, cache_key, database_scope, keep, read_through
from loyalty.core.db import Connection, Pool
from loyalty.insights.cohorts import cohorts, month_index, month_of
from loyalty.insights.kpis import GRAINS, Grain, kpis, sales_trend
from loyalty.insights.liability import liability_forecast
from loyalty.insights.rfm import rfm_distribution
from schemas.analytics import Cohorts, Kpis, LiabilityForecast, RfmDistribution

# Figures older than this are answered and computed again behind; kept a day at most.
FRESH_SECONDS = 300
KEPT_SECONDS = 86_400
# The default period by day; and the join cohorts shown: the twelve months to the period's end,
# each followed for up to twelve months.
DEFAULT_DAYS = 30
COHORT_MONTHS = 12


class DashboardFigures(msgspec.Struct):
    current: Kpis
    previous: Kpis
    # (first day of the bucket, orders, sales) for each day, week or month of the period.
    trend: list[tuple[dt.date, int, int]]
    cohorts: Cohorts
    rfm: RfmDistribution
    liability: LiabilityForecast


def default_first(last: dt.date, grain: Grain) -> dt.date:
    """The default period for a grain: 30 days, 12 weeks from a Monday or 12 months from a
    first of the month, ending ``last``."""
    if grain == "week":
        return last - dt.timedelta(days=last.weekday() + 7 * 11)
    if grain == "month":
        return month_of(month_index(last) - 11)
    return last - dt.timedelta(days=DEFAULT_DAYS - 1)


def cohorts_from(last: dt.date) -> dt.date:
    """The first join month the heatmap shows for a period ending ``last``."""
    return month_of(month_index(last) - COHORT_MONTHS + 1)


class _Shared(msgspec.Struct):
    """What every period ending on one day shows alike."""

    cohorts: Cohorts
    rfm: RfmDistribution
    liability: LiabilityForecast


async def _shared(conn: Connection, *, last: dt.date, tz: ZoneInfo, now: dt.datetime,
                  point_value: float) -> _Shared:
    retention = await cohorts(conn, first=cohorts_from(last), last=last.replace(day=1), tz=tz,
                              now=now)
    return _Shared(cohorts=retention, rfm=await rfm_distribution(conn),
                   liability=await liability_forecast(conn, now=now, tz=tz,
                                                      point_value=point_value))


async def _figures(conn: Connection, shared: _Shared, *, first: dt.date, last: dt.date,
                   grain: Grain, tz: ZoneInfo, now: dt.datetime, margin: float,
                   point_value: float) -> DashboardFigures:
    current = await kpis(conn, first=first, last=last, tz=tz, now=now, margin=margin,
                         point_value=point_value)
    span = dt.timedelta(days=current.days)
    previous = await kpis(conn, first=first - span, last=last - span, tz=tz, now=now,
                          margin=margin, point_value=point_value)
    trend = await sales_trend(conn, first=first, last=last, tz=tz, now=now, grain=grain)
    return DashboardFigures(current=current, previous=previous, trend=trend,
                            cohorts=shared.cohorts, rfm=shared.rfm, liability=shared.liability)


async def dashboard_figures(pool: Pool, *, first: dt.date, last: dt.date, grain: Grain,
                            tz: ZoneInfo, margin: float, point_value: float) -> DashboardFigures:
    """Computes the figures as of now, on a connection of its own (outside any transaction, as
    the API's analytics do: each computation opens its own repeatable-read view)."""
    now = dt.datetime.now(dt.UTC)
    async with pool.acquire() as conn:
        shared = await _shared(conn, last=last, tz=tz, now=now, point_value=point_value)
        return await _figures(conn, shared, first=first, last=last, grain=grain, tz=tz,
                              now=now, margin=margin, point_value=point_value)


async def _key(pool: Pool, *, first: dt.date, last: dt.date, grain: Grain, tz: ZoneInfo,
               margin: float, point_value: float) -> str:
    # Version 3: the cohorts' first month follows from ``last`` and is no longer a part.
    return cache_key(await database_scope(pool), "dashboard", 3, first, last, grain, tz.key,
                     margin, point_value)


async def kept_dashboard_figures(redis: aioredis.Redis, pool: Pool, *, first: dt.date,
                                 last: dt.date, grain: Grain, tz: ZoneInfo, margin: float,
                                 point_value: float,
                                 refresh: bool = False) -> Cached[DashboardFigures]:
    """The figures for these arguments as last computed (at most FRESH_SECONDS old, or being
    computed again), computing them now when none are kept or ``refresh`` asks."""
    key = await _key(pool, first=first, last=last, grain=grain, tz=tz, margin=margin,
                     point_value=point_value)

    async def compute() -> DashboardFigures:
        return await dashboard_figures(pool, first=first, last=last, grain=grain, tz=tz,
                                       margin=margin, point_value=point_value)

    return await read_through(redis, key, compute, DashboardFigures, ttl_seconds=KEPT_SECONDS,
                              fresh_seconds=FRESH_SECONDS, refresh=refresh)


async def prepare_default_views(redis: aioredis.Redis, pool: Pool, *, now: dt.datetime,
                                tz: ZoneInfo, margin: float, point_value: float) -> int:
    """Computes the figures of the default view of each grain for the business day of ``now``
    and keeps them as ``kept_dashboard_figures`` finds them; what the three share is computed
    once. The number of views kept (RedisError when Redis cannot keep them)."""
    last = now.astimezone(tz).date()
    views = [(grain, default_first(last, grain)) for grain in GRAINS]
    keys = [await _key(pool, first=first, last=last, grain=grain, tz=tz, margin=margin,
                       point_value=point_value) for grain, first in views]
    async with pool.acquire() as conn:
        shared = await _shared(conn, last=last, tz=tz, now=now, point_value=point_value)
        for (grain, first), key in zip(views, keys, strict=True):
            figures = await _figures(conn, shared, first=first, last=last, grain=grain, tz=tz,
                                     now=now, margin=margin, point_value=point_value)
            await keep(redis, key, Cached(value=figures, computed_at=now),
                       ttl_seconds=KEPT_SECONDS)
    return len(views)
