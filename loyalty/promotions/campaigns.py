"""Campaigns: an audience, an action, a schedule, a budget cap and a random holdout, launched
set-based and exactly once, and measured honestly against the holdout.

Launching is three steps, each safe to repeat: (1) in one transaction, the audience is
evaluated and every member assigned to the treated or the control group (``campaign_members``,
one row per member and campaign); (2) treated members with the campaign's consent are marked
as messaged; (3) the action is carried out for the treated group with statements that are
idempotent by construction (one coupon per member per issue, one grant entry per member, one
invitation per member and event). If a launch stops part-way, launching again finishes it;
launching a launched campaign does nothing (docs/decisions/0009-campaigns.md).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.outbox import API_VERSION
from loyalty.core.paging import newest_first
from loyalty.core.programme import Programme
from loyalty.members.filter import REACHABLE, MemberFilter
from loyalty.points.grants import create_grant, run_grant
from loyalty.points.rules import RuleBook
from loyalty.promotions.coupon_wallet import issue_to_members
from loyalty.promotions.segments import segment_filter
from loyalty.promotions.store_events import invite_members
from schemas.base import Page
from schemas.campaigns import (
    Action,
    Arm,
    BonusPoints,
    Campaign,
    CampaignCreate,
    CampaignResults,
    Difference,
    EventInvitation,
    IssueCoupon,
    PointsMultiplier,
)
from schemas.grants import CampaignGrantTarget

_COLUMNS = """
    campaign_id, name, description, action, segment_id, cardinality(member_list) as members_listed,
    starts_at, ends_at, holdout_percent, max_members, channel, status, launched_at, eligible,
    treated, control, messaged, actioned, template_id, created_at
"""


def _campaign(row: Any) -> Campaign:
    return msgspec.convert(dict(row), Campaign)


def _not_found() -> NotFound:
    return NotFound("no such campaign", field="campaign_id", code="campaign_not_found")


def treated_group(campaign_id: UUID) -> MemberFilter:
    """The members a campaign treats."""
    return MemberFilter(
        "exists (select 1 from campaign_members cm where cm.campaign_id = $?"
        " and cm.member_id = m.member_id and cm.arm = 'treated')", (campaign_id,))


# -- making and reading ----------------------------------------------------------------------


async def _check_action(conn: Connection, action: Action) -> None:
    match action:
        case IssueCoupon(template_id=template_id):
            active = await conn.fetchval(
                "select active from coupon_templates where template_id = $1", template_id)
            if not active:
                raise InvalidInput("no active coupon template with this id",
                                   field="action.template_id", code="coupon_template_not_found")
        case EventInvitation(event_id=event_id):
            status = await conn.fetchval("select status from events where event_id = $1",
                                         event_id)
            if status != "scheduled":
                raise InvalidInput("no scheduled event with this id", field="action.event_id",
                                   code="event_not_found")
        case BonusPoints() | PointsMultiplier():
            pass


async def create_campaign(
    conn: Connection, data: CampaignCreate, *, staff_id: UUID | None,
) -> Campaign:
    """A draft campaign: nothing happens to anyone until it is launched."""
    await _check_action(conn, data.action)
    if data.segment_id is not None:
        exists = await conn.fetchval("select 1 from segments where segment_id = $1",
                                     data.segment_id)
        if not exists:
            raise InvalidInput("no such segment", field="segment_id", code="segment_not_found")
    name = data.name.strip()
    if not name:
        raise InvalidInput("name must not be blank", field="name")
    row = await conn.fetchrow(
        f"""
        insert into campaigns (name, description, segment_id, member_list, action, starts_at,
                               ends_at, holdout_percent, max_members, channel, created_by)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        returning {_COLUMNS}
        """,  # noqa: S608 - a module constant column list
        name, data.description.strip(), data.segment_id,
        sorted(set(data.members)) if data.members is not None else None,
        msgspec.to_builtins(data.action), data.starts_at, data.ends_at, data.holdout_percent,
        data.max_members, data.channel, staff_id)
    return _campaign(row)


async def get_campaign(conn: Connection, campaign_id: UUID) -> Campaign:
    row = await conn.fetchrow(f"select {_COLUMNS} from campaigns where campaign_id = $1",  # noqa: S608 - a module constant column list
                              campaign_id)
    if row is None:
        raise _not_found()
    return _campaign(row)


async def list_campaigns(conn: Connection, *, limit: int, cursor: str | None) -> Page[Campaign]:
    """Campaigns, newest first."""
    return await newest_first(conn, table="campaigns", key="campaign_id", columns=_COLUMNS,
                              item=_campaign, limit=limit, cursor=cursor)


# -- reach -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reach:
    """How many members a campaign acts on: ``eligible`` in its audience, of whom ``treated``
    get the action and ``control`` are held out."""

    eligible: int
    treated: int
    control: int


# The plan of _ASSIGN without writing it: the audience counted, the budget cap's sample taken,
# the holdout's share of it rounded as _ASSIGN rounds it.
_REACH = """
with plan as (
    select count(*) as total,
           case when $2::bigint is null then count(*)
                else least(count(*), floor($2 * 100.0 / (100 - $1)))::bigint end as sample
      from members m
     where {audience}
)
select total as eligible, round(sample * $1 / 100.0)::bigint as control,
       sample - round(sample * $1 / 100.0)::bigint as treated
  from plan
