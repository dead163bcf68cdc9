"""Dormancy and the way back: members who have gone quiet are flagged dormant, handed to the
reactivation campaign, and active again at their next purchase or engagement.

Flagging is the daily ``dormancy`` job: a member whose last activity (purchase, action, event
check-in; ``members.last_activity_at``) was on business day L becomes dormant at the first run on
business day L + N + 1, N being ``LOYALTY_DORMANCY_DAYS``: N whole business days have passed
without them. The flag and its history row are written by one statement per batch of members,
taken in member-id order, so a run that stops part-way is finished by the next and a second run
for the same moment finds nothing to do.

The way back needs no job: the database's trigger on ``members`` (migration 0010) makes a dormant
member active whenever a statement moves their last activity, and records the reactivation with
the campaign credited for it, dated at the activity (migration 0025). Activity that arrives after
the fact (an import) has the history rebuilt as this job would have written it
(``loyalty.members.status_history``).

The ``reactivation`` job hands members who became dormant in the last week, and have not been
handed over yet, to a wave: a campaign copied from the configured template (its action, holdout,
channel and cap), listing those members, and launched at once. A dormancy is handed over once;
the dormancy row names its wave. See docs/decisions/0010-jobs.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.core.ids import uuid7
from loyalty.core.outbox import API_VERSION
from loyalty.core.programme import Programme
from loyalty.points.rules import RuleBook
from loyalty.promotions.campaigns import launch_campaign

# How far back the reactivation job looks for dormancies not yet handed over: a scheduler down
# for up to a week loses no one, and configuring a template for the first time does not send a
# win-back offer to everyone who went quiet years ago.
HAND_OVER_LOOK_BACK = dt.timedelta(days=7)
# A win-back offer is a coupon or points; a multiplier or an invitation needs a window of its
# own that a standing template cannot give every wave.
WAVE_ACTIONS = ("issue_coupon", "bonus_points")


def dormancy_cutoff(now: dt.datetime, tz: ZoneInfo, days: int) -> dt.datetime:
    """Members whose last activity is before this moment are dormant as of ``now``: the start
    of the business day ``days`` days before today."""
    today = now.astimezone(tz).date()
    start = today - dt.timedelta(days=days)
    return dt.datetime.combine(start, dt.time(), tzinfo=tz)


# $1 the last member id of the previous batch, $2 batch size, $3 now, $4 the cutoff. The batch
# is a range of the primary key, found first and then updated by a range scan: joining the
# batch's ids to members instead had the planner hash the whole table for every batch (a run
# quadratic in the members; bench `dormancy`). The history rows and the member.status_changed
# events ($5 the outbox's API_VERSION) are written here, set-based; the setting
# loyalty.status_recorded tells the trigger so.
_FLAG = """
with batch as materialized (
    select member_id from members where member_id > $1 order by member_id limit $2
), bounds as materialized (
    select count(*) as scanned,
           (select member_id from batch order by member_id desc limit 1) as last
      from batch
), flipped as (
    update members m set status = 'dormant', status_changed_at = $3, updated_at = $3
     where m.member_id > $1 and m.member_id <= (select last from bounds)
       and m.status = 'active' and m.last_activity_at < $4
    returning m.member_id, m.member_number
), recorded as (
    insert into member_status_changes (member_id, changed_at, from_status, to_status, reason)
    select member_id, $3, 'active', 'dormant', 'inactivity' from flipped
), events as (
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select 'member.status_changed', $3, $5, member_id,
           jsonb_build_object('member_id', member_id, 'member_number', member_number,
                              'from_status', 'active', 'to_status', 'dormant',
                              'reason', 'inactivity', 'changed_at', $3::timestamptz,
                              'campaign_id', null)
      from flipped order by member_id
)
select (select last from bounds) as last, (select scanned from bounds) as scanned,
       (select count(*) from flipped) as flagged
