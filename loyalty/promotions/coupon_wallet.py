"""Issuing coupons into members' wallets (by staff, campaigns, tiers and birthdays) and the
wallet a member sees."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from uuid import UUID

import msgspec

from loyalty.core.db import Connection
from loyalty.core.ids import uuid7
from loyalty.core.outbox import API_VERSION
from loyalty.core.paging import decode_cursor, encode_cursor
from loyalty.members.filter import REACHABLE, MemberFilter, may_message
from loyalty.promotions.coupon_templates import VALID_FROM_SQL, VALID_UNTIL_SQL, active_template
from schemas.base import Page
from schemas.coupons import IssueResult, WalletCoupon, WalletStatus

# -- issuing into wallets --------------------------------------------------------------------

# One wallet coupon per member of the filter: reachable members only, none for a member who
# already holds as many of this template as they may ever use, one per member per issue.
_ISSUE = """
with t as (
    select * from coupon_templates where template_id = $1 and active
), candidates as (
    select m.member_id from members m
     where ({filter})
), added as (
    insert into member_coupons (member_id, coupon_id, template_id, issue_id, source,
                                campaign_id, issued_at, valid_from, valid_until)
    select c.member_id, uuid_v7(), t.template_id, $2, $3, $4, $5,
           {valid_from}, {valid_until}
      from candidates c cross join t
     where t.per_member_limit is null
        or (select count(*) from member_coupons h
             where h.member_id = c.member_id and h.template_id = t.template_id)
           < t.per_member_limit
     order by c.member_id
    on conflict (member_id, issue_id) do nothing
    returning member_id, coupon_id, template_id, valid_from, valid_until
), events as (
    -- coupon.issued per coupon added ($7 the outbox's API_VERSION), by this statement.
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select 'coupon.issued', $5, $7, a.member_id,
           jsonb_build_object('member_id', a.member_id, 'member_number', m.member_number,
                              'coupon_id', a.coupon_id, 'template_id', a.template_id,
                              'issue_id', $2::uuid, 'source', $3::text,
                              'campaign_id', $4::uuid, 'valid_from', a.valid_from,
                              'valid_until', a.valid_until,
                              'may_message', {may_message})
      from added a join members m on m.member_id = a.member_id
     order by a.member_id
)
select (select count(*) from added) as issued, (select count(*) from candidates) as matched
"""


async def issue_to_members(
    conn: Connection, *, template_id: UUID, member_filter: MemberFilter, issue_id: UUID,
    source: Literal["staff", "campaign", "tier", "birthday"], campaign_id: UUID | None,
    now: dt.datetime, tz: str,
) -> tuple[int, int]:
    """Issue the template to every reachable member of ``member_filter`` in one statement:
    (issued, matched). Issuing again under the same ``issue_id`` adds nothing."""
    await active_template(conn, template_id)
    target = member_filter & REACHABLE
    sql = _ISSUE.format(filter=target.render(8), may_message=may_message("a.member_id"),
                        valid_from=VALID_FROM_SQL.format(now="$5"),
                        valid_until=VALID_UNTIL_SQL.format(now="$5", tz="$6"))
    row = await conn.fetchrow(sql, template_id, issue_id, source, campaign_id, now, tz,
                              API_VERSION,
                              *target.params)
    assert row is not None
    return int(row["issued"]), int(row["matched"])


async def issue_coupons(
    conn: Connection, *, template_id: UUID, member_filter: MemberFilter, target: dict[str, Any],
    staff_id: UUID | None, now: dt.datetime, tz: str, requested: int | None = None,
) -> IssueResult:
    """A staff issue, recorded with what it did, in the caller's transaction (a request's key
    makes it once). ``requested`` is the length of a member list (so unknown ids count as
    skipped)."""
    await active_template(conn, template_id)
    issue_id = uuid7()
    await conn.execute(
        """
        insert into coupon_issues (issue_id, template_id, target, created_by, created_at)
        values ($1, $2, $3, $4, $5)
        """,
        issue_id, template_id, target, staff_id, now)
    issued, matched = await issue_to_members(
        conn, template_id=template_id, member_filter=member_filter, issue_id=issue_id,
        source="staff", campaign_id=None, now=now, tz=tz)
    skipped = (requested if requested is not None else matched) - issued
    await conn.execute("update coupon_issues set issued = $2, skipped = $3 where issue_id = $1",
                       issue_id, issued, skipped)
    return IssueResult(issue_id=issue_id, template_id=template_id, issued=issued,
                       skipped=skipped, created_at=now)


# -- the wallet ------------------------------------------------------------------------------

_WALLET_STATUS = """
case when mc.redeemed_at is not null then 'used'
     when not t.active or (mc.valid_until is not null and mc.valid_until <= $2) then 'expired'
     when mc.valid_from is not null and mc.valid_from > $2 then 'upcoming'
     else 'usable' end
"""


async def wallet(
    conn: Connection, member_id: UUID, *, status: WalletStatus | None, now: dt.datetime,
    limit: int, cursor: str | None,
) -> Page[WalletCoupon]:
    """The member's coupons, newest first; ``status`` narrows to usable, upcoming, used or
    expired (a coupon of a deactivated template counts as expired)."""
    rows = await conn.fetch(
        f"""
        select * from (
            select mc.coupon_id, mc.template_id, t.name, t.description, t.discount,
                   {_WALLET_STATUS} as status, mc.valid_from, mc.valid_until, t.min_spend,
                   t.stores, t.categories, t.stackable, mc.issued_at, mc.redeemed_at
              from member_coupons mc join coupon_templates t using (template_id)
             where mc.member_id = $1 and ($4::uuid is null or mc.coupon_id < $4)
        ) w
         where $3::text is null or w.status = $3
         order by w.coupon_id desc limit $5
        """,  # noqa: S608 - a constant status expression
        member_id, now, status, decode_cursor(cursor) if cursor else None, limit + 1)
    items = [msgspec.convert(dict(row), WalletCoupon) for row in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].coupon_id)
                if len(rows) > limit else None)