"""


async def campaign_reach(conn: Connection, campaign_id: UUID, *, now: dt.datetime) -> Reach:
    """The groups launching the campaign at ``now`` would make (its audience as a launch then
    evaluates it: the segment's or the list's reachable members, the budget cap and the holdout
    applied as the launch applies them); once launched, the groups it made."""
    row = await conn.fetchrow(
        "select status, segment_id, member_list, holdout_percent, max_members, eligible,"
        " treated, control from campaigns where campaign_id = $1", campaign_id)
    if row is None:
        raise _not_found()
    if row["status"] in ("launching", "launched"):
        return Reach(eligible=row["eligible"] or 0, treated=row["treated"] or 0,
                     control=row["control"] or 0)
    if row["segment_id"] is not None:
        audience = await segment_filter(conn, row["segment_id"], now=now)
    else:
        audience = MemberFilter.members(row["member_list"])
    audience = audience & REACHABLE
    counts = await conn.fetchrow(_REACH.format(audience=audience.render(3)),
                                 row["holdout_percent"], row["max_members"], *audience.params)
    assert counts is not None
    return Reach(eligible=counts["eligible"], treated=counts["treated"],
                 control=counts["control"])


# -- launching -------------------------------------------------------------------------------

# Every member of the audience, in an order drawn from the campaign's id (md5 of campaign and
# member, compared as a uuid: fixed for the campaign, unrelated to anything about the member);
# the first ``sample`` are taken (all, without a cap), and of those the first
# round(sample × holdout%) are the control group. Written once, under the campaign's row lock,
# in member order (the primary key's).
_ASSIGN = """
with eligible as materialized (
    select m.member_id, m.status, md5($1::uuid::text || m.member_id::text)::uuid as draw
      from members m
     where {audience}
), plan as (
    select count(*) as total,
           case when $3::bigint is null then count(*)
                else least(count(*), floor($3 * 100.0 / (100 - $2)))::bigint end as sample
      from eligible
), ranked as (
    select e.member_id, e.status, row_number() over (order by e.draw, e.member_id) as n
      from eligible e
), assigned as (
    insert into campaign_members (member_id, campaign_id, arm, status_at_launch)
    select r.member_id, $1::uuid,
           case when r.n <= round(p.sample * $2 / 100.0) then 'control' else 'treated' end,
           r.status
      from ranked r cross join plan p
     where r.n <= p.sample
     order by r.member_id
    returning arm
)
select (select total from plan) as eligible,
       count(*) filter (where arm = 'treated') as treated,
       count(*) filter (where arm = 'control') as control
  from assigned
