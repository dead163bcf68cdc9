"""Analytics: the KPIs marketing steers by (members, repeat rate, churn, order value, purchase
frequency, LTV, points and their liability). The RFM distribution with named segments is in
``loyalty.insights.rfm``, the retention of monthly join cohorts in ``loyalty.insights.cohorts``.
Definitions, with the reasons for each: docs/analytics.md.

Time. A period is business days in the programme's time zone, ``[from 00:00, to + 1 00:00)``.
A figure "at" a moment counts what was true just before it. A member's status at a past moment
comes from ``member_status_changes``: the ``to_status`` of their last change before it; with no
change before it, the ``from_status`` of their first change after it; with no change at all,
their status now (so members recorded before the history began, or imported as dormant, count
as they were).

Snapshots. The ``kpi_snapshot`` job stores one row of ``kpi_daily`` per business day (the
figures of yesterday, by ``snapshot_kpis``), so a long period does not re-read years of rows.
The KPI endpoint takes figures that add up over days (new members, reactivations, orders, sales,
returns, points issued / redeemed / expired) from the snapshots of past days that have one, and
computes them live for the other days (today, and a past day the job missed or snapshotted
before the day had ended); stocks at the period's end (members total / active / dormant, points
outstanding and their value) come from the last day's snapshot when there is one. Figures that
do not add up over days are always computed live from history over the whole period: distinct
purchasers and repeat purchasers (so the repeat rate and the purchase frequency) and churn, which
follows each member from the period's start to its end.

A snapshot records what was known when it was taken: a purchase recorded late for a day already
snapshotted counts once the job runs for that day again (which rewrites the row only if a figure
changed). An import writes into the past wholesale: it drops the snapshots from its earliest
day on (``loyalty.ops.import_files.forget_snapshots``), and those days are computed live.
Returns count on the day they are recorded, not on the purchase's day, so a day's figures do
not move when goods come back weeks later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal, get_args
from zoneinfo import ZoneInfo

import asyncpg
from asyncpg.transaction import Transaction

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.insights.churn_model import VALUE_HORIZON_DAYS
from schemas.analytics import (
    Kpis,
    LtvKpis,
    MemberKpis,
    PointKpis,
    PredictedLtv,
    PurchaseKpis,
)

# Three years, one of them a leap year: long enough for year-on-year views, short enough that a
# period computed live stays an interactive query.
MAX_PERIOD_DAYS = 3 * 365 + 1
# Before any loyalty programme kept records, and well inside what every layer can represent.
EARLIEST_DAY = dt.date(1900, 1, 1)
YEAR_DAYS = 365
# A snapshot reads every member and a day of entries: batch work, which the pool's statement
# timeout (meant for interactive queries) would cut off on a large programme.
_SNAPSHOT_TIMEOUT = "set local statement_timeout = '15min'"


def day_start(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The moment business day ``day`` begins."""
    return dt.datetime.combine(day, dt.time(), tzinfo=tz)


def check_period(first: dt.date, last: dt.date, *, today: dt.date) -> int:
    """The number of days of the period ``first`` to ``last`` (inclusive), or InvalidInput."""
    if first > last:
        raise InvalidInput("from must be on or before to", field="from")
    if last > today:
        raise InvalidInput(f"to must not be after today ({today.isoformat()})", field="to")
    if first < EARLIEST_DAY:
        raise InvalidInput(f"from must not be before {EARLIEST_DAY.isoformat()}", field="from")
    days = (last - first).days + 1
    if days > MAX_PERIOD_DAYS:
        raise InvalidInput(f"a period is at most {MAX_PERIOD_DAYS} days (three years); "
                           f"this one is {days}", field="from")
    return days


def one_view(conn: Connection) -> Transaction:
    """A repeatable-read transaction, so that every statement of a computation sees the same
    moment and the figures agree with each other; inside a caller's transaction, a savepoint
    (the caller chose the isolation)."""
    if conn.is_in_transaction():
        return conn.transaction()
    return conn.transaction(isolation="repeatable_read")


