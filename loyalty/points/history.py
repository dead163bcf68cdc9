"""Points as members and staff see them, engagement actions, staff adjustments, and the batch
functions that expire and release lots across all members."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections import defaultdict
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput, NotFound
from loyalty.core.idempotency import Idempotency
from loyalty.core.ids import uuid7
from loyalty.core.metrics import POINTS
from loyalty.core.normalize import normalize_text
from loyalty.core.paging import decode_parts, encode_parts, invalid_cursor
from loyalty.points.earning import ActionCounts, action_points, business_date, expires_at
from loyalty.points.ledger import (
    Links,
    MemberLedger,
    Outcome,
    Planned,
    Posting,
    event_statement,
    ledger_query,
    lock_balances,
    post,
)
from loyalty.points.purchases import Programme, _check_can_transact, read_member_ledger
from loyalty.points.rules import RuleBook
from schemas.base import Instant, Page, decode_edge, json_encoder
from schemas.points import (
    ActionResult,
    AdjustmentRecorded,
    Balance,
    Entry,
    EntryDetail,
    Expiring,
    LotMovement,
    PendingPoints,
    PointsSummary,
    TillMember,
)

EXPIRING_WINDOW = dt.timedelta(days=90)
_encode = json_encoder.encode


# -- reading ---------------------------------------------------------------------------------


async def points_summary(
    conn: Connection, member_id: UUID, *, rulebook: RuleBook, programme: Programme,
    now: dt.datetime,
) -> PointsSummary:
    """Balance as of now, pending points with their release dates, what expires in 90 days."""
    ledger = await read_member_ledger(conn, member_id)
    _, rules = await rulebook.at(conn, ledger.rules_version)
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
    return PointsSummary(
        member_id=ledger.member_id, available=posting.available, pending=posting.pending,
        pending_release=[PendingPoints(points=p, available_at=t)
                         for t, p in sorted(pending.items())],
        expiring=[Expiring(points=p, expires_at=t) for t, p in sorted(expiring.items())],
        lifetime_earned=ledger.lifetime_earned, lifetime_redeemed=ledger.lifetime_redeemed,
        lifetime_expired=ledger.lifetime_expired + posting.expired,
        point_value=rules.point_value, currency=programme.currency,
    )


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
        """,
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
        """,
        member_id, entry_id,
    )
    if row is None:
        raise NotFound("no such entry", field="entry_id")
    data = dict(row)
    data["lots"] = [LotMovement(lot_id=lot, points=points, expires_at=expiry)
                    for lot, points, expiry in data["lots"] or ()]
    return msgspec.convert(data, EntryDetail, from_attributes=True)


# -- engagement actions ----------------------------------------------------------------------

_ACTION_LEDGER = ledger_query("id", extra=""",
       (select count(*) from member_actions
         where member_id = m.member_id and action = $4 and business_date = $5) as today,
       (select count(*) from member_actions
         where member_id = m.member_id and action = $4
           and business_date >= $6 and business_date < $7) as this_month,
       (select count(*) from member_actions
         where member_id = m.member_id and action = $4 and target = $8) as for_target""")

_ACTION_EVENT = event_statement("""
, action as (
    insert into member_actions (member_id, action_id, action, target, business_date, points,
                                recorded_at)
    select $1, {0}, {1}, {2}, {3}, {4}, $2 where exists (select 1 from bal)
), activity as (
    update members set last_activity_at = greatest(last_activity_at, $2)
     where member_id = $1 and exists (select 1 from bal)
)""", 5)


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

    async def read(conn: Connection) -> MemberLedger:
        return await read_member_ledger(conn, member_id, idempotency=idempotency,
                                        query=_ACTION_LEDGER,
                                        extra_args=(action, today, month_start, next_month,
                                                    target))

    async def build(ledger: MemberLedger) -> Planned:
        _check_can_transact(ledger)
        version, rules = await rulebook.at(conn, ledger.rules_version)
        counts = ActionCounts(today=ledger.extra["today"], this_month=ledger.extra["this_month"],
                              for_target=ledger.extra["for_target"])
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
        return Planned(posting, 200, _encode(result), _ACTION_EVENT,
                       (action_id, action, target, today, award.points))

    return await post(conn, read=read, build=build, idempotency=idempotency)


# -- staff adjustments -----------------------------------------------------------------------

# The audit row commits with the points it records, in the posting statement.
_ADJUSTMENT_AUDIT = event_statement("""
, audit as (
    insert into audit_log (recorded_at, actor_kind, actor_id, action, subject_kind, subject_id,
                           details)
    select $2, 'staff', {0}::uuid, 'points.adjust', 'member', {1}::uuid, {2}::jsonb
     where exists (select 1 from bal)
)""", 3)


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

    async def read(conn: Connection) -> MemberLedger:
        return await read_member_ledger(conn, member_id, idempotency=idempotency)

    async def build(ledger: MemberLedger) -> Planned:
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
        return Planned(posting, 201, _encode(result), _ADJUSTMENT_AUDIT,
                       (staff_id, member_id, audited))

    return await post(conn, read=read, build=build, idempotency=idempotency)


# -- batch: expiry and release ---------------------------------------------------------------

# Batches are the next members, in id order, who have something due: found without locks, then
# locked (balances, in member order like every other writer), then written from a fresh
# snapshot that re-checks what is due.
_EXPIRE_PICK = """
select distinct member_id from point_lots
 where member_id > $1 and remaining > 0 and expires_at <= $2
 order by member_id limit $3
