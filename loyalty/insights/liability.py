"""The liability forecast: what will become of the points outstanding now, read from what became
of the programme's own past lots at each age (docs/analytics.md, "Liability forecast").

The curve. A lot's age is the whole months from the business day it was earned (SQL
``whole_months``: earned on 10 January, one month old from 10 February). For each age k, the
points still in lots at the start of their month k, among the lots that have lived all of month
k by now (so a young lot counts only for the ages it has finished), are the exposure; what was
redeemed from them and what expired during month k, over the exposure, are the month's
redemption and expiry rates. Chained, the rates give the share of issued points redeemed,
expired and still outstanding at each age: an actuarial life table, which uses every lot for as
long as it has been watched instead of waiting for a cohort to close. Points taken back (earned
points reversed on a return, a staff deduction) leave the exposure without being an outcome: the
curve is the fate of points that stayed with their member. A merge's transfer moves a lot to
another member with its own dates, so it is neither: the moved lot goes on counting at the same
age, its points counted once, where they were first earned.

The forecast. Each outstanding lot, by its age now (rounded to the nearest month) and the month
in which its own expiry date falls, is carried forward month by month: the curve's redemption
rate at the age it reaches takes its share, and what is left when its expiry date comes is
breakage (the points of a lot already past its expiry, which the nightly job has yet to write
off, are breakage in the first month). A lot's own expiry date is used instead of the curve's
expiry rates, so a change of the expiry policy shows at once. Ages beyond the oldest the history
has measured take the oldest age's rate. Points without an expiry that the rates have not
exhausted after ``LIMIT_MONTHS`` are reported as unresolved, not guessed at.

The queries read every lot and every allocation once, summed by business days and then by ages:
a few hundred rows back whatever the size of the programme; the life table and the forecast
are pure code below.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.insights.kpis import liability_value, one_view, ratio
from schemas.analytics import (
    LiabilityAge,
    LiabilityForecast,
    LiabilityMonth,
    LiabilityOutcome,
)

DEFAULT_MONTHS = 12
MAX_MONTHS = 60
# How far the ultimate outcome is followed: ten years is past any expiry policy in use; points
# without an expiry left after it are unresolved.
LIMIT_MONTHS = 120
# The history is a read of every lot and allocation: its hash joins would spill to disk within
# the default work_mem. It stays under the requests' statement timeout (10-18 s at 1,000,000
# members on the loaded development machine, against 60 s): a request must not hold a
# connection and a worker for minutes.
_FORECAST_MEMORY = "set local work_mem = '64MB'"


# -- the curve -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LotHistory:
    """The programme's lots grouped by ``elapsed`` (whole months from earning to now): points
    first ``issued`` in lots of that elapsed age, and points ``redeemed``, ``expired`` and
    ``withdrawn`` from them at each age, keyed (elapsed, age)."""

    issued: dict[int, int]
    redeemed: dict[tuple[int, int], int]
    expired: dict[tuple[int, int], int]
    withdrawn: dict[tuple[int, int], int]

    @property
    def months(self) -> int:
        """The ages the history measures: 0 to the oldest lot's elapsed months, less one (the
        month it is in has not ended)."""
        return max([*self.issued, *(e for e, _ in self.redeemed), *(e for e, _ in self.expired),
                    *(e for e, _ in self.withdrawn)], default=0)


def _grid(cells: dict[tuple[int, int], int], size: int) -> np.ndarray:
    grid = np.zeros((size + 1, size + 1))
    for (elapsed, age), points in cells.items():
        grid[elapsed, min(age, elapsed)] += points
    return grid


def life_table(history: LotHistory) -> list[LiabilityAge]:
    """The curve: for each age measured, its exposure, what was redeemed and expired in it, the
    month's rates, and the cumulative shares of issued points redeemed, expired and outstanding
    at the age's end."""
    n = history.months
    issued = np.zeros(n + 1)
    for elapsed, points in history.issued.items():
        issued[elapsed] += points
    redeemed, expired = _grid(history.redeemed, n), _grid(history.expired, n)
    gone = redeemed + expired + _grid(history.withdrawn, n)
    ages = []
    alive, redeemed_share, expired_share = 1.0, 0.0, 0.0
    for k in range(n):
        watched = slice(k + 1, None)  # lots that have lived all of month k
        exposure = float(issued[watched].sum() - gone[watched, :k].sum())
        out_r, out_x = float(redeemed[watched, k].sum()), float(expired[watched, k].sum())
        rate_r = min(max(out_r / exposure, 0.0), 1.0) if exposure > 0 else None
        rate_x = min(max(out_x / exposure, 0.0), 1.0 - (rate_r or 0.0)) \
            if exposure > 0 else None
        redeemed_share += alive * (rate_r or 0.0)
        expired_share += alive * (rate_x or 0.0)
        alive *= 1.0 - (rate_r or 0.0) - (rate_x or 0.0)
        ages.append(LiabilityAge(
            age_months=k, exposure=round(exposure), redeemed=round(out_r),
            expired=round(out_x), redemption_rate=rate_r, expiry_rate=rate_x,
            redeemed_share=redeemed_share, expired_share=expired_share,
            outstanding_share=max(alive, 0.0)))
    return ages