"""

# Consent is read as it stands at launch: the latest choice for the channel's purpose.
_MESSAGED = """
update campaign_members cm set messaged = true
 where cm.campaign_id = $1 and cm.arm = 'treated' and not cm.messaged
   and (select c.granted from member_consents c
         where c.member_id = cm.member_id and c.purpose = $2
         order by c.recorded_at desc, c.consent_id desc limit 1) is true
"""

# A launch's few big statements (a million members assigned, or given a coupon, in one)
# are batch work run from a request: the pool's statement timeout, meant for interactive
# queries, would cut them off. For their transaction only.
_BULK_TIMEOUT = "set local statement_timeout = '15min'"

_ACTIONED = {
    "issue_coupon": "select count(*) from member_coupons where campaign_id = $1",
    "bonus_points": "select coalesce(sum(members_granted), 0) from point_grants"
                    " where campaign_id = $1",
    "event_invitation": "select count(*) from event_invitations where campaign_id = $1",
    "points_multiplier": "select count(*) from campaign_members"
                         " where campaign_id = $1 and arm = 'treated'",
}


async def launch_campaign(
    conn: Connection, campaign_id: UUID, *, rulebook: RuleBook, programme: Programme,
    now: dt.datetime,
) -> Campaign:
    """Launch (or schedule, if it starts later; or finish launching) a campaign. A launched
    campaign is returned as it is. ``conn`` must not be in a transaction: each step commits
    on its own, so a launch that stops can be resumed."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "select status, starts_at, segment_id, member_list, holdout_percent, max_members"
            " from campaigns where campaign_id = $1 for update", campaign_id)
        if row is None:
            raise _not_found()
        status = row["status"]
        if status == "launched":
            return await get_campaign(conn, campaign_id)
        if status in ("draft", "scheduled") and row["starts_at"] and row["starts_at"] > now:
            await conn.execute("update campaigns set status = 'scheduled' where campaign_id = $1",
                               campaign_id)
            return await get_campaign(conn, campaign_id)
        if status in ("draft", "scheduled"):
            await conn.execute(_BULK_TIMEOUT)
            await _assign(conn, campaign_id, row, now)
    campaign = await get_campaign(conn, campaign_id)
    if campaign.channel is not None:
        await conn.execute(_MESSAGED, campaign_id, campaign.channel)
    await _act(conn, campaign, rulebook=rulebook, programme=programme, now=now)
    kind = msgspec.to_builtins(campaign.action)["type"]
    # campaign.launched is written by the statement that marks the launch done, once: a launch
    # resumed after another finished it changes nothing.
    await conn.execute(
        f"""
        with launched as (
            update campaigns
               set status = 'launched',
                   messaged = (select count(*) from campaign_members
                                where campaign_id = $1 and messaged),
                   actioned = ({_ACTIONED[kind]})
             where campaign_id = $1 and status <> 'launched'
            returning campaign_id, name, action->>'type' as action, channel, starts_at, ends_at,
                      treated, control, launched_at
        )
        insert into outbox (type, occurred_at, api_version, data)
        select 'campaign.launched', $2, $3,
               jsonb_build_object('campaign_id', campaign_id, 'name', name, 'action', action,
                                  'channel', channel, 'starts_at', starts_at,
                                  'ends_at', ends_at, 'treated', coalesce(treated, 0),
                                  'holdout', coalesce(control, 0),
                                  'launched_at', coalesce(launched_at, $2))
          from launched
        """, campaign_id, now, API_VERSION)  # noqa: S608 - one of this module's constant counting queries, by action kind
    return await get_campaign(conn, campaign_id)


async def _assign(conn: Connection, campaign_id: UUID, row: Any, now: dt.datetime) -> None:
    if row["segment_id"] is not None:
        audience = await segment_filter(conn, row["segment_id"], now=now)
    else:
        audience = MemberFilter.members(row["member_list"])
    audience = audience & REACHABLE
    counts = await conn.fetchrow(
        _ASSIGN.format(audience=audience.render(4)), campaign_id, row["holdout_percent"],
        row["max_members"], *audience.params)
    assert counts is not None
    await conn.execute(
        """
        update campaigns
           set status = 'launching', launched_at = $2, starts_at = coalesce(starts_at, $2),
               eligible = $3, treated = $4, control = $5
         where campaign_id = $1
        """,
        campaign_id, now, counts["eligible"], counts["treated"], counts["control"])


