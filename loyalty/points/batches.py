"""What every batch writer of points shares: the order it locks members' balances in, and the
CTEs that credit a batch of members at once (bulk grants, birthday bonuses).

A batch writes many members' ledgers in one transaction, outside ``loyalty.points.ledger.post``;
it keeps that path correct by locking balances in member order and bumping each version, so a
purchase racing it re-reads (docs/decisions/0005-ledger-concurrency.md).
"""

from __future__ import annotations

from uuid import UUID

from loyalty.core.db import Connection

_LOCK_BALANCES = """
select member_id from point_balances where member_id = any($1::uuid[])
 order by member_id for update
"""


async def lock_balances(conn: Connection, members: list[UUID]) -> list[UUID]:
    """Within the caller's transaction: lock these members' balances in member order (the
    order every batch writer takes them in, so two never deadlock, and racing purchases wait
    and then re-read); the members whose balance exists."""
    return [row["member_id"] for row in await conn.fetch(_LOCK_BALANCES, members)]


def credit_lots_and_balances(*, due: str, members: str, points: str, now: str,
                             expires: str) -> str:
    """The CTEs ``lots`` and ``balances`` of a batch credit: ``points`` for every row of the
    CTE ``due`` (member_id, entry_id, lot_id), a lot available at once and the balance moved
    (version + 1). ``members`` is the batch's locked ids. The caller writes the entries. The
    arguments are SQL (parameter placeholders and CTE names), never values."""
    return f"""
, lots as (
    insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,
                            available_at, released_at, expires_at)
    select member_id, lot_id, entry_id, {points}, {points}, {now}, {now}, {now}, {expires}
      from {due}
), balances as (
    update point_balances b
       set available = b.available + {points}, lifetime_earned = b.lifetime_earned + {points},
           version = b.version + 1, updated_at = {now}
      from {due} d where b.member_id = d.member_id and b.member_id = any({members})
    returning b.member_id, b.available, b.pending
)"""  # noqa: S608 - slots take CTE names and $n placeholders from the callers


def earned_events(*, due: str, points: str, now: str, expires: str, source: str, reason: str,
                  api_version: str) -> str:
    """The CTE ``earned_events`` of a batch credit (after ``credit_lots_and_balances``): one
    points.earned event per row of ``due`` credited, with the balance the credit left, written
    by the statement that credits the points. The arguments are SQL (placeholders, CTE names,
    expressions over ``d``, the row of ``due``), never values."""
    return f"""
, earned_events as (
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select 'points.earned', {now}, {api_version}, d.member_id,
           jsonb_build_object('member_id', d.member_id, 'member_number', m.member_number,
                              'entry_id', d.entry_id, 'points', {points}, 'source', {source},
                              'reason', {reason}, 'available_at', {now}, 'expires_at', {expires},
                              'balance', jsonb_build_object('available', b.available,
                                                            'pending', b.pending))
      from {due} d
      join balances b on b.member_id = d.member_id
      join members m on m.member_id = d.member_id
     order by d.member_id
)"""  # noqa: S608 - slots take CTE names, expressions and $n placeholders from the callers
