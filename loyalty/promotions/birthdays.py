"""Birthday rewards: on a member's birthday in the programme's business time zone, points and/or a
coupon, once per member per year, given by the daily ``birthday_rewards`` job.

Who: members with a birth date, active or dormant. A birthday gift is a classic win-back touch,
so dormant members get it too; it does not make them active (only their own purchase or action
does, so a reactivation is never credited to a gift they did nothing for). Suspended, erased and
merged members get nothing. A member gets the gift for a birthday they were a member on: one who
joins a few days after their birthday waits for the next one.

When: 29 February is celebrated on 28 February in common years, the last day of the month it
belongs to, so the gift comes in the right month (the earning rules' birthday-month bonus and
any birthday-month campaign agree) rather than spilling into March. A run gives every birthday
from ``LOOK_BACK_DAYS`` days before today up to today that has not been rewarded yet: a
scheduler down over a long weekend or a week's outage loses no one, while a week is still close
enough to the day for a birthday greeting, and the daily run reads a week of calendar days, not
every member.

Exactly once: a ``birthday_rewards`` row per member and year, inserted by the same statement that
writes the points (one ``earn`` entry, a lot expiring per the earning rules in force, the balance
with its version raised as every ledger writer does), so its primary key is what makes a second
gift impossible however often the job runs, or two run at once. Members come in member-id
batches, each one transaction: the batch's balances locked in member order (as bulk grants lock
them, docs/decisions/0005-ledger-concurrency.md), then the rows and points in one statement, then
the coupons (``loyalty.promotions.coupon_wallet.issue_to_members``, under one issue id per
year, so the wallet's own unique key also allows one birthday coupon per member per year). A run
that stops part-way has committed whole batches; the next run finds the members still due and
finishes.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

import asyncpg

from loyalty.core.db import Connection
from loyalty.core.outbox import API_VERSION
from loyalty.core.programme import Programme
from loyalty.members.filter import MemberFilter
from loyalty.points.batches import credit_lots_and_balances, earned_events, lock_balances
from loyalty.points.earning import business_date, expires_at
from loyalty.points.rules import RuleBook
from loyalty.promotions.coupon_wallet import issue_to_members

log = logging.getLogger(__name__)

LOOK_BACK_DAYS = 7
_NO_MEMBER = UUID(int=0)
# Birthday coupons of one year share an issue id, derived from the year.
_ISSUE_NAMESPACE = UUID("0196a3c4-8d2e-7b41-9f0a-5b1c2d3e4f60")

@dataclass(frozen=True)
class BirthdayDay:
    """A calendar day birthdays are celebrated on: members born on (``month``, ``day``), in
    ``year``."""

    month: int
    day: int
    year: int
    celebrated_on: dt.date


def celebrated_on(birth_date: dt.date, year: int) -> dt.date:
    """The day a birthday falls on in ``year``: 29 February on 28 February in common years."""
    try:
        return birth_date.replace(year=year)
    except ValueError:
        return dt.date(year, 2, 28)


def birthdays_due(today: dt.date, look_back_days: int = LOOK_BACK_DAYS) -> list[BirthdayDay]:
    """The birthdays a run on ``today`` rewards: those celebrated from ``look_back_days`` days
    before today up to today, each in the year it falls in (a run on 2 January still gives 30
    December's birthdays, for the year before)."""
    due = []
    for back in range(look_back_days, -1, -1):
        day = today - dt.timedelta(days=back)
        due.append(BirthdayDay(day.month, day.day, day.year, day))
        if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
            due.append(BirthdayDay(2, 29, day.year, day))
    return due


# The members' birthday as a day of the year, as the index members_birthday has it.
_BIRTHDAY = "(extract(month from m.birth_date) * 100 + extract(day from m.birth_date))::int"

# The days due: $2 day of the year (month * 100 + day), $3 its year, $4 the day celebrated, $5
# the end of that business day (members who joined by then have the birthday).
_DAYS = """
with days as (
    select * from unnest($2::int[], $3::int[], $4::date[], $5::timestamptz[])
             as d(birthday, year, celebrated_on, day_ends)
)"""

# $1 the last member id of the previous batch, $6 batch size. Found without locks; the write
# checks again from a snapshot taken after them. The second test of the birthday (against the
# array) is what lets the planner read members_birthday rather than every member.
_PICK = _DAYS + f"""
select m.member_id from members m join days d on {_BIRTHDAY} = d.birthday
 where {_BIRTHDAY} = any($2::int[]) and m.member_id > $1 and m.birth_date is not null
   and m.status in ('active', 'dormant')
   and m.joined_at < d.day_ends
   and not exists (select 1 from birthday_rewards r
                    where r.member_id = m.member_id and r.year = d.year)
 order by m.member_id limit $6
"""  # noqa: S608 - constant snippets of this module

# $1 the batch's members whose balance is locked, $6 now, $7 points (0: none), $8 the rule
# version, $9 when the lots expire, $10 the outbox's API_VERSION (points.earned per member
# credited). A member rewarded meanwhile for that year is left out by the primary key, and gets
# no points either: only the rows inserted here are written to.
_REWARD = _DAYS + f"""
, due as materialized (
    select m.member_id, d.year, d.celebrated_on, uuid_v7() as entry_id, uuid_v7() as lot_id
      from members m join days d on {_BIRTHDAY} = d.birthday
     where m.member_id = any($1::uuid[]) and m.birth_date is not null
       and m.status in ('active', 'dormant') and m.joined_at < d.day_ends
), rewarded as (
    insert into birthday_rewards (member_id, year, birthday, rewarded_at, points, entry_id)
    select member_id, year, celebrated_on, $6, $7::bigint,
           case when $7::bigint > 0 then entry_id end
      from due
    on conflict (member_id, year) do nothing
    returning member_id, year, entry_id
), credited as materialized (
    select r.member_id, r.year, r.entry_id, d.lot_id
      from rewarded r join due d on d.member_id = r.member_id
     where r.entry_id is not null
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, rule_version,
                               created_at)
    select member_id, entry_id, 'earn', $7, 'birthday reward ' || year, 'system', $8, $6
      from credited
){credit_lots_and_balances(due="credited", members="$1::uuid[]", points="$7", now="$6",
                           expires="$9")}{earned_events(due="credited", points="$7::int8",
                                                        now="$6", expires="$9::timestamptz",
                                                        source="'birthday'",
                                                        reason="'birthday reward ' || d.year",
                                                        api_version="$10::text")}
select member_id, year from rewarded order by member_id
"""  # noqa: S608 - constant snippets and batch SQL, values as parameters

_RECORD_COUPONS = """
update birthday_rewards r set coupon_id = c.coupon_id
  from member_coupons c
 where r.member_id = any($1::uuid[]) and r.year = $2
   and c.member_id = r.member_id and c.issue_id = $3
"""


def birthday_issue_id(year: int) -> UUID:
    """The issue id of ``year``'s birthday coupons."""
    return uuid5(_ISSUE_NAMESPACE, f"birthday {year}")


async def give_birthday_rewards(
    conn: Connection, *, now: dt.datetime, tz: ZoneInfo, points: int,
    coupon_template_id: UUID | None, rulebook: RuleBook, programme: Programme,
    batch_size: int = 5000,
) -> dict[str, int]:
    """Give ``points`` and/or a coupon of ``coupon_template_id`` to every active or dormant
    member whose birthday (in ``tz``) is today or up to ``LOOK_BACK_DAYS`` days before and who
    has had no birthday reward this year. Batched by member id, each batch its own transaction:
    ``conn`` should not be in one. Returns the members rewarded, points given, coupons issued."""
    if points < 0:
        raise ValueError("points must not be negative")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    totals = {"members": 0, "points": 0, "coupons": 0}
    if points == 0 and coupon_template_id is None:
        log.info("birthday rewards are off: no points and no coupon template configured")
        return totals
    version, rules = await rulebook.at(
        conn, await conn.fetchval("select coalesce(max(version), 0) from earning_rule_versions"))
    expiry = expires_at(rules.expiry, now, programme.timezone) if points > 0 else None
    due = birthdays_due(business_date(now, tz))
    days = ([d.month * 100 + d.day for d in due], [d.year for d in due],
            [d.celebrated_on for d in due],
            [dt.datetime.combine(d.celebrated_on + dt.timedelta(days=1), dt.time(), tzinfo=tz)
             for d in due])
    after = _NO_MEMBER
    while True:
        picked = [r["member_id"] for r in await conn.fetch(_PICK, after, *days, batch_size)]
        if not picked:
            return totals
        async with conn.transaction():
            locked = await lock_balances(conn, picked)
            rewarded = await conn.fetch(_REWARD, locked, *days, now, points, version, expiry,
                                        API_VERSION)
            totals["members"] += len(rewarded)
            totals["points"] += points * len(rewarded)
            if coupon_template_id is not None and rewarded:
                totals["coupons"] += await _issue_coupons(
                    conn, rewarded, template_id=coupon_template_id, now=now, tz=tz)
        after = picked[-1]


async def _issue_coupons(conn: Connection, rewarded: Sequence[asyncpg.Record], *,
                         template_id: UUID, now: dt.datetime, tz: ZoneInfo) -> int:
    """Within the batch's transaction: the coupons of the members just rewarded, by year (a run
    early in January may reward some for the year before), each recorded on their reward."""
    by_year: dict[int, list[UUID]] = defaultdict(list)
    for row in rewarded:
        by_year[row["year"]].append(row["member_id"])
    issued = 0
    for year, members in sorted(by_year.items()):
        issue_id = birthday_issue_id(year)
        count, _ = await issue_to_members(
            conn, template_id=template_id, member_filter=MemberFilter.members(members),
            issue_id=issue_id, source="birthday", campaign_id=None, now=now, tz=tz.key)
        await conn.execute(_RECORD_COUPONS, members, year, issue_id)
        issued += count
    return issued