async def _act(
    conn: Connection, campaign: Campaign, *, rulebook: RuleBook, programme: Programme,
    now: dt.datetime,
) -> None:
    treated = treated_group(campaign.campaign_id)
    match campaign.action:
        case IssueCoupon(template_id=template_id):
            async with conn.transaction():
                await conn.execute(_BULK_TIMEOUT)
                await issue_to_members(
                    conn, template_id=template_id, member_filter=treated,
                    issue_id=campaign.campaign_id, source="campaign",
                    campaign_id=campaign.campaign_id, now=now, tz=programme.timezone.key)
        case EventInvitation(event_id=event_id):
            async with conn.transaction():
                await conn.execute(_BULK_TIMEOUT)
                await invite_members(conn, event_id=event_id, member_filter=treated,
                                     campaign_id=campaign.campaign_id, now=now)
        case BonusPoints(points=points, reason=reason):
            grant_id = await _campaign_grant(conn, campaign.campaign_id, points, reason,
                                             rulebook=rulebook, programme=programme, now=now)
            await run_grant(conn, grant_id, treated, now=now)
        case PointsMultiplier():
            # Nothing to write: each treated member's purchases in the window look it up.
            pass


async def _campaign_grant(
    conn: Connection, campaign_id: UUID, points: int, reason: str, *, rulebook: RuleBook,
    programme: Programme, now: dt.datetime,
) -> UUID:
    """The campaign's one grant: made on the first launch, found again on a resumed one."""
    async with conn.transaction():
        grant_id: UUID | None = await conn.fetchval(
            "select grant_id from campaigns where campaign_id = $1 for update", campaign_id)
        if grant_id is None:
            grant_id = await create_grant(
                conn, points=points, reason=reason,
                target=CampaignGrantTarget(campaign_id=campaign_id), rulebook=rulebook,
                programme=programme, now=now)
            assert grant_id is not None
            await conn.execute("update campaigns set grant_id = $2 where campaign_id = $1",
                               campaign_id, grant_id)
    return grant_id


async def launch_due_campaigns(
    conn: Connection, *, rulebook: RuleBook, programme: Programme, now: dt.datetime,
) -> int:
    """Launch every scheduled campaign whose start has come, and finish any launch that
    stopped part-way; the scheduled jobs call this. Returns how many were launched."""
    due = await conn.fetch(
        """
        select campaign_id from campaigns
         where (status = 'scheduled' and starts_at <= $1) or status = 'launching'
         order by campaign_id
        """, now)
    for row in due:
        await launch_campaign(conn, row["campaign_id"], rulebook=rulebook, programme=programme,
                              now=now)
    return len(due)


# -- results ---------------------------------------------------------------------------------

_ARMS = """
with per_member as (
    select cm.arm, cm.messaged, cm.status_at_launch,
           coalesce(p.revenue, 0) as revenue, coalesce(p.purchases, 0) as purchases
      from campaign_members cm
      left join lateral (
          select sum(p.total - p.returned_amount) as revenue, count(*) as purchases
            from purchases p
           where p.member_id = cm.member_id and p.occurred_at >= $2 and p.occurred_at < $3
      ) p on true
     where cm.campaign_id = $1
)
select arm, count(*) as members, count(*) filter (where messaged) as messaged,
       count(*) filter (where purchases > 0) as purchasers,
       coalesce(sum(revenue), 0)::bigint as revenue,
       coalesce(sum(revenue::numeric * revenue), 0) as revenue_squares,
       count(*) filter (where status_at_launch = 'dormant') as dormant,
       count(*) filter (where status_at_launch = 'dormant' and purchases > 0) as reactivated
  from per_member group by arm
"""

