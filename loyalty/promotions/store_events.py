"""In-store events: staff create, read and edit them, and campaigns invite members.

Members' seats and the check-in at the till are ``loyalty.promotions.event_seats``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.normalize import normalize_text
from loyalty.core.paging import (
    decode_cursor,
    decode_parts,
    encode_cursor,
    encode_parts,
    invalid_cursor,
)
from loyalty.members.filter import REACHABLE, MemberFilter
from schemas.base import Instant, Page, decode_edge
from schemas.events import Event, EventAttendance, EventCreate, EventGuest, EventUpdate


def event_not_found() -> NotFound:
    """The refusal of an event id that names no event."""
    return NotFound("no such event", field="event_id", code="event_not_found")


def event_cancelled() -> Conflict:
    """The refusal of an event that is cancelled: no invitations, seats or check-ins."""
    return Conflict("this event is cancelled", field="event_id", code="event_cancelled")


def event_ended() -> Conflict:
    """The refusal of an event that is over: no invitations, seats or check-ins."""
    return Conflict("this event has ended", field="event_id", code="event_ended")


def parse_instant(text: str) -> dt.datetime:
    """A moment read from a cursor, bounded as any moment a request carries."""
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
        raise event_not_found()
    return _event(row)


async def list_events(
    conn: Connection, *, limit: int = 50, cursor: str | None = None,
) -> Page[Event]:
    """Events latest start first, one keyset page at a time."""
    after: tuple[dt.datetime, UUID] | None = None
    if cursor is not None:
        starts, event_id = decode_parts(cursor, 2)
        try:
            after = parse_instant(starts), UUID(event_id)
        except ValueError:
            raise invalid_cursor() from None
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
        next_cursor = encode_parts(last.starts_at.isoformat(), str(last.event_id))
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
        raise event_not_found()
    if row["status"] == "cancelled":
        # Members were told it is off; a cancelled event stays cancelled and unchanged.
        raise event_cancelled()
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


# -- who is coming -----------------------------------------------------------------------------

_GUESTS = """
with guests as (
    select member_id from event_invitations where event_id = $1
    union
    select member_id from event_reservations where event_id = $1 and cancelled_at is null
    union
    select member_id from event_checkins where event_id = $1
)
select m.member_id, m.member_number, m.name, i.invited_at, r.reserved_at, c.checked_in_at
  from guests g
  join members m on m.member_id = g.member_id
  left join event_invitations i on i.member_id = g.member_id and i.event_id = $1
  left join event_reservations r on r.member_id = g.member_id and r.event_id = $1
                                and r.cancelled_at is null
  left join event_checkins c on c.member_id = g.member_id and c.event_id = $1
 where $2::uuid is null or g.member_id > $2
 order by g.member_id limit $3
"""


async def event_guests(
    conn: Connection, event_id: UUID, *, limit: int = 50, cursor: str | None = None,
) -> Page[EventGuest]:
    """The members invited to, holding a seat at or checked in at the event, in member-id
    order, one keyset page at a time, each with when they were invited, reserved, came."""
    await get_event(conn, event_id)
    rows = await conn.fetch(_GUESTS, event_id, decode_cursor(cursor) if cursor else None,
                            limit + 1)
    items = [msgspec.convert(dict(row), EventGuest) for row in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].member_id)
                if len(rows) > limit else None)


async def event_attendance(conn: Connection, event_id: UUID) -> EventAttendance:
    """How many members the event invited, holds seats for, and checked in."""
    row = await conn.fetchrow(
        """
        select (select count(*) from event_invitations where event_id = $1) as invited,
               e.reserved,
               (select count(*) from event_checkins where event_id = $1) as checked_in
          from events e where e.event_id = $1
        """, event_id)
    if row is None:
        raise event_not_found()
    return EventAttendance(invited=row["invited"], reserved=row["reserved"],
                           checked_in=row["checked_in"])


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
        await raise_if_closed(conn, event_id, now)
    return int(row["invited"])


async def raise_if_closed(conn: Connection, event_id: UUID, now: dt.datetime) -> None:
    """Why an event takes no more invitations or seats: missing, cancelled or over."""
    event = await conn.fetchrow("select status, ends_at from events where event_id = $1",
                                event_id)
    if event is None:
        raise event_not_found()
    if event["status"] == "cancelled":
        raise event_cancelled()
    if event["ends_at"] <= now:
        raise event_ended()
