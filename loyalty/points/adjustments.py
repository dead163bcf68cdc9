"""Staff adjustments: points added (a lot that expires per the rules) or spendable points
taken away, with the audit row written in the same statement as the points."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.core.idempotency import Idempotency
from loyalty.core.normalize import normalize_text
from loyalty.core.programme import Programme
from loyalty.points.earning import expires_at
from loyalty.points.ledger import (
    Outcome,
    Planned,
    post,
    posting_statement,
    read_member_ledger,
)
from loyalty.points.posting import Links, MemberLedger, Posting
from loyalty.points.rules import RuleBook
from schemas.base import json_encoder
from schemas.points import AdjustmentRecorded, Balance

_encode = json_encoder.encode


# The audit row commits with the points it records, in the posting statement.
ADJUSTMENT_AUDIT = """
, audit as (
    insert into audit_log (recorded_at, actor_kind, actor_id, action, subject_kind, subject_id,
                           details)
    select :now, 'staff', :staff_id::uuid, 'points.adjust', 'member', :subject_id::uuid,
           :details::jsonb
     where exists (select 1 from bal)
)"""

ADJUSTMENT_POSTING = posting_statement(ADJUSTMENT_AUDIT)


async def adjust_points(
    conn: Connection, *, member_id: UUID, points: int, reason: str, staff_id: UUID,
    rulebook: RuleBook, programme: Programme, now: dt.datetime,
    idempotency: Idempotency | None = None,
) -> Outcome:
    """Add points (a lot that expires per the rules) or take spendable ones away; audited.
    The answer is an ``AdjustmentRecorded``, encoded; once per key when there is one."""
    if points == 0:
        raise InvalidInput("an adjustment of 0 points changes nothing", field="points")
    reason = normalize_text(reason)
    # The wire type counts characters before trimming: "   " must not pass as a reason.
    if len(reason) < 3:
        raise InvalidInput("give the reason in at least 3 characters", field="reason")
    entry: dict[str, UUID] = {}

    async def read(conn: Connection) -> tuple[MemberLedger, None]:
        return await read_member_ledger(conn, member_id, idempotency=idempotency), None

    async def build(ledger: MemberLedger, _: None) -> Planned:
        version, rules = await rulebook.at(conn, ledger.rules_version)
        posting = Posting(ledger, now)
        links = Links(staff_id=staff_id)
        if points > 0:
            entry["id"] = posting.earn(
                kind="adjust", points=points, reason=reason, source="staff", links=links,
                earned_at=now, available_at=now,
                expires_at=expires_at(rules.expiry, now, programme.timezone),
                rule_version=version)
        else:
            entry["id"] = posting.draw(kind="adjust", points=-points, reason=reason,
                                       source="staff", links=links)
        result = AdjustmentRecorded(entry_id=entry["id"], points=points,
                                    balance=Balance(available=posting.available,
                                                    pending=posting.pending))
        audited = {"points": points, "reason": reason, "entry_id": str(entry["id"])}
        return Planned(posting, 201, _encode(result), ADJUSTMENT_POSTING,
                       {"staff_id": staff_id, "subject_id": member_id, "details": audited})

    return await post(conn, read=read, build=build, idempotency=idempotency)
