"""Seats at in-store events: the member app lists a member's events, reserves and cancels a
seat; a till checks the member in and attendance earns the event's points once.

Seats: a reservation row and the seat it takes are written in one transaction; the seat is taken
by a conditional update of the event row (``reserved < capacity``), which PostgreSQL re-checks
on the newest row version after waiting for the row's lock, so concurrent reservations can never
take more seats than there are. Check-in goes through the ledger's ``post``: the check-in row,
the attendance action and the points commit in one statement with the till's idempotency key.
The events themselves and invitations are ``loyalty.promotions.store_events``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

import msgspec

from loyalty.access.principals import TerminalPrincipal
from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, NotFound, PermissionDenied
from loyalty.core.idempotency import Idempotency
from loyalty.core.ids import uuid7
from loyalty.core.outbox import emit
from loyalty.core.paging import decode_parts, encode_parts, invalid_cursor
from loyalty.core.programme import Programme
from loyalty.points.earning import business_date, expires_at
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
from loyalty.promotions.store_events import (
    event_cancelled,
    event_ended,
    event_not_found,
    parse_instant,
    raise_if_closed,
)
from schemas.base import Page, json_encoder
from schemas.events import CheckedIn, MyEvent, Reservation
from schemas.outbox import EventCheckedInData, EventRsvpData
from schemas.points import Balance
from schemas.rules import Trace, TraceStep

# Doors open before the start: members arriving early are checked in.
CHECKIN_OPENS_BEFORE = dt.timedelta(hours=1)
ATTENDANCE_ACTION = "event_attendance"
_encode = json_encoder.encode


# -- the member app: list, reserve, cancel ---------------------------------------------------

# Upcoming events (not yet ended) first, soonest first; then past ones, latest first. The
# cursor carries the instant of the first page, so an event ending while the member pages
# through stays on the side of the line it was on.
_MY_EVENTS = """
with mine as (
    select event_id from event_invitations where member_id = $1
    union
    select event_id from event_reservations where member_id = $1
), listed as (
    select e.event_id, e.name, e.place, s.code as store_code, e.starts_at, e.ends_at, e.points,
           e.status, e.capacity - e.reserved as seats_left,
           i.member_id is not null as invited,
           r.cancelled_at is null and r.member_id is not null as reserved,
           case when r.cancelled_at is null then r.reserved_at end as reserved_at,
           c.checked_in_at is not null as checked_in, c.checked_in_at,
           e.ends_at <= $2 as past
      from mine
      join events e on e.event_id = mine.event_id
      left join stores s on s.store_id = e.store_id
      left join event_invitations i on i.member_id = $1 and i.event_id = e.event_id
      left join event_reservations r on r.member_id = $1 and r.event_id = e.event_id
      left join event_checkins c on c.member_id = $1 and c.event_id = e.event_id
)
select * from listed
 where $3::bool is null
    or (not $3 and not past and (starts_at, event_id) > ($4, $5))
    or (not $3 and past)
    or ($3 and past and (starts_at, event_id) < ($4, $5))
 order by past,
          case when not past then starts_at end, case when not past then event_id end,
          case when past then starts_at end desc, case when past then event_id end desc
 limit $6
