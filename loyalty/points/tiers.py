"""Tiers: which level a qualifying measure reaches, over which window, and the period-end
evaluation that moves members down (and up) to exactly what they qualify for.

Upgrades happen inside the purchase that crosses a threshold (``loyalty/points/purchases.py``),
in the same statement as its points. Downgrades happen only here, at period end, never below
what the member qualifies for: the level reached by the period just ended, or by the current
period so far, whichever is higher.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
import redis.asyncio as aioredis

from loyalty.core.cache import Cached, cache_key, database_scope, read_through
from loyalty.core.db import Connection, Pool
from loyalty.core.errors import InvalidInput
from loyalty.core.outbox import API_VERSION
from loyalty.points.earning import add_months, business_date, midnight
from loyalty.points.ledger import read_member_ledger
from loyalty.points.rules import RuleBook
from schemas.rules import MemberTier, NextTier, Tier, TierChange, TierProgramme, TierView

# -- pure ------------------------------------------------------------------------------------


def current_window_start(tiers: TierProgramme, now: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """Start of the window the measure accumulates in now: the business day after the same date
    12 months ago (rolling), or 1 January of this business year (calendar)."""
    today = business_date(now, tz)
    if tiers.period == "calendar_year":
        return midnight(dt.date(today.year, 1, 1), tz)
    return midnight(add_months(today, -12) + dt.timedelta(days=1), tz)


def previous_period(tiers: TierProgramme, now: dt.datetime,
                    tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime] | None:
    """The calendar year that ended last, for a calendar-year programme; a rolling programme
    has no previous period apart from its window."""
    if tiers.period != "calendar_year":
        return None
    year = business_date(now, tz).year
    return midnight(dt.date(year - 1, 1, 1), tz), midnight(dt.date(year, 1, 1), tz)


def tier_for(tiers: TierProgramme, measure: int) -> Tier | None:
    """The highest level whose threshold ``measure`` reaches, or None below the first."""
    reached = None
    for level in tiers.levels:
        if measure >= level.threshold:
            reached = level
    return reached


def rank(tiers: TierProgramme, code: str | None) -> int:
    """0 for no tier, 1 for the lowest level... a code no longer in the programme is 0."""
    for index, level in enumerate(tiers.levels, start=1):
        if level.code == code:
            return index
    return 0


# -- measures in SQL -------------------------------------------------------------------------

# The qualifying measure of member $1 (and of members merged into them) from $2 to $3, summed
# member by member of that family: each member's rows are found by index on their own
# member_id (an ``or`` of two conditions on member_id would not be), and so in one partition or
# shard of a table distributed by member_id (``= any(array(...))`` would ask every one;
# docs/scaling.md, "Rehearsal: hash-partitioned by member_id").
_FAMILY = """(select {member}::uuid union all
                  select mm.member_id from members mm where mm.merged_into = {member})
               as family (member_id)"""

SPEND_SQL = """
coalesce((select sum(x.spend) from """ + _FAMILY + """, lateral (
            select sum(p.total - p.returned_amount) as spend from purchases p
             where p.member_id = family.member_id
               and p.occurred_at >= {start} and p.occurred_at < {end}) x), 0)"""  # noqa: S608 - format() slots take $n placeholders or column names from the callers

# Points earned by purchases and engagement; bulk grants (campaign bonuses, goodwill) are
# given, not earned, and do not qualify.
POINTS_SQL = """
coalesce((select sum(x.points) from """ + _FAMILY + """, lateral (
            select sum(e.amount) as points from point_entries e
             where e.member_id = family.member_id
               and e.created_at >= {start} and e.created_at < {end} and e.grant_id is null
               and (e.kind = 'earn' or (e.kind = 'reverse' and e.amount < 0))) x), 0)"""  # noqa: S608 - format() slots take $n placeholders or column names from the callers


def measure_sql(tiers: TierProgramme, member: str, start: str, end: str) -> str:
    """The qualifying measure as an SQL expression, for the period-end evaluation here and for
    the purchase's ledger read (loyalty/points/purchases.py), so the two count alike. The
    arguments are SQL (a column, parameter placeholders), never values."""
    template = SPEND_SQL if tiers.measure == "spend" else POINTS_SQL
    return template.format(member=member, start=start, end=end)


# -- evaluation at period end ----------------------------------------------------------------

# A batch is locked first (balances, member order), then measured from a fresh snapshot, so a
# purchase cannot upgrade a member between the measure and the update.
_LOCK_BATCH = """
select member_id from point_balances where member_id > $1 order by member_id limit $2
   for update