"""

_RELEASE_PICK = """
select distinct member_id from point_lots
 where member_id > $1 and released_at is null and available_at <= $2
 order by member_id limit $3
"""

_EXPIRE = """
with due as materialized (
    select l.member_id, l.lot_id, l.remaining, l.released_at is not null as released
      from point_lots l
     where l.member_id = any($1::uuid[]) and l.remaining > 0 and l.expires_at <= $2
), per_member as materialized (
    select member_id, uuid_v7() as entry_id, sum(remaining) as total,
           coalesce(sum(remaining) filter (where released), 0) as from_available,
           coalesce(sum(remaining) filter (where not released), 0) as from_pending,
           count(*) as lots
      from due group by member_id
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, created_at)
    select member_id, entry_id, 'expire', -total, 'points expired', 'system', $2
      from per_member
), allocations as (
    insert into point_allocations (member_id, entry_id, lot_id, points)
    select d.member_id, p.entry_id, d.lot_id, -d.remaining
      from due d join per_member p on p.member_id = d.member_id
), lots as (
    update point_lots l set remaining = 0
      from due d where l.member_id = d.member_id and l.lot_id = d.lot_id
), balances as (
    update point_balances b
       set available = b.available - p.from_available,
           pending = b.pending - p.from_pending,
           lifetime_expired = b.lifetime_expired + p.total,
           version = b.version + 1,
           updated_at = $2
      from per_member p where b.member_id = p.member_id
)
select coalesce(sum(lots), 0) as lots, coalesce(sum(total), 0) as points, count(*) as members
  from per_member
"""

_RELEASE = """
with due as materialized (
    select l.member_id, l.lot_id, l.remaining
      from point_lots l
     where l.member_id = any($1::uuid[]) and l.released_at is null and l.available_at <= $2
       and (l.expires_at is null or l.expires_at > $2)
), lots as (
    update point_lots l set released_at = $2
      from due d where l.member_id = d.member_id and l.lot_id = d.lot_id
), per_member as (
    select member_id, sum(remaining) as points, count(*) as lots from due group by member_id
), balances as (
    update point_balances b
       set available = b.available + p.points, pending = b.pending - p.points,
           version = b.version + 1, updated_at = $2
      from per_member p where b.member_id = p.member_id
)
select coalesce(sum(lots), 0) as lots, coalesce(sum(points), 0) as points, count(*) as members
  from per_member
"""


async def _in_member_batches(
    conn: Connection, pick_sql: str, write_sql: str, now: dt.datetime, batch_size: int,
) -> dict[str, int]:
    totals = {"lots": 0, "points": 0, "members": 0}
    after = UUID(int=0)
    while True:
        members = [r["member_id"] for r in await conn.fetch(pick_sql, after, now, batch_size)]
        if not members:
            return totals
        async with conn.transaction():
            await lock_balances(conn, members)
            row = await conn.fetchrow(write_sql, members, now)
            assert row is not None
            for name in totals:
                totals[name] += int(row[name])
        after = members[-1]


async def expire_points(
    conn: Connection, *, now: dt.datetime, batch_size: int = 5_000
) -> dict[str, int]:
    """Expire every lot past its expiry: one entry per member, allocations per lot. Batched by
    member id, each batch one transaction; running it again finds nothing left to do."""
    totals = await _in_member_batches(conn, _EXPIRE_PICK, _EXPIRE, now, batch_size)
    POINTS.labels("expire").inc(totals["points"])
    return totals


async def release_points(
    conn: Connection, *, now: dt.datetime, batch_size: int = 5_000
) -> dict[str, int]:
    """Make pending points available once their return window has passed."""
    return await _in_member_batches(conn, _RELEASE_PICK, _RELEASE, now, batch_size)