def redemption_rates(curve: list[LiabilityAge], length: int) -> np.ndarray:
    """The redemption rate at each age 0 to ``length`` - 1: the curve's where it measured one,
    else the last measured before it (and beyond the curve, its last)."""
    rates = np.zeros(length)
    last = 0.0
    for k in range(length):
        if k < len(curve) and curve[k].redemption_rate is not None:
            last = curve[k].redemption_rate or 0.0
        rates[k] = last
    return rates


# -- the forecast ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutstandingLots:
    """Outstanding points of lots of one age (whole months, rounded) that expire in forecast
    month ``expires_in`` (1: the coming month; 0: already past their expiry; None: never)."""

    age: int
    expires_in: int | None
    points: int
    lots: int


@dataclass(frozen=True)
class Projection:
    """Expected points redeemed, broken (expired) and still outstanding at the end of each
    forecast month 1 to ``LIMIT_MONTHS`` (index 0 is month 1), and what is unresolved after."""

    redeemed: np.ndarray
    breakage: np.ndarray
    outstanding: np.ndarray
    unresolved: float


def project(lots: list[OutstandingLots], curve: list[LiabilityAge], *,
            limit: int = LIMIT_MONTHS) -> Projection:
    """Carry the outstanding lots forward month by month (the module docstring's rule)."""
    points = np.array([group.points for group in lots], dtype=np.float64)
    ages = np.array([group.age for group in lots], dtype=np.int64)
    never = limit + 1
    expires = np.array([never if group.expires_in is None else group.expires_in
                        for group in lots], dtype=np.int64)
    rates = redemption_rates(curve, int(ages.max(initial=0)) + limit)
    redeemed, breakage, outstanding = np.zeros(limit), np.zeros(limit), np.zeros(limit)
    # Already past their expiry: written off by the next run of the expiry job.
    breakage[0] += points[expires <= 0].sum()
    points[expires <= 0] = 0.0
    for month in range(1, limit + 1):
        taken = points * rates[ages + month - 1]
        points -= taken
        redeemed[month - 1] = taken.sum()
        ending = expires == month
        breakage[month - 1] += points[ending].sum()
        points[ending] = 0.0
        outstanding[month - 1] = points.sum()
    return Projection(redeemed, breakage, outstanding, float(points.sum()))


def _month_start(now: dt.datetime, months: int, tz: ZoneInfo) -> dt.date:
    """The business day forecast month ``months`` + 1 begins: ``months`` after today, on the
    same day of the month or the month's last where it is shorter (as age() counts)."""
    day = now.astimezone(tz).date()
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


# -- the queries -----------------------------------------------------------------------------

# $1 now, $2 the time zone. Points first issued (lots not carried over by a merge) by elapsed
# months, and the points each outcome took from lots by (elapsed, age at the entry): redeemed
# (redeem entries), expired (expire entries), withdrawn (any other entry that drew on a lot:
# reversals on returns, staff deductions); transfers are neither (the module docstring). Rows
# are summed by business days first, and ages computed on those sums.
_HISTORY = """
with issued as (
    select (earned_at at time zone $2)::date as earned, sum(points) as points
      from point_lots
     where earned_at <= $1 and origin_lot_id is null
     group by 1
), taken as (
    select (l.earned_at at time zone $2)::date as earned,
           (e.created_at at time zone $2)::date as taken,
           case e.kind when 'redeem' then 'redeemed' when 'expire' then 'expired'
                       else 'withdrawn' end as outcome,
           -sum(a.points) as points
      from point_allocations a
      join point_entries e on e.member_id = a.member_id and e.entry_id = a.entry_id
      join point_lots l on l.member_id = a.member_id and l.lot_id = a.lot_id
     -- Only entries below zero draw on lots (a give-back on a return is a new lot).
     where e.amount < 0 and e.kind <> 'transfer' and e.created_at <= $1 and l.earned_at <= $1
     group by 1, 2, 3
), today as (
    select ($1::timestamptz at time zone $2)::date as day
)
select whole_months(earned, today.day) as elapsed, 0 as age, 'issued' as outcome,
       sum(points)::bigint as points
  from issued, today
 group by 1
union all
-- An entry a clock skew put before its lot is of age 0.
select whole_months(earned, today.day) as elapsed,
       greatest(least(whole_months(earned, taken), whole_months(earned, today.day)), 0) as age,
       outcome, sum(points)::bigint as points
  from taken, today
 group by 1, 2, 3
"""

