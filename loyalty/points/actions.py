"""Engagement actions in the member app (a share, a review, a survey...): points per the
earning rules and their caps, counted in PostgreSQL under the member's ledger version so that
concurrent taps cannot exceed them."""

from __future__ import annotations

import datetime as dt
import unicodedata
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.core.idempotency import Idempotency
from loyalty.core.ids import uuid7
from loyalty.core.normalize import normalize_text
from loyalty.core.programme import Programme
from loyalty.points.earning import ActionCounts, action_points, business_date, expires_at
from loyalty.points.ledger import (
    Outcome,
    Planned,
    check_can_transact,
    ledger_read,
    post,
    posting_statement,
    read_member_ledger_with,
)
from loyalty.points.posting import Links, MemberLedger, Posting
from loyalty.points.rules import RuleBook
from schemas.base import json_encoder
from schemas.points import ActionResult, Balance

_encode = json_encoder.encode


# The caps' counts, read with the ledger: the balance's version makes them exact.
ACTION_READ = ledger_read(""",
       (select count(*) from member_actions
         where member_id = m.member_id and action = :action and business_date = :today)
           as today,
       (select count(*) from member_actions
         where member_id = m.member_id and action = :action
           and business_date >= :month_start and business_date < :next_month) as this_month,
       (select count(*) from member_actions
         where member_id = m.member_id and action = :action and target = :target)
           as for_target""", ActionCounts)

# The events an action adds to its posting: the action row and the member's last activity.
ACTION_EVENT = """
, action as (
    insert into member_actions (member_id, action_id, action, target, business_date, points,
                                recorded_at)
    select :member, :action_id, :action, :target, :today, :points, :now
     where exists (select 1 from bal)
), activity as (
    update members set last_activity_at = greatest(last_activity_at, :now)
     where member_id = :member and exists (select 1 from bal)
)"""

ACTION_POSTING = posting_statement(ACTION_EVENT)


# Actions written by other parts of the programme: a member cannot claim them from the app,
# whatever the earning rules say.
AWARDED_BY_OTHERS = {"event_attendance": "a store terminal at check-in"}


def normalize_target(target: str) -> str:
    """One share per URL: scheme and host lower-cased, fragment dropped, NFKC elsewhere."""
    text = normalize_text(unicodedata.normalize("NFKC", target))
    parts = urlsplit(text)
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/",
                           parts.query, ""))
    return text


async def record_action(
    conn: Connection, *, member_id: UUID, action: str, target: str | None,
    rulebook: RuleBook, programme: Programme, now: dt.datetime,
    idempotency: Idempotency | None = None,
) -> Outcome:
    """Award an engagement action per the rules and their caps, exactly: the caps are counted
    in PostgreSQL under the member's ledger version, so concurrent taps cannot exceed them.
    The answer is an ``ActionResult``, encoded; once per key when there is one."""
    if action in AWARDED_BY_OTHERS:
        raise InvalidInput(f"{action} is recorded by {AWARDED_BY_OTHERS[action]}, not by the app",
                           field="type", code="unknown_action")
    target = normalize_target(target) if target is not None else None
    today = business_date(now, programme.timezone)
    month_start = today.replace(day=1)
    next_month = (month_start + dt.timedelta(days=32)).replace(day=1)

    async def read(conn: Connection) -> tuple[MemberLedger, ActionCounts]:
        return await read_member_ledger_with(
            conn, member_id, ACTION_READ,
            {"action": action, "today": today, "month_start": month_start,
             "next_month": next_month, "target": target}, idempotency=idempotency)

    async def build(ledger: MemberLedger, counts: ActionCounts) -> Planned:
        check_can_transact(ledger)
        version, rules = await rulebook.at(conn, ledger.rules_version)
        award = action_points(rules, version, action, target, counts,
                              ceiling=programme.max_points_per_action)
        posting = Posting(ledger, now)
        if award.points == 0:
            result = ActionResult(type=action, points=0, reason=award.reason,
                                  balance=Balance(available=posting.available,
                                                  pending=posting.pending))
            return Planned(None, 200, _encode(result))
        action_id = uuid7()
        posting.earn(kind="earn", points=award.points, reason=award.reason, source="action",
                     links=Links(action_id=action_id), earned_at=now, available_at=now,
                     expires_at=expires_at(rules.expiry, now, programme.timezone),
                     rule_version=version, trace=award.trace)
        result = ActionResult(type=action, points=award.points, reason=award.reason,
                              balance=Balance(available=posting.available,
                                              pending=posting.pending), action_id=action_id)
        return Planned(posting, 200, _encode(result), ACTION_POSTING,
                       {"action_id": action_id, "action": action, "target": target,
                        "today": today, "points": award.points})

    return await post(conn, read=read, build=build, idempotency=idempotency)