def ratio(numerator: float, denominator: float) -> float | None:
    """A share or an average; None (null on the wire) when there is nothing to divide by."""
    return numerator / denominator if denominator else None


# -- the queries -----------------------------------------------------------------------------

# $1 the period's start, $2 its end. Status of every member who had joined by the end, at the
# end and (for those who had joined by then) at the start, by the rule in the module docstring.
# A merged or erased member is no longer counted in the total; a suspended one still is. Churn
# follows the members active at the start, less those merged by the end (a merged record was a
# duplicate: the member it went into is followed instead).
_STATUSES = """
with first_change as (
    select distinct on (member_id) member_id, from_status
      from member_status_changes
     order by member_id, changed_at, change_id
), last_before_start as (
    select distinct on (member_id) member_id, to_status
      from member_status_changes
     where changed_at < $1
     order by member_id, changed_at desc, change_id desc
), last_before_end as (
    select distinct on (member_id) member_id, to_status
      from member_status_changes
     where changed_at < $2
     order by member_id, changed_at desc, change_id desc
), statuses as (
    select case when m.joined_at < $1 then coalesce(s.to_status, f.from_status, m.status) end
               as at_start,
           coalesce(e.to_status, f.from_status, m.status) as at_end
      from members m
      left join first_change f on f.member_id = m.member_id
      left join last_before_start s on s.member_id = m.member_id
      left join last_before_end e on e.member_id = m.member_id
     where m.joined_at < $2
)
select count(*) filter (where at_end in ('active', 'dormant', 'suspended')) as members_total,
       count(*) filter (where at_end = 'active') as members_active,
       count(*) filter (where at_end = 'dormant') as members_dormant,
       count(*) filter (where at_start = 'active' and at_end <> 'merged') as active_at_start,
       count(*) filter (where at_start = 'active' and at_end = 'dormant') as churned
  from statuses
"""

# $1 start, $2 end, $3 the time zone, $4 business days to leave out (those read from
# snapshots). The figures that add up over days.
#
# Points: issued = earn entries (purchases, engagement, events, bonus grants) + staff
# adjustments of either sign + reversals of earned points on returns (``reverse`` entries below
# zero); redeemed = redeem entries less redeemed points given back on returns (``reverse``
# entries above zero); expired = expire entries. Transfers (merges) move points between two
# members and are neither. So, over any period, outstanding at the end = outstanding at the
# start + issued - redeemed - expired.
_FLOWS = """
with joined as (
    select count(*) as members_new
      from members
     where joined_at >= $1 and joined_at < $2
       and (joined_at at time zone $3)::date <> all($4::date[])
), reactivated as (
    select count(*) as reactivations
      from member_status_changes
     where changed_at >= $1 and changed_at < $2
       and (changed_at at time zone $3)::date <> all($4::date[])
       and from_status = 'dormant' and to_status = 'active'
), sold as (
    select count(*) as orders, coalesce(sum(total), 0)::bigint as sales
      from purchases
     where occurred_at >= $1 and occurred_at < $2
       and (occurred_at at time zone $3)::date <> all($4::date[])
), returned as (
    select coalesce(sum(amount), 0)::bigint as returns
      from purchase_returns
     where recorded_at >= $1 and recorded_at < $2
       and (recorded_at at time zone $3)::date <> all($4::date[])
), points as (
    select coalesce(sum(amount) filter (
               where kind in ('earn', 'adjust') or (kind = 'reverse' and amount < 0)), 0)::bigint
               as points_issued,
           coalesce(-sum(amount) filter (
               where kind = 'redeem' or (kind = 'reverse' and amount > 0)), 0)::bigint
               as points_redeemed,
           coalesce(-sum(amount) filter (where kind = 'expire'), 0)::bigint as points_expired
      from point_entries
     where created_at >= $1 and created_at < $2
       and (created_at at time zone $3)::date <> all($4::date[])
)
select * from joined, reactivated, sold, returned, points
"""

FLOW_FIGURES = ("members_new", "reactivations", "orders", "sales", "returns", "points_issued",
                "points_redeemed", "points_expired")
STOCK_FIGURES = ("members_total", "members_active", "members_dormant", "points_outstanding",
                 "liability_value")

