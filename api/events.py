"""Events: staff create and edit them, members reserve seats in the app, a store terminal checks
members in (attendance earns points once). Invitations come from campaigns
(``loyalty.promotions.store_events.invite_members``)."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from api.auth import members_only, staff_with, terminals_only
from api.deps import (
    MEMBER_DEPENDENCIES,
    STAFF_DEPENDENCIES,
    TERMINAL_DEPENDENCIES,
    Db,
    Ledger,
    Me,
    Staff,
    Svc,
    Till,
    utc_now,
)
from api.idempotency import idempotent, stored_as
from api.params import Cursor, Limit
from api.pos import written_once
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS, MARKETING_READERS
from loyalty.core.idempotency import Idempotency
from loyalty.promotions.event_seats import cancel_reservation, check_in, my_events, reserve_seat
from loyalty.promotions.store_events import create_event, get_event, list_events, update_event
from schemas.base import Page
from schemas.events import CheckedIn, CheckIn, Event, EventCreate, EventUpdate, MyEvent, Reservation


class EventsController(Controller):
    path = "/v1/events"
    tags = ["events"]
    guards = [staff_with(*MARKETING_READERS)]
    dependencies = STAFF_DEPENDENCIES

    @post("", operation_id="createEvent", status_code=201, guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent
    async def create(self, data: JSONBody[EventCreate], staff: Staff, conn: Db) -> Event:
        """A new event: place, time, capacity, points for attending, invitation only or open."""
        event = await create_event(conn, data, staff_id=staff.staff_id, now=utc_now())
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="events.create", subject_kind="event",
                           subject_id=event.event_id, details={"name": event.name})
        return event

    @get("", operation_id="listEvents")
    async def list_(self, conn: Db, limit: Limit = 50, cursor: Cursor = None) -> Page[Event]:
        """Events, latest start first, with seats reserved and members checked in."""
        return await list_events(conn, limit=limit, cursor=cursor)

    @get("/{event_id:uuid}", operation_id="getEvent")
    async def read(self, event_id: FromPath[UUID], conn: Db) -> Event:
        """One event, with seats reserved and members checked in."""
        return await get_event(conn, event_id)

    @patch("/{event_id:uuid}", operation_id="updateEvent", guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent
    async def update(self, event_id: FromPath[UUID], data: JSONBody[EventUpdate], staff: Staff,
                     conn: Db) -> Event:
        """Change an event; the capacity never below the seats reserved. ``status: cancelled``
        cancels it for good."""
        event = await update_event(conn, event_id, data, now=utc_now())
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="events.update", subject_kind="event", subject_id=event_id,
                           details={"fields": sorted(f for f in data.__struct_fields__
                                                     if getattr(data, f) is not msgspec.UNSET)})
        return event


class MyEventsController(Controller):
    path = "/v1/me/events"
    tags = ["member app"]
    guards = [members_only]
    dependencies = MEMBER_DEPENDENCIES

    @get("", operation_id="listMyEvents")
    async def list_(self, me: Me, ledger: Ledger, limit: Limit = 50,
                    cursor: Cursor = None) -> Page[MyEvent]:
        """Events I am invited to or have a seat at: upcoming soonest first, then past ones."""
        return await my_events(ledger, me.member_id, now=utc_now(), limit=limit, cursor=cursor)

    @post("/{event_id:uuid}/rsvp", operation_id="reserveMySeat", status_code=201,
          responses={200: ResponseSpec(data_container=Reservation,
                                                     description="Already held")})
    @idempotent
    async def rsvp(self, event_id: FromPath[UUID], me: Me, conn: Db) -> Response[Reservation]:
        """Reserve a seat: 201 when taken now, 200 when I already held it (one seat either
        way); 409 ``event_full`` when none is left."""
        reserved = await reserve_seat(conn, event_id=event_id, member_id=me.member_id,
                                      now=utc_now())
        return Response(reserved.reservation, status_code=201 if reserved.new else 200)

    @delete("/{event_id:uuid}/rsvp", operation_id="cancelMySeat", status_code=204)
    @idempotent
    async def cancel(self, event_id: FromPath[UUID], me: Me, conn: Db) -> None:
        """Give my seat back; 404 ``not_reserved`` when I hold none."""
        await cancel_reservation(conn, event_id=event_id, member_id=me.member_id,
                                 now=utc_now())


class PosEventsController(Controller):
    path = "/v1/pos/events"
    tags = ["point of sale"]
    guards = [terminals_only]
    dependencies = TERMINAL_DEPENDENCIES

    @post("/{event_id:uuid}/checkins", operation_id="posCheckInAtEvent", status_code=201,
          responses={201: stored_as(CheckedIn)})
    @idempotent(required=True, in_ledger=True)
    async def check_in(
        self, event_id: FromPath[UUID], data: JSONBody[CheckIn], terminal: Till, ledger: Ledger,
        services: Svc, idempotency: Idempotency,
    ) -> Response[bytes]:
        """Check in a member holding a seat; attendance points once per member and event (a
        second check-in is 409 ``already_checked_in``), exactly once per key."""
        return await written_once(
            data.member, services, ledger, idempotency,
            lambda member: check_in(
                ledger, event_id=event_id, member=member, terminal=terminal,
                idempotency=idempotency, rulebook=services.rulebook,
                programme=services.programme, now=utc_now()))

