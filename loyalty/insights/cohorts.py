"""Retention of monthly join cohorts: for each month's new members, how many are active at the
end of each month since they joined. Definitions: docs/analytics.md; a member's status at a past
moment is read from ``member_status_changes`` as ``loyalty.insights.kpis`` explains.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.insights.kpis import day_start, one_view, ratio
from schemas.analytics import Cohort, CohortMonth, Cohorts

MAX_COHORT_MONTHS = 120


def month_index(month: dt.date) -> int:
    return month.year * 12 + month.month - 1


def month_of(index: int) -> dt.date:
    return dt.date(index // 12, index % 12 + 1, 1)


def parse_month(text: str, field: str) -> dt.date:
    """``YYYY-MM`` as the first day of that month, or InvalidInput."""
    try:
        return dt.datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise InvalidInput(f"{field} must be a month as YYYY-MM", field=field) from None


# $1 start, $2 end, $3 the time zone. Members who joined in the period, by join month; merged
# members are left out (the record was a duplicate: the member it went into is counted).
_COHORT_SIZES = """
select date_trunc('month', joined_at at time zone $3)::date as cohort, count(*) as members
  from members
 where joined_at >= $1 and joined_at < $2 and status <> 'merged'
 group by 1
"""

# The same and $4 now. Each member's history is cut into spans of one status: from joining to
# their first change (the status that change left, or their status now), then from each change
# to the next. Active at the end of month k means an active span began before month k + 1 and
# had not ended before it: so each active span adds 1 from the month it began and takes it away
# from the month it ended. Summed per cohort, month by month, these give the active members at
# each month's end, reading each member's changes once instead of once per month. The current
# month is counted at now: a span beginning later is left out, one ending later has not ended.
_COHORT_ACTIVE_CHANGES = """
with cohort as materialized (
    select member_id, joined_at, status,
           date_trunc('month', joined_at at time zone $3)::date as cohort
      from members
     where joined_at >= $1 and joined_at < $2 and status <> 'merged'
), spans as (
    select k.cohort, k.joined_at as since, f.changed_at as until,
           coalesce(f.from_status, k.status) as status
      from cohort k
      left join lateral (
          select c.changed_at, c.from_status
            from member_status_changes c
           where c.member_id = k.member_id
           order by c.changed_at, c.change_id
           limit 1
      ) f on true
    union all
    select k.cohort, c.changed_at,
           lead(c.changed_at) over (partition by c.member_id
                                    order by c.changed_at, c.change_id),
           c.to_status
      from cohort k join member_status_changes c on c.member_id = k.member_id
), moves as (
    select cohort, date_trunc('month', since at time zone $3)::date as month, 1 as delta
      from spans where status = 'active' and since < $4
    union all
    select cohort, date_trunc('month', until at time zone $3)::date, -1
      from spans where status = 'active' and since < $4 and until < $4
)
select cohort, month, sum(delta)::bigint as delta from moves group by cohort, month
"""


async def cohorts(conn: Connection, *, first: dt.date, last: dt.date, tz: ZoneInfo,
                  now: dt.datetime) -> Cohorts:
    """Join cohorts of months ``first`` to ``last`` (first days of months): for each, its size
    and the members active at the end of each month since joining, up to the current month
    (whose figure is as of ``now``)."""
    current = month_index(now.astimezone(tz).date())
    low, high = month_index(first), month_index(last)
    if low > high:
        raise InvalidInput("from must be on or before to", field="from")
    if high > current:
        raise InvalidInput("to must not be after the current month", field="to")
    if high - low + 1 > MAX_COHORT_MONTHS:
        raise InvalidInput(f"at most {MAX_COHORT_MONTHS} cohorts at a time", field="from")
    start, end = day_start(first, tz), min(day_start(month_of(high + 1), tz), now)
    async with one_view(conn):
        sizes = {row["cohort"]: int(row["members"])
                 for row in await conn.fetch(_COHORT_SIZES, start, end, tz.key)}
        moves: dict[int, dict[int, int]] = {}
        for row in await conn.fetch(_COHORT_ACTIVE_CHANGES, start, end, tz.key, now):
            by_month = moves.setdefault(month_index(row["cohort"]), {})
            by_month[month_index(row["month"])] = int(row["delta"])
    result = []
    for index in range(low, high + 1):
        size = sizes.get(month_of(index), 0)
        changes = moves.get(index, {})
        active, retention = 0, []
        # Changes dated before the join month (none, normally) count from the first month.
        active += sum(delta for month, delta in changes.items() if month < index)
        for since in range(current - index + 1):
            active += changes.get(index + since, 0)
            retention.append(CohortMonth(months_since_join=since, active=active,
                                         share_active=ratio(active, size)))
        result.append(Cohort(month=f"{month_of(index):%Y-%m}", members=size,
                             retention=retention))
    return Cohorts(from_=f"{first:%Y-%m}", to=f"{last:%Y-%m}", as_of=now, cohorts=result)