# $1 start, $2 end. A purchase counts for the member it belongs to now: a merged member's for
# the member they were merged into (as RFM and tiers count them), so one person is one
# purchaser.
_PURCHASERS = """
select count(*) as purchasers, count(*) filter (where orders >= 2) as repeat_purchasers
  from (select coalesce(o.merged_into, p.member_id), count(*) as orders
          from purchases p join members o on o.member_id = p.member_id
         where p.occurred_at >= $1 and p.occurred_at < $2
         group by 1) as per_member
"""

# $1 the moment. Points owed at a moment: what the balances hold now (available and pending,
# which always equal the sum of all entries), less what entries since then added. It reads the
# recent entries only, not the whole ledger.
_OUTSTANDING = """
select (select coalesce(sum(available + pending), 0) from point_balances)
     - (select coalesce(sum(amount), 0) from point_entries where created_at >= $1)
     as points_outstanding
"""


# The churn model's latest scores (loyalty/insights/churn_model.py) of members still scored: a
# member merged or erased since the last run keeps a row until the next one drops it.
_PREDICTED = """
select count(*) filter (where s.method = 'model' and s.predicted_value_12m is not null)
           as members,
       count(*) filter (where s.method <> 'model' or s.predicted_value_12m is null) as unscored,
       sum(s.predicted_value_12m) filter (where s.method = 'model') as total,
       max(s.scored_at) as scored_at
  from member_churn_scores s
  join members m on m.member_id = s.member_id
 where m.merged_into is null and m.status <> 'erased'
"""


async def predicted_ltv(conn: Connection) -> PredictedLtv:
    """The sum and average of the predicted 12-month value over the members the churn model
    scored, as of its last run."""
    row = await conn.fetchrow(_PREDICTED)
    assert row is not None
    members = int(row["members"])
    total = float(row["total"]) if members else None
    return PredictedLtv(members=members, unscored=int(row["unscored"]), total=total,
                        average=None if total is None else total / members,
                        scored_at=row["scored_at"], horizon_days=VALUE_HORIZON_DAYS)


async def _flows(conn: Connection, start: dt.datetime, end: dt.datetime, tz: ZoneInfo,
                 skip: Iterable[dt.date] = ()) -> dict[str, int]:
    row = await conn.fetchrow(_FLOWS, start, end, tz.key, list(skip))
    assert row is not None
    return {name: int(row[name]) for name in FLOW_FIGURES}


async def _stocks(conn: Connection, start: dt.datetime, end: dt.datetime,
                  point_value: float) -> dict[str, int]:
    """Members at ``end`` (and churn from ``start``), points outstanding at ``end``."""
    row = await conn.fetchrow(_STATUSES, start, end)
    assert row is not None
    outstanding = int(await conn.fetchval(_OUTSTANDING, end))
    return {
        **{name: int(value) for name, value in row.items()},
        "points_outstanding": outstanding,
        "liability_value": liability_value(outstanding, point_value),
    }


def liability_value(points: int, point_value: float) -> int:
    """What ``points`` are worth, in minor units of the currency, rounded to the nearest."""
    return round(points * point_value)


# -- daily snapshots -------------------------------------------------------------------------

SNAPSHOT_FIGURES = (
    "members_total", "members_active", "members_dormant", "members_new", "reactivations",
    "orders", "purchasers", "sales", "returns", "points_issued", "points_redeemed",
    "points_expired", "points_outstanding", "liability_value",
)

# $1 the day, $2.. the figures in SNAPSHOT_FIGURES order. A row whose figures are all unchanged
# is left alone (computed_at too): running the job twice for a day changes nothing more.
_UPSERT_SNAPSHOT = f"""
insert into kpi_daily as k (day, computed_at, {", ".join(SNAPSHOT_FIGURES)})
values ($1, now(), {", ".join(f"${n}" for n in range(2, len(SNAPSHOT_FIGURES) + 2))})
on conflict (day) do update
   set computed_at = excluded.computed_at,
       {", ".join(f"{name} = excluded.{name}" for name in SNAPSHOT_FIGURES)}
 where ({", ".join(f"k.{name}" for name in SNAPSHOT_FIGURES)})
       is distinct from
       ({", ".join(f"excluded.{name}" for name in SNAPSHOT_FIGURES)})
returning 1
"""  # noqa: S608 - column names from the constant SNAPSHOT_FIGURES