"""

_EVALUATE = """
with batch as (
    select b.member_id, b.tier from point_balances b where b.member_id = any($1::uuid[])
), measured as (
    select batch.member_id, batch.tier, {current} as current_measure,
           {previous} as previous_measure
      from batch
), qualified as (
    select member_id, tier, current_measure, previous_measure,
           (select t.code from unnest($4::text[], $5::int8[]) as t(code, threshold)
             where t.threshold <= greatest(current_measure, previous_measure)
             order by t.threshold desc limit 1) as new_tier
      from measured
), changed as (
    update point_balances b
       set tier = q.new_tier, tier_since = $6, version = b.version + 1, updated_at = $6
      from qualified q
     where b.member_id = q.member_id and b.tier is distinct from q.new_tier
    returning b.member_id, q.tier as from_tier, q.new_tier as to_tier,
              greatest(q.current_measure, q.previous_measure) as measure
), history as (
    insert into member_tiers (member_id, change_id, from_tier, to_tier, reason, measure,
                              changed_at)
    select member_id, uuid_v7(), from_tier, to_tier, 'period-end evaluation', measure, $6
      from changed
    returning member_id, change_id, from_tier, to_tier, reason, measure
), events as (
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select 'tier.changed', $6, $7, h.member_id,
           jsonb_build_object('member_id', h.member_id, 'member_number', m.member_number,
                              'change_id', h.change_id, 'from_tier', h.from_tier,
                              'to_tier', h.to_tier, 'reason', h.reason, 'measure', h.measure,
                              'coupon_id', null)
      from history h join members m on m.member_id = h.member_id
     order by h.member_id
)
select count(*) as changed from changed
"""


async def evaluate_tiers(
    conn: Connection, *, rulebook: RuleBook, now: dt.datetime, tz: ZoneInfo,
    batch_size: int = 5_000,
) -> dict[str, int]:
    """Set every member's tier to exactly what they qualify for at ``now``: the higher of the
    level reached in the period just ended (calendar programmes) and in the current window so
    far. Idempotent: run twice on the same day, the second run changes nothing. Batched by
    member id, each batch one transaction; balances are locked by the update, in member order."""
    current = await conn.fetchval("select coalesce(max(version), 0) from earning_rule_versions")
    _, rules = await rulebook.at(conn, current)
    tiers = rules.tiers
    start = current_window_start(tiers, now, tz)
    previous = previous_period(tiers, now, tz)
    sql = _EVALUATE.format(
        current=measure_sql(tiers, "batch.member_id", "$2", "$3"),
        previous=measure_sql(tiers, "batch.member_id", "$8", "$9") if previous else "0",
    )
    codes = [level.code for level in tiers.levels]
    thresholds = [level.threshold for level in tiers.levels]
    totals = {"members": 0, "changed": 0}
    after = UUID(int=0)
    previous_args = (previous[0], previous[1]) if previous else ()
    while True:
        async with conn.transaction():
            members = [r["member_id"] for r in await conn.fetch(_LOCK_BATCH, after, batch_size)]
            if not members:
                return totals
            changed = await conn.fetchval(sql, members, start, now, codes, thresholds, now,
                                          API_VERSION, *previous_args)
        totals["members"] += len(members)
        totals["changed"] += int(changed)
        after = members[-1]


# -- reading ---------------------------------------------------------------------------------


async def members_per_tier(conn: Connection) -> dict[str | None, int]:
    """How many members hold each tier code now (None: no tier yet). Merged members are
    counted in the member they were merged into, and erased ones are no longer counted."""
    rows = await conn.fetch(
        """
        select b.tier, count(*) as members
          from point_balances b join members m on m.member_id = b.member_id
         where m.status not in ('merged', 'erased')
         group by b.tier
        """)
    return {row["tier"]: int(row["members"]) for row in rows}


# The tiers page's counts are kept this long before being counted again behind the page: at
# 1,000,000 members the count reads every balance (0.5 s).
TIER_COUNTS_FRESH_SECONDS = 300


async def kept_members_per_tier(redis: aioredis.Redis,
                                pool: Pool) -> Cached[dict[str | None, int]]:
    """``members_per_tier`` as last counted, at most a few minutes ago (loyalty.core.cache),
    with the moment it was counted."""

    async def count() -> list[tuple[str | None, int]]:
        async with pool.acquire() as conn:
            return list((await members_per_tier(conn)).items())

    key = cache_key(await database_scope(pool), "members per tier", 1)
    kept = await read_through(redis, key, count,
                              list[tuple[str | None, int]], ttl_seconds=86_400,
                              fresh_seconds=TIER_COUNTS_FRESH_SECONDS)
    return Cached(value=dict(kept.value), computed_at=kept.computed_at)


async def check_tier_coupons(conn: Connection, tiers: TierProgramme) -> None:
    """Every coupon a tier grants must name an active template."""
    wanted = [level.coupon_template_id for level in tiers.levels if level.coupon_template_id]
    if not wanted:
        return
    active = {row["template_id"] for row in await conn.fetch(
        "select template_id from coupon_templates where template_id = any($1::uuid[])"
        " and active", wanted)}
    for index, level in enumerate(tiers.levels):
        if level.coupon_template_id and level.coupon_template_id not in active:
            raise InvalidInput(f"tier {level.code}: no active coupon template "
                               f"{level.coupon_template_id}",
                               field=f"levels[{index}].coupon_template_id",
                               code="coupon_template_not_found")


async def member_tier(
    conn: Connection, member_id: UUID, *, rulebook: RuleBook, tz: ZoneInfo, now: dt.datetime,
) -> MemberTier:
    """The member's tier, the measure so far in the current window, and the next level."""
    ledger = await read_member_ledger(conn, member_id)
    _, rules = await rulebook.at(conn, ledger.rules_version)
    tiers = rules.tiers
    start = current_window_start(tiers, now, tz)
    measure = int(await conn.fetchval(
        "select " + measure_sql(tiers, "$1::uuid", "$2", "$3"), ledger.member_id, start, now))
    rows = await conn.fetch(
        """
        select from_tier, to_tier, reason, measure, changed_at from member_tiers
         where member_id = $1 order by changed_at desc, change_id desc limit 50
        """,
        ledger.member_id)
    current = next((t for t in tiers.levels if t.code == ledger.tier), None)
    upcoming = next((t for t in tiers.levels
                     if rank(tiers, t.code) > rank(tiers, ledger.tier)
                     and t.threshold > measure), None)
    return MemberTier(
        tier=TierView(code=current.code, name=current.name,
                      multiplier_percent=current.multiplier_percent) if current else None,
        since=ledger.tier_since if current else None, measure=measure,
        measure_kind=tiers.measure, period=tiers.period, window_start=start,
        next=NextTier(code=upcoming.code, name=upcoming.name, threshold=upcoming.threshold,
                      remaining=upcoming.threshold - measure) if upcoming else None,
        history=[msgspec.convert(dict(row), TierChange) for row in rows],
    )
