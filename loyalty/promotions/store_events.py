"""In-store events: staff create them, campaigns invite members, members reserve a seat, a till
checks them in and attendance earns the event's points once.

Seats: a reservation row and the seat it takes are written in one transaction; the seat is taken
by a conditional update of the event row (``reserved < capacity``), which PostgreSQL re-checks
on the newest row version after waiting for the row's lock, so concurrent reservations can never
take more seats than there are. Check-in goes through the ledger's ``post``: the check-in row,
the attendance action and the points commit in one statement with the till's idempotency key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.access.auth import TerminalPrincipal
from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from loyalty.core.idempotency import Idempotency
from loyalty.core.ids import uuid7
from loyalty.core.normalize import normalize_text
from loyalty.core.programme import Programme
from loyalty.members.filter import REACHABLE, MemberFilter
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
from schemas.base import Instant, Page, decode_edge, json_encoder
from schemas.events import CheckedIn, Event, EventCreate, EventUpdate, MyEvent, Reservation
from schemas.points import Balance
from schemas.rules import Trace, TraceStep

# Doors open before the start: members arriving early are checked in.
CHECKIN_OPENS_BEFORE = dt.timedelta(hours=1)
ATTENDANCE_ACTION = "event_attendance"
_encode = json_encoder.encode


def _event_not_found() -> NotFound:
    return NotFound("no such event", field="event_id", code="event_not_found")


def _cancelled() -> Conflict:
    return Conflict("this event is cancelled", field="event_id", code="event_cancelled")


def _ended() -> Conflict:
    return Conflict("this event has ended", field="event_id", code="event_ended")


# -- cursors ---------------------------------------------------------------------------------


def _encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).rstrip(b"=").decode()


def _decode_cursor(cursor: str, count: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid", field="cursor") from None
    parts = raw.split("|")
    if len(parts) != count:
        raise InvalidInput("cursor is not valid", field="cursor")
    return parts


def _instant(text: str) -> dt.datetime:
    moment: dt.datetime = decode_edge(Instant, text)
    return moment


# -- staff: create, read, edit ---------------------------------------------------------------

_EVENT_COLUMNS = """
       e.event_id, e.name, e.place, s.code as store_code, e.starts_at, e.ends_at, e.capacity,
       e.points, e.invitation_only, e.status, e.reserved,
       (select count(*) from event_checkins c where c.event_id = e.event_id) as checked_in,
       e.created_at, e.updated_at
  from events e left join stores s on s.store_id = e.store_id"""


def _event(row: asyncpg.Record) -> Event:
    return msgspec.convert(dict(row), Event)


async def _store_id(conn: Connection, code: str | None) -> UUID | None:
    if code is None:
        return None
    store_id: UUID | None = await conn.fetchval("select store_id from stores where code = $1",
                                                code)
    if store_id is None:
        raise InvalidInput(f"no store {code}", field="store_code", code="unknown_store")
    return store_id


def _check_times(starts_at: dt.datetime, ends_at: dt.datetime) -> None:
    if ends_at <= starts_at:
        raise InvalidInput("an event ends after it starts", field="ends_at",
                           code="ends_before_start")


def _checked_text(value: str, field: str) -> str:
    text = normalize_text(value)
    if not text:
        raise InvalidInput(f"{field} must not be blank", field=field)
    return text


async def create_event(
    conn: Connection, data: EventCreate, *, staff_id: UUID, now: dt.datetime,
) -> Event:
    """A scheduled event with no seats taken yet."""
    _check_times(data.starts_at, data.ends_at)
    store_id = await _store_id(conn, data.store_code)
    event_id = await conn.fetchval(
        """
        insert into events (name, place, store_id, starts_at, ends_at, capacity, points,
                            invitation_only, created_by, created_at, updated_at)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
        returning event_id
        """,
        _checked_text(data.name, "name"), _checked_text(data.place, "place"), store_id,
        data.starts_at, data.ends_at, data.capacity, data.points, data.invitation_only,
        staff_id, now,
    )
    return await get_event(conn, event_id)


async def get_event(conn: Connection, event_id: UUID) -> Event:
    """One event with its seats reserved and check-ins counted."""
    row = await conn.fetchrow(f"select {_EVENT_COLUMNS} where e.event_id = $1", event_id)
    if row is None:
        raise _event_not_found()
    return _event(row)


async def list_events(
    conn: Connection, *, limit: int = 50, cursor: str | None = None,
) -> Page[Event]:
    """Events latest start first, one keyset page at a time."""
    after: tuple[dt.datetime, UUID] | None = None
    if cursor is not None:
        starts, event_id = _decode_cursor(cursor, 2)
        try:
            after = _instant(starts), UUID(event_id)
        except ValueError:
            raise InvalidInput("cursor is not valid", field="cursor") from None
    rows = await conn.fetch(
        f"""
        select {_EVENT_COLUMNS}
         where $1::timestamptz is null or (e.starts_at, e.event_id) < ($1, $2)
         order by e.starts_at desc, e.event_id desc
         limit $3
        """,
        after[0] if after else None, after[1] if after else None, limit + 1,
    )
    items = [_event(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = _encode_cursor(last.starts_at.isoformat(), str(last.event_id))
    return Page(items=items, next_cursor=next_cursor)


async def update_event(
    conn: Connection, event_id: UUID, changes: EventUpdate, *, now: dt.datetime,
) -> Event:
    """Apply the fields present in ``changes``. The event row is locked first, so the seats
    counted against a lower capacity cannot grow in between. ``conn`` must be in a
    transaction."""
    row = await conn.fetchrow(
        """
        select e.name, e.place, e.store_id, e.starts_at, e.ends_at, e.capacity, e.points,
               e.invitation_only, e.status, e.reserved
          from events e where e.event_id = $1 for update
        """,
        event_id,
    )
    if row is None:
        raise _event_not_found()
    if row["status"] == "cancelled":
        # Members were told it is off; a cancelled event stays cancelled and unchanged.
        raise _cancelled()
    values: dict[str, Any] = dict(row)
    for field in changes.__struct_fields__:
        value = getattr(changes, field)
        if value is msgspec.UNSET:
            continue
        match field:
            case "name" | "place":
                values[field] = _checked_text(value, field)
            case "store_code":
                values["store_id"] = await _store_id(conn, value)
            case _:
                values[field] = value
    _check_times(values["starts_at"], values["ends_at"])
    if values["capacity"] < row["reserved"]:
        raise Conflict(f"{row['reserved']} seats are already reserved", field="capacity",
                       code="capacity_below_reserved")
    await conn.execute(
        """
        update events
           set name = $2, place = $3, store_id = $4, starts_at = $5, ends_at = $6,
               capacity = $7, points = $8, invitation_only = $9, status = $10, updated_at = $11
         where event_id = $1
        """,
        event_id, values["name"], values["place"], values["store_id"], values["starts_at"],
        values["ends_at"], values["capacity"], values["points"], values["invitation_only"],
        values["status"], now,
    )
    return await get_event(conn, event_id)


# -- invitations -----------------------------------------------------------------------------

_INVITE = """
with event as (
    select event_id from events where event_id = $1 and status = 'scheduled' and ends_at > $3
), invited as (
    insert into event_invitations (member_id, event_id, campaign_id, invited_at)
    select m.member_id, event.event_id, $2::uuid, $3::timestamptz
      from event, members m
     where {audience}
    on conflict (member_id, event_id) do nothing
    returning 1
)
select exists (select 1 from event) as open, (select count(*) from invited) as invited
"""


async def invite_members(
    conn: Connection, *, event_id: UUID, member_filter: MemberFilter, campaign_id: UUID | None,
    now: dt.datetime,
) -> int:
    """Invite the reachable members ``member_filter`` matches, in one statement; members already
    invited keep their invitation. Returns how many were newly invited."""
    audience = member_filter & REACHABLE
    row = await conn.fetchrow(_INVITE.format(audience=audience.render(4)),
                              event_id, campaign_id, now, *audience.params)
    assert row is not None
    if not row["open"]:
        await _raise_closed(conn, event_id, now)
    return int(row["invited"])


async def _raise_closed(conn: Connection, event_id: UUID, now: dt.datetime) -> None:
    """Why an event takes no more invitations or seats: missing, cancelled or over."""
    event = await conn.fetchrow("select status, ends_at from events where event_id = $1",
                                event_id)
    if event is None:
        raise _event_not_found()
    if event["status"] == "cancelled":
        raise _cancelled()
    if event["ends_at"] <= now:
        raise _ended()


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
        at, past, starts, event_id = _decode_cursor(cursor, 4)
        try:
            now = _instant(at)
            after = past == "past", _instant(starts), UUID(event_id)
        except ValueError:
            raise InvalidInput("cursor is not valid", field="cursor") from None
    rows = await conn.fetch(
        _MY_EVENTS, member_id, now, after[0] if after else None, after[1] if after else None,
        after[2] if after else None, limit + 1,
    )
    items = [msgspec.convert({k: v for k, v in row.items() if k != "past"}, MyEvent)
             for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _encode_cursor(now.isoformat(), "past" if last["past"] else "upcoming",
                                     last["starts_at"].isoformat(), str(last["event_id"]))
    return Page(items=items, next_cursor=next_cursor)


_MAY_RESERVE = """
select e.status, e.ends_at, e.invitation_only,
       exists (select 1 from event_invitations i
                where i.member_id = $2 and i.event_id = e.event_id) as invited,
       (select m.status from members m where m.member_id = $2) as member_status
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
        raise _event_not_found()
    if check["invitation_only"] and not check["invited"]:
        raise PermissionDenied("this event is by invitation and you are not invited",
                               field="event_id", code="not_invited")
    if check["member_status"] not in ("active", "dormant"):
        raise Conflict("this member cannot reserve seats", field="member",
                       code="member_suspended")
    if check["status"] == "cancelled":
        raise _cancelled()
    if check["ends_at"] <= now:
        raise _ended()
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
            await _raise_closed(conn, event_id, now)
            raise Conflict("every seat is taken", field="event_id", code="event_full")
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
        raise _event_not_found()
    if event["ends_at"] <= now:
        raise _ended()
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
            raise _event_not_found()
        name, store_id, status, starts_at, ends_at, points = (
            event.name, event.store_id, event.status, event.starts_at, event.ends_at,
            event.points)
        if store_id is not None and store_id != terminal.store_id:
            raise PermissionDenied("this event checks in at another store", field="event_id",
                                   code="event_at_another_store")
        if status == "cancelled":
            raise _cancelled()
        if ends_at <= now:
            raise _ended()
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
        result = CheckedIn(event_id=event_id, member_id=ledger.member_id, checked_in_at=now,
                           points_earned=points, action_id=action_id,
                           balance=Balance(available=posting.available,
                                           pending=posting.pending))
        return Planned(posting, 201, _encode(result), _CHECKIN, {
            "event_id": event_id, "terminal_id": terminal.terminal_id,
            "store_id": terminal.store_id, "action_id": action_id, "points": points,
            "action": ATTENDANCE_ACTION, "business_date": business_date(now, programme.timezone)})

    return await post(conn, read=read, build=build, idempotency=idempotency)