async def snapshot_kpis(conn: Connection, *, day: dt.date, tz: ZoneInfo,
                        point_value: float) -> dict[str, int]:
    """Compute the figures of business ``day`` (stocks at its end, flows over it) and store them
    as its ``kpi_daily`` row; returns them, with ``changed`` 1 if the row was written, 0 if it
    already held exactly these. Call it for a day that has ended (the job: yesterday)."""
    start, end = day_start(day, tz), day_start(day + dt.timedelta(days=1), tz)
    async with one_view(conn):
        await conn.execute(_SNAPSHOT_TIMEOUT)
        stocks = await _stocks(conn, end, end, point_value)
        flows = await _flows(conn, start, end, tz)
        purchasers = await conn.fetchrow(_PURCHASERS, start, end)
        assert purchasers is not None
        figures = {**stocks, **flows, "purchasers": int(purchasers["purchasers"])}
        figures = {name: figures[name] for name in SNAPSHOT_FIGURES}
        written = await conn.fetchval(_UPSERT_SNAPSHOT, day, *figures.values())
    return {**figures, "changed": 1 if written else 0}


# Snapshots of days ``$1`` to ``$2`` taken after their day had ended ($3 the time zone): one
# taken earlier holds part of a day, and the day is computed live instead.
_SNAPSHOTS = """
select * from kpi_daily
 where day between $1 and $2
   and computed_at >= ((day + 1)::timestamp at time zone $3)
"""


# -- KPIs over a period ----------------------------------------------------------------------


async def kpis(conn: Connection, *, first: dt.date, last: dt.date, tz: ZoneInfo,
               now: dt.datetime, margin: float, point_value: float) -> Kpis:
    """The KPIs of business days ``first`` to ``last``, inclusive, as of ``now``."""
    today = now.astimezone(tz).date()
    days = check_period(first, last, today=today)
    # A period that ends today ends now.
    start, end = day_start(first, tz), min(day_start(last + dt.timedelta(days=1), tz), now)
    async with one_view(conn):
        snapshots: dict[dt.date, asyncpg.Record] = {
            row["day"]: row for row in await conn.fetch(
                _SNAPSHOTS, first, min(last, today - dt.timedelta(days=1)), tz.key)}
        flows = await _flows(conn, start, end, tz, skip=snapshots)
        for row in snapshots.values():
            for name in FLOW_FIGURES:
                flows[name] += int(row[name])
        stocks = await _stocks(conn, start, end, point_value)
        if last in snapshots:
            stocks.update({name: int(snapshots[last][name]) for name in STOCK_FIGURES})
        buyers = await conn.fetchrow(_PURCHASERS, start, end)
        assert buyers is not None
        predicted = await predicted_ltv(conn)
    purchasers, repeaters = int(buyers["purchasers"]), int(buyers["repeat_purchasers"])
    orders, revenue = flows["orders"], flows["sales"] - flows["returns"]
    churn = ratio(stocks["churned"], stocks["active_at_start"])
    aov = ratio(revenue, orders)
    frequency = ratio(orders, purchasers)
    redeemed, expired = flows["points_redeemed"], flows["points_expired"]
    return Kpis(
        from_=first, to=last, days=days, as_of=now, snapshot_days=len(snapshots),
        live_days=days - len(snapshots),
        members=MemberKpis(
            total=stocks["members_total"], new=flows["members_new"],
            active=stocks["members_active"], dormant=stocks["members_dormant"],
            reactivated=flows["reactivations"], active_at_start=stocks["active_at_start"],
            churned=stocks["churned"], churn_rate=churn),
        purchases=PurchaseKpis(
            orders=orders, purchasers=purchasers, repeat_purchasers=repeaters,
            repeat_rate=ratio(repeaters, purchasers), sales=flows["sales"],
            returns=flows["returns"], revenue=revenue, average_order_value=aov,
            purchase_frequency=frequency),
        ltv=lifetime_value(average_order_value=aov, purchase_frequency=frequency,
                           churn_rate=churn, days=days, margin=margin),
        predicted_ltv=predicted,
        points=PointKpis(
            issued=flows["points_issued"], redeemed=redeemed, expired=expired,
            outstanding=stocks["points_outstanding"],
            liability_value=stocks["liability_value"],
            breakage_rate=ratio(expired, expired + redeemed)),
    )


