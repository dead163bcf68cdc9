"""The batch functions that expire lots past their expiry and release pending lots past their
return window, across all members (docs/decisions/0007-lots-returns-and-expiry.md).

A posting settles its own member's lots as of its moment whether or not these have run; they
keep balances and reports true for members who do nothing."""

from __future__ import annotations

import datetime as dt
from uuid import UUID
from zoneinfo import ZoneInfo

from loyalty.core.db import Connection
from loyalty.core.metrics import POINTS
from loyalty.core.outbox import API_VERSION
from loyalty.members.filter import may_message
from loyalty.points.batches import lock_balances

# Batches are the next members, in id order, who have something due: found without locks, then
# locked (balances, in member order like every other writer), then written from a fresh
# snapshot that re-checks what is due.
_EXPIRE_PICK = """
select distinct member_id from point_lots
 where member_id > $1 and remaining > 0 and expires_at <= $2
 order by member_id limit $3
"""

_RELEASE_PICK = """
select distinct member_id from point_lots
 where member_id > $1 and released_at is null and available_at <= $2
 order by member_id limit $3
"""

# Public: bench/scenarios.py runs this very statement bare, as the reference the job is
# measured against. $1 the members, $2 now, $3 the outbox's API_VERSION: one points.expired
# event per member, written by the statement that expires the points.
EXPIRE_LOTS = """
with due as materialized (
    select l.member_id, l.lot_id, l.remaining, l.released_at is not null as released
      from point_lots l
     where l.member_id = any($1::uuid[]) and l.remaining > 0 and l.expires_at <= $2
), per_member as materialized (
    select member_id, uuid_v7() as entry_id, sum(remaining) as total,
           coalesce(sum(remaining) filter (where released), 0) as from_available,
           coalesce(sum(remaining) filter (where not released), 0) as from_pending,
           count(*) as lots
      from due group by member_id
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, created_at)
    select member_id, entry_id, 'expire', -total, 'points expired', 'system', $2
      from per_member
), allocations as (
    insert into point_allocations (member_id, entry_id, lot_id, points)
    select d.member_id, p.entry_id, d.lot_id, -d.remaining
      from due d join per_member p on p.member_id = d.member_id
), lots as (
    update point_lots l set remaining = 0
      from due d where l.member_id = d.member_id and l.lot_id = d.lot_id
), balances as (
    update point_balances b
       set available = b.available - p.from_available,
           pending = b.pending - p.from_pending,
           lifetime_expired = b.lifetime_expired + p.total,
           version = b.version + 1,
           updated_at = $2
      from per_member p where b.member_id = p.member_id
    returning b.member_id, b.available, b.pending
), events as (
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select 'points.expired', $2, $3, p.member_id,
           jsonb_build_object('member_id', p.member_id, 'member_number', m.member_number,
                              'entry_id', p.entry_id, 'points', p.total,
                              'balance', jsonb_build_object('available', b.available,
                                                            'pending', b.pending))
      from per_member p
      join balances b on b.member_id = p.member_id
      join members m on m.member_id = p.member_id
     order by p.member_id
)
select coalesce(sum(lots), 0) as lots, coalesce(sum(total), 0) as points, count(*) as members
  from per_member
"""

_RELEASE = """
with due as materialized (
    select l.member_id, l.lot_id, l.remaining
      from point_lots l
     where l.member_id = any($1::uuid[]) and l.released_at is null and l.available_at <= $2
       and (l.expires_at is null or l.expires_at > $2)
), lots as (
    update point_lots l set released_at = $2
      from due d where l.member_id = d.member_id and l.lot_id = d.lot_id
), per_member as (
    select member_id, sum(remaining) as points, count(*) as lots from due group by member_id
), balances as (
    update point_balances b
       set available = b.available + p.points, pending = b.pending - p.points,
           version = b.version + 1, updated_at = $2
      from per_member p where b.member_id = p.member_id
)
select coalesce(sum(lots), 0) as lots, coalesce(sum(points), 0) as points, count(*) as members
  from per_member
"""


