"""A member's status history as it happened: rebuilt from the activity on record when that
activity arrives after the fact (an import of past members or purchases), as the nightly
dormancy job (``loyalty.insights.dormancy``) and the reactivation trigger (migrations 0010,
0025) would have written it had the activity arrived live."""

from __future__ import annotations

import datetime as dt
from uuid import UUID
from zoneinfo import ZoneInfo

from loyalty.core.db import Connection
from loyalty.core.outbox import API_VERSION

# $1 members, $2 since when each one's history is to be rebuilt (their earliest new activity:
# an imported purchase, or joining), $3 now, $4 the time zone, $5 the dormancy days, $6 the
# reason of a reactivation, $7 the outbox's API_VERSION.
#
# Status at a moment depends only on the activity before it, so the history before ``since``
# stands; from ``since`` on it is recomputed from the activity on record (purchases, actions, and
# the last activity, which covers check-ins): after each activity the member is dormant at the
# start of business day L + N + 1 (the first moment the nightly job would have flagged them,
# ``dormancy_cutoff``) unless they were active again before, and active again at the activity
# that ended the gap. Rows that the new history also has are kept (with the wave they were
# handed to); the other active/dormant rows from ``since`` on go. Members suspended, merged or
# erased are left alone. The member's status is the history's last, with one
# member.status_changed event if it differs from what it was.
_REBUILD = """
with targets as materialized (
    select t.member_id, t.since, m.status, m.status_changed_at, m.member_number
      from unnest($1::uuid[], $2::timestamptz[]) as t(member_id, since)
      join members m on m.member_id = t.member_id
     where m.status in ('active', 'dormant')
), before as materialized (
    select t.member_id, t.since, t.status as status_now, t.status_changed_at,
           t.member_number,
           -- Only the active/dormant history is rebuilt: a stretch of suspension before
           -- ``since`` does not make one now.
           case when coalesce(b.to_status, a.from_status) in ('active', 'dormant')
                then coalesce(b.to_status, a.from_status) else t.status end as status,
           case when b.to_status = 'dormant' then b.changed_at end as dormant_since
      from targets t
      left join lateral (
          select c.to_status, c.changed_at from member_status_changes c
           where c.member_id = t.member_id and c.changed_at < t.since
           order by c.changed_at desc, c.change_id desc limit 1) b on true
      left join lateral (
          select c.from_status from member_status_changes c
           where c.member_id = t.member_id and c.changed_at >= t.since
           order by c.changed_at, c.change_id limit 1) a on true
), activity as (
    select t.member_id, x.at
      from targets t
     cross join lateral (
          select p.occurred_at as at from purchases p
           where p.member_id = t.member_id and p.occurred_at >= t.since
             and p.occurred_at <= $3
          union
          select a.recorded_at from member_actions a
           where a.member_id = t.member_id and a.recorded_at >= t.since
             and a.recorded_at <= $3
          union
          select m.last_activity_at from members m
           where m.member_id = t.member_id and m.last_activity_at >= t.since
             and m.last_activity_at <= $3
     ) x
), gaps as (
    select member_id, at, lead(at) over (partition by member_id order by at) as next,
           (((at at time zone $4)::date + $5::int + 1)::timestamp at time zone $4)
               as dormant_at
      from activity
), changes as materialized (
    select member_id, since as changed_at, 'dormant' as from_status, 'active' as to_status,
           $6::text as reason, dormant_since
      from before where status = 'dormant'
    union all
    select member_id, dormant_at, 'active', 'dormant', 'inactivity', null
      from gaps where dormant_at <= coalesce(next, $3)
    union all
    select member_id, next, 'dormant', 'active', $6, dormant_at
      from gaps where next is not null and dormant_at <= next
), credited as (
    -- A reactivation is credited to the latest campaign that treated the member while dormant
    -- (as the trigger of migration 0010 credits one).
    select n.*, (select c.campaign_id
                   from campaign_members cm join campaigns c on c.campaign_id = cm.campaign_id
                  where n.to_status = 'active' and cm.member_id = n.member_id
                    and cm.arm = 'treated' and c.launched_at >= n.dormant_since
                    and c.launched_at <= n.changed_at
                  order by c.launched_at desc, c.campaign_id desc
                  limit 1) as campaign_id
      from changes n
), removed as (
    delete from member_status_changes c
     using targets t
     where c.member_id = t.member_id and c.changed_at >= t.since
       and (c.from_status, c.to_status) in (('active', 'dormant'), ('dormant', 'active'))
       and not exists (select 1 from changes n
                        where n.member_id = c.member_id and n.changed_at = c.changed_at
                          and n.to_status = c.to_status)
    returning 1
), added as (
    insert into member_status_changes (member_id, changed_at, from_status, to_status, reason,
                                       campaign_id)
    select n.member_id, n.changed_at, n.from_status, n.to_status, n.reason, n.campaign_id
      from credited n
     where not exists (select 1 from member_status_changes c
                        where c.member_id = n.member_id and c.changed_at = n.changed_at
                          and c.to_status = n.to_status)
     -- A purchase at the very moment a dormancy begins: flagged first, then active again.
     order by n.member_id, n.changed_at, n.to_status = 'active'
    returning 1
), final as (
    select b.member_id, b.member_number, b.status_now,
           coalesce(l.to_status, b.status) as status,
           coalesce(l.changed_at, case when b.status = b.status_now then b.status_changed_at
                                       else b.since end) as changed_at,
           l.reason, l.campaign_id
      from before b
      left join lateral (
          select n.to_status, n.changed_at, n.reason, n.campaign_id from credited n
           where n.member_id = b.member_id
           order by n.changed_at desc, n.to_status = 'active' desc limit 1) l on true
), updated as (
    update members m set status = f.status, status_changed_at = f.changed_at, updated_at = $3
      from final f
     where m.member_id = f.member_id
       and (m.status, m.status_changed_at) is distinct from (f.status, f.changed_at)
    returning m.member_id
), events as (
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select 'member.status_changed', f.changed_at, $7, f.member_id,
           jsonb_build_object('member_id', f.member_id, 'member_number', f.member_number,
                              'from_status', f.status_now, 'to_status', f.status,
                              'reason', coalesce(f.reason, $6), 'changed_at', f.changed_at,
                              'campaign_id', f.campaign_id)
      from final f
     where f.status <> f.status_now
     order by f.member_id
    returning 1
)
select (select count(*) from targets) as members, (select count(*) from added) as added,
       (select count(*) from removed) as removed, (select count(*) from updated) as updated,
       (select count(*) from events) as events
"""


async def rebuild_status_history(
    conn: Connection, since: dict[UUID, dt.datetime], *, now: dt.datetime, tz: ZoneInfo,
    days: int, reason: str,
) -> dict[str, int]:
    """Rewrite the active/dormant history of each member in ``since`` from that moment on, as
    the nightly dormancy job and the reactivation trigger would have written it had the
    activity on record arrived live; set their status to its outcome. Within the caller's
    transaction. Returns the members, rows added and removed, members updated, events."""
    if not since:
        return {"members": 0, "added": 0, "removed": 0, "updated": 0, "events": 0}
    async with conn.transaction():
        await conn.execute("select set_config('loyalty.status_recorded', 'on', true)")
        row = await conn.fetchrow(_REBUILD, list(since), list(since.values()), now, tz.key,
                                  days, reason, API_VERSION)
        await conn.execute("select set_config('loyalty.status_recorded', '', true)")
    assert row is not None
    return {name: int(row[name]) for name in ("members", "added", "removed", "updated",
                                              "events")}
