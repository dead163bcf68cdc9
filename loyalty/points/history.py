"""Points as members and staff see them: the summary (balance, pending releases, what expires
soon), the entry history page by page, one entry with its trace and lots, and what the till
shows of a member."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from uuid import UUID

import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import NotFound
from loyalty.core.paging import decode_parts, encode_parts, invalid_cursor
from loyalty.core.programme import Programme
from loyalty.points.ledger import read_member_ledger
from loyalty.points.posting import Posting
from loyalty.points.rules import RuleBook
from schemas.base import Instant, Page, decode_edge
from schemas.points import (
    Entry,
    EntryDetail,
    Expiring,
    LotMovement,
    PendingPoints,
    PointsSummary,
    TillMember,
)

EXPIRING_WINDOW = dt.timedelta(days=90)


async def points_summary(
    conn: Connection, member_id: UUID, *, rulebook: RuleBook, programme: Programme,
    now: dt.datetime,
) -> PointsSummary:
    """Balance as of now, pending points with their release dates, what expires in 90 days."""
    return (await computed_summary(conn, member_id, rulebook=rulebook, programme=programme,
                                   now=now)).summary


@dataclass(frozen=True)
class ComputedSummary:
    """A summary computed from the whole ledger, with what it was computed from: the balance
    row's version, the rules version, and the first moment it changes by time alone (None:
    never, until something is written)."""

    summary: PointsSummary
    balance_version: int
    rules_version: int
    valid_until: dt.datetime | None


async def computed_summary(
    conn: Connection, member_id: UUID, *, rulebook: RuleBook, programme: Programme,
    now: dt.datetime,
) -> ComputedSummary:
    """The summary of ``points_summary`` with what it depends on (the read model stores it)."""
    ledger = await read_member_ledger(conn, member_id)
    rules_version, rules = await rulebook.at(conn, ledger.rules_version)
    posting = Posting(ledger, now)
    pending: dict[dt.datetime, int] = defaultdict(int)
    expiring: dict[dt.datetime, int] = defaultdict(int)
    for lot in posting.lots.values():
        if lot.remaining <= 0:
            continue
        if not lot.released:
            pending[lot.available_at] += lot.remaining
        if lot.expires_at is not None and lot.expires_at <= now + EXPIRING_WINDOW:
            expiring[lot.expires_at] += lot.remaining
    summary = PointsSummary(
        member_id=ledger.member_id, available=posting.available, pending=posting.pending,
        pending_release=[PendingPoints(points=p, available_at=t)
                         for t, p in sorted(pending.items())],
        expiring=[Expiring(points=p, expires_at=t) for t, p in sorted(expiring.items())],
        lifetime_earned=ledger.lifetime_earned, lifetime_redeemed=ledger.lifetime_redeemed,
        lifetime_expired=ledger.lifetime_expired + posting.expired,
        point_value=rules.point_value, currency=programme.currency,
    )
    return ComputedSummary(summary, ledger.version, rules_version,
                           summary_changes_at(posting))


def summary_changes_at(posting: Posting) -> dt.datetime | None:
    """The first moment after ``posting.now`` at which the summary of the settled ledger
    changes with nothing written: a pending lot is released (``available_at``), a lot with
    points left expires (``expires_at``: its points leave the balance and count as expired), or
    enters the expiring window (``expires_at - EXPIRING_WINDOW``). Each is the moment the
    settling (``Posting``) and ``points_summary`` compare ``now`` against, inclusively. None
    when no lot will change."""
    moments: list[dt.datetime] = []
    for lot in posting.lots.values():
        if lot.remaining <= 0:
            continue
        # Settled as of now: an unreleased lot is released later, an unexpired one expires
        # later; both are strictly after now.
        if not lot.released:
            moments.append(lot.available_at)
        if lot.expires_at is not None:
            moments.append(lot.expires_at)
            if lot.expires_at - EXPIRING_WINDOW > posting.now:
                moments.append(lot.expires_at - EXPIRING_WINDOW)
    return min(moments, default=None)


async def till_member(conn: Connection, member_id: UUID, *, now: dt.datetime) -> TillMember:
    """What the cashier sees of a member (of the survivor, if merged): name, tier and the
    points available now; one ledger read."""
    ledger = await read_member_ledger(conn, member_id)
    return TillMember(member_id=ledger.member_id, display_name=ledger.name, tier=ledger.tier,
                      available_points=Posting(ledger, now).available)


_ENTRY_COLUMNS = """entry_id, member_id, kind, amount, reason, source, created_at, purchase_id,
                    return_id, action_id, grant_id"""

# A member's history includes the members merged into them.
_MERGED_INTO = """
with recursive family as (
    select $1::uuid as member_id
    union
    select m.member_id from members m join family f on m.merged_into = f.member_id
)"""


def _encode_cursor(entry: Entry) -> str:
    return encode_parts(entry.created_at.isoformat(), str(entry.entry_id))


def _decode_cursor(cursor: str) -> tuple[dt.datetime, UUID]:
    created, entry_id = decode_parts(cursor, 2)
    try:
        # Bounded as any moment a request carries: a forged cursor must not reach the query.
        return decode_edge(Instant, created), UUID(entry_id)
    except (ValueError, TypeError):
        raise invalid_cursor() from None


async def points_history(
    conn: Connection, member_id: UUID, *, limit: int = 50, cursor: str | None = None,
) -> Page[Entry]:
    """Entries newest first, one keyset page at a time."""
    after = _decode_cursor(cursor) if cursor else None
    rows = await conn.fetch(
        _MERGED_INTO + f"""
        select {_ENTRY_COLUMNS} from point_entries
         where member_id in (select member_id from family)
           and ($2::timestamptz is null or (created_at, entry_id) < ($2, $3))
         order by created_at desc, entry_id desc
         limit $4
        """,  # noqa: S608 - constant column list and merge-walk CTE
        member_id, after[0] if after else None, after[1] if after else None, limit + 1,
    )
    items = [msgspec.convert(dict(row), Entry) for row in rows[:limit]]
    next_cursor = _encode_cursor(items[-1]) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


async def entry_detail(conn: Connection, member_id: UUID, entry_id: UUID) -> EntryDetail:
    """One entry of the member (or of a member merged into them) with its trace and lots."""
    row = await conn.fetchrow(
        _MERGED_INTO + f"""
        select {_ENTRY_COLUMNS}, rule_version, trace,
               coalesce((select array_agg((l.lot_id, l.points, l.expires_at) order by l.lot_id)
                           from point_lots l
                          where l.member_id = e.member_id and l.entry_id = e.entry_id), '{{}}')
               || coalesce((select array_agg((a.lot_id, a.points, l.expires_at) order by a.lot_id)
                              from point_allocations a
                              join point_lots l on l.member_id = a.member_id
                                               and l.lot_id = a.lot_id
                             where a.member_id = e.member_id and a.entry_id = e.entry_id), '{{}}')
                  as lots
          from point_entries e
         where e.member_id in (select member_id from family) and e.entry_id = $2
        """,  # noqa: S608 - constant column list and merge-walk CTE
        member_id, entry_id,
    )
    if row is None:
        raise NotFound("no such entry", field="entry_id")
    data = dict(row)
    data["lots"] = [LotMovement(lot_id=lot, points=points, expires_at=expiry)
                    for lot, points, expiry in data["lots"] or ()]
    return msgspec.convert(data, EntryDetail, from_attributes=True)