"""

_NO_MEMBER = UUID(int=0)


async def flag_dormant(
    conn: Connection, *, now: dt.datetime, tz: ZoneInfo, days: int, batch_size: int = 10_000,
) -> dict[str, int]:
    """Make dormant every active member with no activity for ``days`` whole business days as of
    ``now``, in batches of ``batch_size`` members, each its own transaction. Returns the members
    scanned and flagged."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = dormancy_cutoff(now, tz, days)
    after, scanned, flagged = _NO_MEMBER, 0, 0
    while True:
        async with conn.transaction():
            await conn.execute("set local loyalty.status_recorded = 'on'")
            row = await conn.fetchrow(_FLAG, after, batch_size, now, cutoff, API_VERSION)
        assert row is not None
        scanned += row["scanned"]
        flagged += row["flagged"]
        if row["scanned"] < batch_size:
            return {"scanned": scanned, "flagged": flagged}
        after = row["last"]


# -- handing over to the reactivation campaign -----------------------------------------------

_TEMPLATE = """
select campaign_id, name, description, action, holdout_percent, max_members, channel, status
  from campaigns where campaign_id = $1
"""

# Dormancies since $2 not yet handed over, of members still dormant. $1 the wave.
_CLAIM = """
with claimed as (
    update member_status_changes s set campaign_id = $1
      from members m
     where s.changed_at >= $2 and s.changed_at <= $3 and s.to_status = 'dormant'
       and s.campaign_id is null
       and m.member_id = s.member_id and m.status = 'dormant'
    returning s.member_id
)
select coalesce(array_agg(distinct member_id order by member_id), '{}') from claimed
"""


async def hand_over_dormant(
    conn: Connection, *, template_id: UUID | None, rulebook: RuleBook, programme: Programme,
    now: dt.datetime,
) -> dict[str, int]:
    """Hand the members who became dormant lately (and are still) to a new wave of the
    reactivation campaign, and launch it; finish any earlier wave whose launch stopped part-way.
    ``conn`` must not be in a transaction. With no template configured, nobody is handed over.
    """
    if template_id is None:
        return {"waves": 0, "members": 0, "treated": 0, "control": 0}
    async with conn.transaction():
        template = await conn.fetchrow(_TEMPLATE + " for update", template_id)
        if template is None or template["status"] != "draft" \
                or template["action"]["type"] not in WAVE_ACTIONS:
            raise InvalidInput(
                "LOYALTY_REACTIVATION_CAMPAIGN must name a draft campaign (the template) that "
                "issues a coupon or gives bonus points",
                field="reactivation_campaign", code="reactivation_template_invalid")
        unfinished = await conn.fetch(
            "select campaign_id from campaigns where template_id = $1"
            " and status in ('draft', 'launching') order by campaign_id", template_id)
        wave = await _new_wave(conn, template, now, programme.timezone)
    for row in unfinished:
        await launch_campaign(conn, row["campaign_id"], rulebook=rulebook, programme=programme,
                              now=now)
    if wave is None:
        return {"waves": 0, "members": 0, "treated": 0, "control": 0}
    launched = await launch_campaign(conn, wave[0], rulebook=rulebook, programme=programme,
                                     now=now)
    return {"waves": 1, "members": wave[1], "treated": launched.treated or 0,
            "control": launched.control or 0}


async def _new_wave(conn: Connection, template: Any, now: dt.datetime,
                    tz: ZoneInfo) -> tuple[UUID, int] | None:
    """Within the caller's transaction: a draft wave listing the members claimed for it."""
    wave_id = uuid7()
    members: list[UUID] = await conn.fetchval(_CLAIM, wave_id, now - HAND_OVER_LOOK_BACK, now)
    if not members:
        return None
    await conn.execute(
        """
        insert into campaigns (campaign_id, name, description, member_list, action, starts_at,
                               holdout_percent, max_members, channel, template_id)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        """,
        wave_id, f"{template['name']} (wave of {now.astimezone(tz).date()})",
        template["description"], members, template["action"], now,
        template["holdout_percent"], template["max_members"], template["channel"],
        template["campaign_id"])
    return wave_id, len(members)