_COUPONS_REDEEMED = """
select cm.arm, count(*) as redeemed
  from coupon_redemptions r
  join campaign_members cm on cm.member_id = r.member_id and cm.campaign_id = r.campaign_id
 where r.campaign_id = $1 and r.reinstated_at is null
 group by cm.arm
"""

_POINTS_GRANTED = """
select cm.arm, coalesce(sum(e.amount), 0) as points
  from point_entries e
  join campaign_members cm on cm.member_id = e.member_id and cm.campaign_id = $1
 where e.grant_id = $2
 group by cm.arm
"""

Z_95 = 1.959963984540054


def _difference(mean_t: float, var_t: float, n_t: int, mean_c: float, var_c: float,
                n_c: int) -> Difference | None:
    """Difference of two means with a normal-approximation 95% interval (Welch)."""
    if n_t == 0 or n_c == 0:
        return None
    estimate = mean_t - mean_c
    if n_t < 2 or n_c < 2:
        return Difference(estimate=estimate, low=None, high=None)
    margin = Z_95 * math.sqrt(var_t / n_t + var_c / n_c)
    return Difference(estimate=estimate, low=estimate - margin, high=estimate + margin)


def _sample_variance(total: float, squares: float, n: int) -> float:
    if n < 2:
        return 0.0
    return max(0.0, (squares - total * total / n) / (n - 1))


async def campaign_results(conn: Connection, campaign_id: UUID, *,
                           now: dt.datetime) -> CampaignResults:
    """Treated against control over the campaign's window."""
    row = await conn.fetchrow(
        "select status, starts_at, ends_at, grant_id from campaigns where campaign_id = $1",
        campaign_id)
    if row is None:
        raise _not_found()
    if row["status"] not in ("launching", "launched"):
        raise Conflict("this campaign has not been launched yet", field="campaign_id",
                       code="campaign_not_launched")
    start = row["starts_at"]
    end = min(row["ends_at"], now) if row["ends_at"] else now
    arms = {r["arm"]: r for r in await conn.fetch(_ARMS, campaign_id, start, end)}
    redeemed = {r["arm"]: int(r["redeemed"])
                for r in await conn.fetch(_COUPONS_REDEEMED, campaign_id)}
    granted: dict[str, int] = {}
    if row["grant_id"] is not None:
        granted = {r["arm"]: int(r["points"])
                   for r in await conn.fetch(_POINTS_GRANTED, campaign_id, row["grant_id"])}

    def arm(name: str) -> tuple[Arm, float, float]:
        r = arms.get(name)
        n = int(r["members"]) if r else 0
        revenue = int(r["revenue"]) if r else 0
        purchasers = int(r["purchasers"]) if r else 0
        squares = float(r["revenue_squares"]) if r else 0.0
        view = Arm(
            members=n, messaged=int(r["messaged"]) if r else 0,
            coupons_redeemed=redeemed.get(name, 0), points_granted=granted.get(name, 0),
            purchasers=purchasers, purchase_rate=purchasers / n if n else 0.0,
            revenue=revenue, revenue_per_member=revenue / n if n else 0.0,
            dormant_at_launch=int(r["dormant"]) if r else 0,
            reactivated=int(r["reactivated"]) if r else 0)
        rate = view.purchase_rate
        # A purchase is a 0/1 outcome: its variance is p(1 - p), with the n/(n-1) correction.
        rate_var = rate * (1 - rate) * n / (n - 1) if n > 1 else 0.0
        return view, rate_var, _sample_variance(revenue, squares, n)

    treated, t_rate_var, t_rev_var = arm("treated")
    control, c_rate_var, c_rev_var = arm("control")
    return CampaignResults(
        campaign_id=campaign_id, window_start=start, window_end=end, treated=treated,
        control=control,
        purchase_rate_uplift=_difference(treated.purchase_rate, t_rate_var, treated.members,
                                         control.purchase_rate, c_rate_var, control.members),
        revenue_per_member_uplift=_difference(
            treated.revenue_per_member, t_rev_var, treated.members,
            control.revenue_per_member, c_rev_var, control.members),
    )
