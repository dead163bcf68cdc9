"""RFM scores: recency, frequency and monetary value of every member who has purchased, scored 1
to 5 by quintile (5 the best), recomputed in one statement by the scheduled job and
``loyalty rfm refresh``; segments select on the stored scores."""

from __future__ import annotations

import datetime as dt

from loyalty.core.db import Connection

# Two refreshes at once would only repeat each other's work; the second waits for the first.
RFM_LOCK_KEY = 0x52464D5F52454652  # "RFM_REFR"

# $1 now, $2 start of the window, $3 window in days.
#
# A purchase counts for the member it belongs to now: a merged member's for the member they were
# merged into (as the tier measure counts them). Members qualify with a purchase up to ``now``,
# ever, if active or dormant. Score of a measure ranked r (ties share the lowest rank) among n
# members, ordered worst first: 1 + floor(5 (r - 1) / (n - 1)), at most 5 (the best alone would
# be 6), in integers so equal measures always score the same and no float rounding moves a
# boundary; a member alone scores 1.
_REFRESH = """
with owned as (
    select coalesce(o.merged_into, o.member_id) as member_id, p.occurred_at,
           p.total - p.returned_amount as spend
      from purchases p join members o on o.member_id = p.member_id
     where p.occurred_at <= $1
), measured as (
    select w.member_id, max(w.occurred_at) as last_purchase_at,
           count(*) filter (where w.occurred_at >= $2) as frequency,
           coalesce(sum(w.spend) filter (where w.occurred_at >= $2), 0) as monetary
      from owned w join members m on m.member_id = w.member_id
     where m.status in ('active', 'dormant')
     group by w.member_id
), aged as (
    select member_id, last_purchase_at, frequency::int as frequency,
           monetary::bigint as monetary,
           floor(extract(epoch from $1 - last_purchase_at) / 86400)::int as recency_days
      from measured
), ranked as (
    select *, count(*) over () as n,
           rank() over (order by recency_days desc) as recency_rank,
           rank() over (order by frequency) as frequency_rank,
           rank() over (order by monetary) as monetary_rank
      from aged
), scored as (
    select member_id, last_purchase_at, recency_days, frequency, monetary,
           least(5, case when n = 1 then 1 else 1 + 5 * (recency_rank - 1) / (n - 1) end)
               ::smallint as recency_score,
           least(5, case when n = 1 then 1 else 1 + 5 * (frequency_rank - 1) / (n - 1) end)
               ::smallint as frequency_score,
           least(5, case when n = 1 then 1 else 1 + 5 * (monetary_rank - 1) / (n - 1) end)
               ::smallint as monetary_score
      from ranked
), upserted as (
    insert into member_rfm as r (member_id, last_purchase_at, recency_days, frequency, monetary,
                                 recency_score, frequency_score, monetary_score, window_days,
                                 computed_at)
    select member_id, last_purchase_at, recency_days, frequency, monetary,
           recency_score, frequency_score, monetary_score, $3, $1
      from scored
    on conflict (member_id) do update
       set last_purchase_at = excluded.last_purchase_at, recency_days = excluded.recency_days,
           frequency = excluded.frequency, monetary = excluded.monetary,
           recency_score = excluded.recency_score, frequency_score = excluded.frequency_score,
           monetary_score = excluded.monetary_score, window_days = excluded.window_days,
           computed_at = excluded.computed_at
     where (r.last_purchase_at, r.recency_days, r.frequency, r.monetary, r.recency_score,
            r.frequency_score, r.monetary_score, r.window_days, r.computed_at)
           is distinct from
           (excluded.last_purchase_at, excluded.recency_days, excluded.frequency,
            excluded.monetary, excluded.recency_score, excluded.frequency_score,
            excluded.monetary_score, excluded.window_days, excluded.computed_at)
    returning 1
), removed as (
    delete from member_rfm r
     where not exists (select 1 from scored s where s.member_id = r.member_id)
    returning 1
)
select (select count(*) from scored) as members, (select count(*) from upserted) as changed,
       (select count(*) from removed) as removed
"""


async def refresh_rfm(conn: Connection, *, now: dt.datetime, window_days: int) -> dict[str, int]:
    """Score every member who has purchased (active or dormant) as of ``now`` over the last
    ``window_days`` days, and drop the rows of members who no longer qualify. Idempotent: run
    twice with one ``now``, the second run changes no row."""
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    start = now - dt.timedelta(days=window_days)
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", RFM_LOCK_KEY)
        row = await conn.fetchrow(_REFRESH, now, start, window_days)
    assert row is not None
    return {"members": row["members"], "changed": row["changed"], "removed": row["removed"]}
