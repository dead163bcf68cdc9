"""At risk: active members whose silence is already long for them, found before the fixed
dormancy threshold catches them, so marketing can reach them while they still answer.

A weekly shopper gone for three weeks is slipping away; a twice-a-year shopper gone for three
weeks is not. So the measure is the member's own rhythm: the median of the days between their
purchase occasions (a purchase less than a day after the previous one is the same occasion, so a
basket split over two receipts is not a habit of buying every 0 days). The median, not the mean:
one long pause (a holiday, a move) or one burst would drag a mean far from the member's habit
when they have only a handful of gaps; with gaps of 7, 7, 7 and 90 days the mean, 28, would
leave a weekly shopper unflagged for two months, the median, 7, flags them after two weeks. A
member is at risk when the whole days since their last purchase exceed ``multiple`` times that
median, and they have at least ``min_purchases`` occasions (fewer say nothing about a habit).
Purchases of members merged into them count as theirs, as RFM counts them.

Only active members are flagged: a dormant member is already past the fixed threshold and in
the reactivation campaign's hands, and suspended ones cannot buy. The flags live in
``member_at_risk`` and are rebuilt by the job in member-id batches, each one statement in one
transaction that flags, updates and clears the members of its id range: a run that stops
part-way leaves every row true as of the run that wrote it, and the next run, starting from the
first member again, completes it; a second run for the same moment changes no row.

A member who withdrew ``data_analysis`` is not flagged, and the run clears a flag an earlier run
gave them (docs/privacy.md, "Consent").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from loyalty.core.db import Connection
from loyalty.members.filter import analysis_allowed

_NO_MEMBER = UUID(int=0)

# $1 the last member id of the previous batch, $2 batch size, $3 now, $4 multiple, $5 minimum
# purchase occasions.
#
# The batch's id range is ($1, its last member], or ($1, the end) when it is the last batch:
# flags in that range are exactly the batch's members at risk afterwards, so flags of members
# who bought again, went dormant or were merged or erased are cleared by the batch that covers
# them. Purchases are read by (member_id, occurred_at) for the batch's members and those merged
# into them. Gaps are in days of 24 hours, as RFM's recency; days_since is whole days. A member
# who withdrew data_analysis is never flagged, so their batch clears their flag.
_FLAG = f"""
with batch as materialized (
    select member_id from members
     where status = 'active' and member_id > $1 order by member_id limit $2
), span as (
    select case when (select count(*) from batch) < $2 then null
                else (select member_id from batch order by member_id desc limit 1) end as last
), family as materialized (
    select member_id from batch
    union all
    select f.member_id from members f
     where f.merged_into = any(array(select member_id from batch))
), timeline as (
    select coalesce(o.merged_into, o.member_id) as member_id, p.occurred_at,
           extract(epoch from p.occurred_at - lag(p.occurred_at) over (
               partition by coalesce(o.merged_into, o.member_id) order by p.occurred_at))::float8
               / 86400 as gap_days
      from purchases p join members o on o.member_id = p.member_id
     where p.member_id = any(array(select member_id from family)) and p.occurred_at <= $3
), measured as (
    select member_id, max(occurred_at) as last_purchase_at,
           1 + count(*) filter (where gap_days >= 1) as purchases,
           percentile_cont(0.5) within group (order by gap_days)
               filter (where gap_days >= 1) as typical_interval_days
      from timeline group by member_id
), at_risk as (
    select member_id, last_purchase_at, purchases::int as purchases, typical_interval_days,
           floor(extract(epoch from $3 - last_purchase_at) / 86400)::int as days_since
      from measured
     where purchases >= $5
), flagged as materialized (
    select * from at_risk a
     where a.days_since > $4::float8 * a.typical_interval_days
       and {analysis_allowed("a.member_id")}
), upserted as (
    insert into member_at_risk as r (member_id, flagged_at, last_purchase_at, purchases,
                                     typical_interval_days, days_since, as_of)
    select member_id, $3, last_purchase_at, purchases, typical_interval_days, days_since, $3
      from flagged
    on conflict (member_id) do update
       set last_purchase_at = excluded.last_purchase_at, purchases = excluded.purchases,
           typical_interval_days = excluded.typical_interval_days,
           days_since = excluded.days_since, as_of = excluded.as_of
     where (r.last_purchase_at, r.purchases, r.typical_interval_days, r.days_since)
           is distinct from
           (excluded.last_purchase_at, excluded.purchases, excluded.typical_interval_days,
            excluded.days_since)
), cleared as (
    delete from member_at_risk r
     where r.member_id > $1 and (r.member_id <= (select last from span)
                                 or (select last from span) is null)
       and not exists (select 1 from flagged f where f.member_id = r.member_id)
    returning 1
)
select (select last from span) as last,
       (select count(*) from batch) as scanned,
       (select count(*) from flagged f
         where not exists (select 1 from member_at_risk r where r.member_id = f.member_id))
           as flagged,
       (select count(*) from cleared) as cleared
"""  # noqa: S608 - a constant consent test over the CTE's member id


async def flag_at_risk(
    conn: Connection, *, now: dt.datetime, multiple: float, min_purchases: int,
    batch_size: int = 5000,
) -> dict[str, int]:
    """Flag the active members whose days since their last purchase exceed ``multiple`` times
    their median interval between purchases, and clear the flags of those no longer at risk.
    Batched by member id, each batch its own transaction: ``conn`` should not be in one."""
    if multiple <= 0:
        raise ValueError("multiple must be positive")
    if min_purchases < 2:
        raise ValueError("min_purchases must be at least 2: one purchase has no interval")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    totals = {"members": 0, "flagged": 0, "cleared": 0}
    after = _NO_MEMBER
    while True:
        async with conn.transaction():
            row = await conn.fetchrow(_FLAG, after, batch_size, now, multiple, min_purchases)
        assert row is not None
        totals["members"] += row["scanned"]
        totals["flagged"] += row["flagged"]
        totals["cleared"] += row["cleared"]
        if row["last"] is None:
            return totals
        after = row["last"]


@dataclass(frozen=True, slots=True)
class AtRiskFlag:
    """Why the last run flagged a member: their usual days between purchases, and the days
    since their last one."""

    flagged_at: dt.datetime
    last_purchase_at: dt.datetime
    purchases: int
    typical_interval_days: float
    days_since: int


async def member_at_risk(conn: Connection, member_id: UUID) -> AtRiskFlag | None:
    """The member's at-risk flag as the last run left it, or None when not flagged."""
    row = await conn.fetchrow(
        """
        select flagged_at, last_purchase_at, purchases, typical_interval_days, days_since
          from member_at_risk where member_id = $1
        """,
        member_id)
    return AtRiskFlag(**dict(row)) if row is not None else None