# $1 now, $2 the time zone. The outstanding lots by age now (rounded to the nearest month: a
# lot's age half a month on, the middle of the first forecast month) and the forecast month
# their expiry falls in (month m runs from m - 1 whole months after today to m), summed by
# business days first.
_OUTSTANDING_LOTS = """
with open as (
    select (earned_at at time zone $2)::date as earned,
           (expires_at at time zone $2)::date as expires, expires_at <= $1 as past,
           sum(remaining) as points, count(*) as lots
      from point_lots
     where remaining > 0
     group by 1, 2, 3
), today as (
    select ($1::timestamptz at time zone $2)::date as day
)
select greatest(whole_months(earned, today.day + 15), 0) as age,
       case when expires is null then null
            when past then 0
            else 1 + whole_months(today.day, expires) end as expires_in,
       sum(points)::bigint as points, sum(lots)::bigint as lots
  from open, today
 group by 1, 2
"""


async def lot_history(conn: Connection, *, now: dt.datetime, tz: ZoneInfo) -> LotHistory:
    """The programme's lots and what became of them, grouped by ages, as of ``now``."""
    history = LotHistory({}, defaultdict(int), defaultdict(int), defaultdict(int))
    for row in await conn.fetch(_HISTORY, now, tz.key):
        elapsed, age, points = int(row["elapsed"]), int(row["age"]), int(row["points"])
        match row["outcome"]:
            case "issued":
                history.issued[elapsed] = points
            case "redeemed":
                history.redeemed[elapsed, age] += points
            case "expired":
                history.expired[elapsed, age] += points
            case _:
                history.withdrawn[elapsed, age] += points
    return history


async def outstanding_lots(conn: Connection, *, now: dt.datetime,
                           tz: ZoneInfo) -> list[OutstandingLots]:
    """The points outstanding at ``now`` by age and forecast month of expiry."""
    return [OutstandingLots(age=int(row["age"]), expires_in=row["expires_in"],
                            points=int(row["points"]), lots=int(row["lots"]))
            for row in await conn.fetch(_OUTSTANDING_LOTS, now, tz.key)]


def check_months(months: int) -> int:
    """``months`` of forecast to list, or InvalidInput naming the bounds."""
    if not 1 <= months <= MAX_MONTHS:
        raise InvalidInput(f"months must be between 1 and {MAX_MONTHS}, not {months}",
                           field="months")
    return months


async def liability_forecast(conn: Connection, *, now: dt.datetime, tz: ZoneInfo,
                             point_value: float,
                             months: int = DEFAULT_MONTHS) -> LiabilityForecast:
    """Expected redemption and breakage of the points outstanding at ``now``, for each of the
    coming ``months`` and in all, in points and in minor units of the currency, with the curve
    they come from. No month of history yet: the curve and the forecast are empty."""
    check_months(months)
    async with one_view(conn):
        await conn.execute(_FORECAST_MEMORY)
        history = await lot_history(conn, now=now, tz=tz)
        lots = await outstanding_lots(conn, now=now, tz=tz)
    curve = life_table(history)
    points = sum(group.points for group in lots)

    def value(amount: float) -> int:
        return liability_value(round(amount), point_value)

    forecast = LiabilityForecast(
        as_of=now, point_value=point_value, outstanding_points=points,
        outstanding_value=liability_value(points, point_value),
        outstanding_lots=sum(group.lots for group in lots), history_months=len(curve),
        curve=curve, months=[], ultimate=None)
    if not curve:
        return forecast
    projection = project(lots, curve)
    shown = [LiabilityMonth(
        month=m, starts=_month_start(now, m - 1, tz),
        redeemed_points=round(projection.redeemed[m - 1]),
        breakage_points=round(projection.breakage[m - 1]),
        redeemed_value=value(projection.redeemed[m - 1]),
        breakage_value=value(projection.breakage[m - 1]),
        outstanding_points=round(projection.outstanding[m - 1]))
        for m in range(1, months + 1)]
    redeemed, broken = float(projection.redeemed.sum()), float(projection.breakage.sum())
    ultimate = LiabilityOutcome(
        redeemed_points=round(redeemed), breakage_points=round(broken),
        unresolved_points=round(projection.unresolved), redeemed_value=value(redeemed),
        breakage_value=value(broken), breakage_rate=ratio(broken, redeemed + broken))
    return msgspec.structs.replace(forecast, months=shown, ultimate=ultimate)