def lifetime_value(*, average_order_value: float | None, purchase_frequency: float | None,
                   churn_rate: float | None, days: int, margin: float) -> LtvKpis:
    """LTV = average order value × margin × purchases per year × expected lifetime in years,
    from the figures of a period of ``days`` days. Null where any part is."""
    per_year = None if purchase_frequency is None else purchase_frequency * YEAR_DAYS / days
    annual_churn = None if churn_rate is None else 1 - (1 - churn_rate) ** (YEAR_DAYS / days)
    lifetime = 1 / annual_churn if annual_churn else None
    value = None
    if average_order_value is not None and per_year is not None and lifetime is not None:
        value = average_order_value * margin * per_year * lifetime
    return LtvKpis(value=value, margin=margin, purchases_per_year=per_year,
                   annual_churn_rate=annual_churn, expected_lifetime_years=lifetime)


# $1 the first day, $2 the last, $3 the time zone, $4 the grain ('day', 'week' or 'month').
# Every business day of the period with the purchases that occurred on it, summed into buckets
# of the grain: a week begins on Monday (ISO), a month on its first day, both as business days
# in the programme's time zone; the first and last buckets hold only the period's days of them.
# Nothing sold: a bucket of zeros, so a chart has a point for every bucket.
_SALES_TREND = """
with sold as (
    -- One pass over the period's purchases, by business day (not a range per day: with the
    -- purchases of a year to read, that was 365 scans, 26 s at 1,000,000 members).
    select (p.occurred_at at time zone $3)::date as day, count(*) as orders,
           sum(p.total) as sales
      from purchases p
     where p.occurred_at >= ($1::date::timestamp at time zone $3)
       and p.occurred_at < (($2::date + 1)::timestamp at time zone $3)
     group by 1
), days as (
    select d::date as day, coalesce(s.orders, 0) as orders, coalesce(s.sales, 0) as sales
      from generate_series($1::date, $2::date, interval '1 day') as d
      left join sold s on s.day = d::date
)
select date_trunc($4, day::timestamp)::date as bucket, sum(orders)::bigint as orders,
       sum(sales)::bigint as sales
  from days
 group by 1
 order by 1
"""

Grain = Literal["day", "week", "month"]
GRAINS: tuple[Grain, ...] = get_args(Grain)


async def sales_trend(conn: Connection, *, first: dt.date, last: dt.date, tz: ZoneInfo,
                      now: dt.datetime, grain: Grain = "day",
                      ) -> list[tuple[dt.date, int, int]]:
    """(bucket, orders, sales) for each day, week (from Monday) or month of business days
    ``first`` to ``last``, inclusive, in order; a bucket is named by its first day, which for
    the first bucket may be before ``first`` (only the period's days are counted). The same
    purchases the KPIs count, for the console's trend chart."""
    if grain not in GRAINS:
        raise InvalidInput(f"grain must be one of {', '.join(GRAINS)}", field="grain")
    check_period(first, last, today=now.astimezone(tz).date())
    rows = await conn.fetch(_SALES_TREND, first, last, tz.key, grain)
    return [(row["bucket"], int(row["orders"]), int(row["sales"])) for row in rows]


async def daily_sales(conn: Connection, *, first: dt.date, last: dt.date, tz: ZoneInfo,
                      now: dt.datetime) -> list[tuple[dt.date, int, int]]:
    """(day, orders, sales) for each business day ``first`` to ``last``, inclusive."""
    return await sales_trend(conn, first=first, last=last, tz=tz, now=now, grain="day")