"""


async def my_events(
    conn: Connection, member_id: UUID, *, now: dt.datetime, limit: int = 50,
    cursor: str | None = None,
) -> Page[MyEvent]:
    """The events a member is invited to or has reserved: upcoming soonest first, then past
    ones latest first, each with the member's reservation and check-in."""
    after: tuple[bool, dt.datetime, UUID] | None = None
    if cursor is not None:
        at, past, starts, event_id = decode_parts(cursor, 4)
        try:
            now = parse_instant(at)
            after = past == "past", parse_instant(starts), UUID(event_id)
        except ValueError:
            raise invalid_cursor() from None
    rows = await conn.fetch(
        _MY_EVENTS, member_id, now, after[0] if after else None, after[1] if after else None,
        after[2] if after else None, limit + 1,
    )
    items = [msgspec.convert({k: v for k, v in row.items() if k != "past"}, MyEvent)
             for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_parts(now.isoformat(), "past" if last["past"] else "upcoming",
                                     last["starts_at"].isoformat(), str(last["event_id"]))
    return Page(items=items, next_cursor=next_cursor)


_MAY_RESERVE = """
select e.status, e.ends_at, e.invitation_only,
       exists (select 1 from event_invitations i
                where i.member_id = $2 and i.event_id = e.event_id) as invited,
       (select m.status from members m where m.member_id = $2) as member_status,
       (select m.member_number from members m where m.member_id = $2) as member_number
  from events e where e.event_id = $1
"""

# The member's row first: a second request of the same member waits here for the first to
# commit or roll back, then finds the seat held (or takes it itself).
_CLAIM_RESERVATION = """
insert into event_reservations (member_id, event_id, reserved_at) values ($1, $2, $3)
on conflict (member_id, event_id) do update
   set reserved_at = excluded.reserved_at, cancelled_at = null
 where event_reservations.cancelled_at is not null
returning reserved_at
"""

_TAKE_SEAT = """
update events set reserved = reserved + 1, updated_at = $2
 where event_id = $1 and reserved < capacity and status = 'scheduled' and ends_at > $2
returning capacity - reserved as seats_left
"""

_HELD = """
select r.reserved_at, e.capacity - e.reserved as seats_left
  from event_reservations r join events e on e.event_id = r.event_id
 where r.member_id = $1 and r.event_id = $2
"""


@dataclass(frozen=True)
class Reserved:
    reservation: Reservation
    new: bool


async def reserve_seat(
    conn: Connection, *, event_id: UUID, member_id: UUID, now: dt.datetime,
) -> Reserved:
    """Hold one seat for the member: invited (or the event is open to all), not cancelled, not
    over, a seat left. Reserving again holds the same seat. The reservation and its seat are
    one transaction (a savepoint when ``conn`` is in one already)."""
    check = await conn.fetchrow(_MAY_RESERVE, event_id, member_id)
    if check is None:
        raise event_not_found()
    if check["invitation_only"] and not check["invited"]:
        raise PermissionDenied("this event is by invitation and you are not invited",
                               field="event_id", code="not_invited")
    if check["member_status"] not in ("active", "dormant"):
        raise Conflict("this member cannot reserve seats", field="member",
                       code="member_suspended")
    if check["status"] == "cancelled":
        raise event_cancelled()
    if check["ends_at"] <= now:
        raise event_ended()
    async with conn.transaction():
        reserved_at = await conn.fetchval(_CLAIM_RESERVATION, member_id, event_id, now)
        if reserved_at is None:
            held = await conn.fetchrow(_HELD, member_id, event_id)
            assert held is not None
            return Reserved(Reservation(event_id=event_id, member_id=member_id,
                                        reserved_at=held["reserved_at"],
                                        seats_left=held["seats_left"]), new=False)
        seats_left = await conn.fetchval(_TAKE_SEAT, event_id, now)
        if seats_left is None:
            # Raising rolls the reservation row back with the transaction.
            await raise_if_closed(conn, event_id, now)
            raise Conflict("every seat is taken", field="event_id", code="event_full")
        await emit(conn, "event.rsvp", EventRsvpData(
            member_id=member_id, member_number=check["member_number"], event_id=event_id,
            reserved_at=reserved_at, seats_left=seats_left), member_id=member_id,
            occurred_at=now)
    return Reserved(Reservation(event_id=event_id, member_id=member_id, reserved_at=reserved_at,
                                seats_left=seats_left), new=True)


# A cancellation bumps the member's ledger version: a check-in racing it (which read the
# reservation as held) finds its posting stale, re-reads under the lock and refuses.
_LOCK_MEMBER_LEDGER = """
update point_balances set version = version + 1, updated_at = $2 where member_id = $1
returning 1
"""

_CANCEL = """
with cancelled as (
    update event_reservations set cancelled_at = $3
     where member_id = $1 and event_id = $2 and cancelled_at is null
       and not exists (select 1 from event_checkins c
                        where c.member_id = $1 and c.event_id = $2)
    returning event_id
)
update events e set reserved = e.reserved - 1, updated_at = $3
  from cancelled where e.event_id = cancelled.event_id
returning 1
"""


async def cancel_reservation(
    conn: Connection, *, event_id: UUID, member_id: UUID, now: dt.datetime,
) -> None:
    """Give the member's seat back, once. Not after the event has ended or the member was
    checked in. One transaction (a savepoint when ``conn`` is in one already)."""
    event = await conn.fetchrow("select ends_at from events where event_id = $1", event_id)
    if event is None:
        raise event_not_found()
    if event["ends_at"] <= now:
        raise event_ended()
    async with conn.transaction():
        if await conn.fetchval(_LOCK_MEMBER_LEDGER, member_id, now) is None:
            raise NotFound("no such member", field="member", code="member_not_found")
        if await conn.fetchval(_CANCEL, member_id, event_id, now) is None:
            checked_in = await conn.fetchval(
                "select 1 from event_checkins where member_id = $1 and event_id = $2",
                member_id, event_id)
            if checked_in:
                raise Conflict("you were checked in at this event", field="event_id",
                               code="already_checked_in")
            raise NotFound("you hold no seat at this event", field="event_id",
                           code="not_reserved")


# -- check-in at the till --------------------------------------------------------------------

class _EventAtTill(msgspec.Struct, array_like=True, frozen=True):
    name: str
    store_id: UUID | None
    status: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    points: int


class _CheckinRead(msgspec.Struct, frozen=True):
    """What a check-in reads beside the ledger, in the same statement."""

    event: _EventAtTill | None
    reserved: bool
    checked_in: bool


_CHECKIN_READ = ledger_read(""",
       (select (e.name, e.store_id, e.status, e.starts_at, e.ends_at, e.points)
          from events e where e.event_id = :event_id) as event,
       exists (select 1 from event_reservations r
                where r.member_id = m.member_id and r.event_id = :event_id
                  and r.cancelled_at is null) as reserved,
       exists (select 1 from event_checkins c
                where c.member_id = m.member_id and c.event_id = :event_id) as checked_in""",
                            _CheckinRead)

_CHECKIN = posting_statement("""
, checkin as (
    insert into event_checkins (member_id, event_id, terminal_id, store_id, action_id, points,
                                checked_in_at)
    select :member, :event_id::uuid, :terminal_id::uuid, :store_id::uuid, :action_id::uuid,
           :points::int8, :now
     where exists (select 1 from bal)
), action as (
    insert into member_actions (member_id, action_id, action, target, business_date, points,
                                recorded_at)
    select :member, :action_id::uuid, :action::text, :event_id::uuid::text,
           :business_date::date, :points::int8, :now
     where exists (select 1 from bal)
), activity as (
    update members set last_activity_at = greatest(last_activity_at, :now)
     where member_id = :member and exists (select 1 from bal)
)""")


async def check_in(
    conn: Connection, *, event_id: UUID, member: UUID | str, terminal: TerminalPrincipal,
    idempotency: Idempotency, rulebook: RuleBook, programme: Programme, now: dt.datetime,
) -> Outcome:
    """Check a member with a reservation in and award the event's points, once per member and
    event whatever the keys, exactly once per idempotency key."""

    async def read(conn: Connection) -> tuple[MemberLedger, _CheckinRead]:
        return await read_member_ledger_with(conn, member, _CHECKIN_READ,
                                             {"event_id": event_id}, idempotency=idempotency)

    async def build(ledger: MemberLedger, extra: _CheckinRead) -> Planned:
        event = extra.event
        if event is None:
            raise event_not_found()
        name, store_id, status, starts_at, ends_at, points = (
            event.name, event.store_id, event.status, event.starts_at, event.ends_at,
            event.points)
        if store_id is not None and store_id != terminal.store_id:
            raise PermissionDenied("this event checks in at another store", field="event_id",
                                   code="event_at_another_store")
        if status == "cancelled":
            raise event_cancelled()
        if ends_at <= now:
            raise event_ended()
        if now < starts_at - CHECKIN_OPENS_BEFORE:
            raise Conflict("check-in opens an hour before the event starts", field="event_id",
                           code="checkin_not_open")
        check_can_transact(ledger)
        if extra.checked_in:
            raise Conflict("this member is already checked in at this event", field="member",
                           code="already_checked_in")
        if not extra.reserved:
            raise Conflict("this member holds no seat at this event", field="member",
                           code="not_reserved")
        posting = Posting(ledger, now)
        action_id = uuid7()
        if points:
            version, rules = await rulebook.at(conn, ledger.rules_version)
            reason = f"Attended {name}"
            posting.earn(
                kind="earn", points=points, reason=reason, source="action",
                links=Links(action_id=action_id), earned_at=now, available_at=now,
                expires_at=expires_at(rules.expiry, now, programme.timezone),
                rule_version=version,
                trace=Trace(rule_version=version, steps=[
                    TraceStep(rule=ATTENDANCE_ACTION, detail=reason, points=points)]))
        # With no points the posting still bumps the ledger version and carries the check-in
        # and the key, so "once" holds the same way.
        posting.emit("event.checked_in", EventCheckedInData(
            member_id=ledger.member_id, member_number=ledger.member_number, event_id=event_id,
            checked_in_at=now, store_code=terminal.store_code, points_earned=points))
        result = CheckedIn(event_id=event_id, member_id=ledger.member_id, checked_in_at=now,
                           points_earned=points, action_id=action_id,
                           balance=Balance(available=posting.available,
                                           pending=posting.pending))
        return Planned(posting, 201, _encode(result), _CHECKIN, {
            "event_id": event_id, "terminal_id": terminal.terminal_id,
            "store_id": terminal.store_id, "action_id": action_id, "points": points,
            "action": ATTENDANCE_ACTION, "business_date": business_date(now, programme.timezone)})

    return await post(conn, read=read, build=build, idempotency=idempotency)