async def _in_member_batches(
    conn: Connection, pick_sql: str, write_sql: str, now: dt.datetime, batch_size: int,
    *more: object,
) -> dict[str, int]:
    totals = {"lots": 0, "points": 0, "members": 0}
    after = UUID(int=0)
    while True:
        members = [r["member_id"] for r in await conn.fetch(pick_sql, after, now, batch_size)]
        if not members:
            return totals
        async with conn.transaction():
            await lock_balances(conn, members)
            row = await conn.fetchrow(write_sql, members, now, *more)
            assert row is not None
            for name in totals:
                totals[name] += int(row[name])
        after = members[-1]


async def expire_points(
    conn: Connection, *, now: dt.datetime, batch_size: int = 5_000
) -> dict[str, int]:
    """Expire every lot past its expiry: one entry per member, allocations per lot. Batched by
    member id, each batch one transaction; running it again finds nothing left to do."""
    totals = await _in_member_batches(conn, _EXPIRE_PICK, EXPIRE_LOTS, now, batch_size,
                                      API_VERSION)
    POINTS.labels("expire").inc(totals["points"])
    return totals


async def release_points(
    conn: Connection, *, now: dt.datetime, batch_size: int = 5_000
) -> dict[str, int]:
    """Make pending points available once their return window has passed."""
    return await _in_member_batches(conn, _RELEASE_PICK, _RELEASE, now, batch_size)


# $1 now, $2 the business time zone, $3 the last expiry day to remind of, $4 the outbox's
# API_VERSION, $5 today (reminders of days before it are done with). A member's points that
# expire on one business day are one reminder, claimed in expiry_reminders by the statement that
# writes its event: a second run the same day (or the next, while the day is still ahead) finds
# the claim and writes nothing.
_REMIND_EXPIRING = f"""
with due as (
    select l.member_id, (l.expires_at at time zone $2)::date as expires_on,
           min(l.expires_at) as expires_at, sum(l.remaining) as points
      from point_lots l
     where l.remaining > 0 and l.expires_at > $1 and (l.expires_at at time zone $2)::date <= $3
     group by 1, 2
), claimed as (
    insert into expiry_reminders (member_id, expires_on, sent_at)
    select d.member_id, d.expires_on, $1
      from due d join members m on m.member_id = d.member_id
     where m.status in ('active', 'dormant', 'suspended')
     order by d.member_id, d.expires_on
    on conflict do nothing
    returning member_id, expires_on
), events as (
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select 'points.expiring_soon', $1, $4, d.member_id,
           jsonb_build_object('member_id', d.member_id, 'member_number', m.member_number,
                              'points', d.points, 'expires_on', d.expires_on,
                              'expires_at', d.expires_at, 'available', b.available,
                              'may_message', {may_message("d.member_id")})
      from claimed c
      join due d on d.member_id = c.member_id and d.expires_on = c.expires_on
      join members m on m.member_id = d.member_id
      join point_balances b on b.member_id = d.member_id
     order by d.member_id, d.expires_on
    returning 1
), done as (
    delete from expiry_reminders where expires_on < $5
)
select (select count(*) from events) as reminded, (select count(*) from due) as due
"""  # noqa: S608 - a constant consent reading over the CTE's member id


async def remind_expiring_points(
    conn: Connection, *, now: dt.datetime, tz: ZoneInfo, days_ahead: int,
) -> dict[str, int]:
    """One ``points.expiring_soon`` event per member and business day on which some of their
    points expire, from today up to ``days_ahead`` days ahead; once each, however often it
    runs. Returns the reminders written and the (member, day) pairs due."""
    today = now.astimezone(tz).date()
    row = await conn.fetchrow(_REMIND_EXPIRING, now, tz.key,
                              today + dt.timedelta(days=days_ahead), API_VERSION, today)
    assert row is not None
    return {"reminded": int(row["reminded"]), "due": int(row["due"])}
