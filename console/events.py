"""Events: the list with capacity and seats taken, the create form, and an event's page with
its invitations, seats and check-ins, through the functions behind /v1/events (api/events.py)
and the invitation campaigns use (loyalty.promotions.store_events.invite_members). Members'
names only for roles that read profiles; contact details never."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Redirect
from msgspec import Struct

from console.forms import (
    PAGE_SIZE,
    Cursor,
    Shown,
    Unreadable,
    failed_path,
    local_moment,
    may_edit,
    problems,
    whole_number,
)
from console.pages import render, staff_session
from console.services import AnyRequest, services
from console.session import check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS, MARKETING_READERS, PROFILE_READERS
from loyalty.core.db import transaction
from loyalty.core.errors import LoyaltyError
from loyalty.promotions.segments import get_segment, list_segments, segment_filter
from loyalty.promotions.store_events import (
    create_event,
    event_attendance,
    event_guests,
    get_event,
    invite_members,
    list_events,
)
from schemas.base import decode_edge
from schemas.events import EventCreate

SEGMENT_CHOICES = 200


class EventForm(Struct):
    name: str = ""
    place: str = ""
    starts_at: str = ""
    ends_at: str = ""
    capacity: str = ""
    points: str = "0"
    store_code: str = ""
    invitation_only: str = ""
    csrf_token: str = ""


class InviteForm(Struct):
    segment_id: str = ""
    csrf_token: str = ""


def _read_event(form: EventForm, timezone: str) -> tuple[EventCreate | None, dict[str, str]]:
    """The form as the API's body, or the fields to fix."""
    errors: dict[str, str] = {}
    data: dict[str, Any] = {"name": form.name.strip(), "place": form.place.strip(),
                            "store_code": form.store_code.strip() or None,
                            "invitation_only": form.invitation_only == "on"}
    readers: dict[str, Any] = {
        "starts_at": lambda: local_moment(form.starts_at, timezone),
        "ends_at": lambda: local_moment(form.ends_at, timezone),
        "capacity": lambda: whole_number(form.capacity),
        "points": lambda: whole_number(form.points, optional=True) or 0,
    }
    for field, read in readers.items():
        try:
            data[field] = read()
        except Unreadable:
            errors[field] = "invalid"
    for path in problems({k: v for k, v in data.items() if k not in errors}, EventCreate):
        errors[path[0]] = "invalid"
    if errors:
        return None, errors
    try:
        return msgspec.convert(data, EventCreate, dec_hook=decode_edge), {}
    except msgspec.ValidationError as error:
        path = failed_path(error)
        return None, {path[0] if path else "name": "invalid"}


@get("/events")
async def events_page(request: AnyRequest, cursor: Cursor = None) -> Response[str]:
    """Events latest start first, with capacity, seats taken and check-ins."""
    session = await staff_session(request, MARKETING_READERS)
    async with transaction(services(request).pool) as conn:
        page = await list_events(conn, limit=PAGE_SIZE, cursor=cursor or None)
    template = "events_results.html" if request.headers.get("hx-request") else "events.html"
    return render(request, template, session=session, page=page,
                  editor=session.role in MARKETING_EDITORS, now=dt.datetime.now(dt.UTC))


def _event_form(request: AnyRequest, form: EventForm, errors: dict[str, str], status_code: int,
                session: Any) -> Response[str]:
    return render(request, "event_form.html", session=session, form=form, errors=errors,
                  status_code=status_code)


@get("/events/new")
async def new_event_page(request: AnyRequest) -> Response[str]:
    session = await staff_session(request, MARKETING_EDITORS)
    return _event_form(request, EventForm(invitation_only="on"), {}, 200, session)


@post("/events", status_code=303)
async def create_event_submit(request: AnyRequest,
                              data: URLEncodedBody[EventForm]) -> Response[Any]:
    """Create the event as POST /v1/events does; the form again (400, nothing saved) with
    what to fix."""
    session = await staff_session(request, MARKETING_READERS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    may_edit(session, MARKETING_EDITORS)
    svc = services(request)
    body, errors = _read_event(data, svc.settings.timezone)
    if body is None:
        return _event_form(request, data, errors, 400, session)
    staff_id = session.principal.staff_id
    try:
        async with transaction(svc.pool) as conn:
            event = await create_event(conn, body, staff_id=staff_id,
                                       now=dt.datetime.now(dt.UTC))
            await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                               action="events.create", subject_kind="event",
                               subject_id=event.event_id,
                               details={"name": event.name, "via": "console"})
    except LoyaltyError as error:
        field = error.field if error.field in EventForm.__struct_fields__ else "name"
        return _event_form(request, data, {field: error.code or "invalid"}, 400, session)
    return Redirect(f"/console/events/{event.event_id}", status_code=303)


async def _event_page(request: AnyRequest, event_id: UUID, *, session: Any,
                      cursor: str | None = None, errors: dict[str, str] | None = None,
                      invited: int | None = None, status_code: int = 200) -> Response[str]:
    svc = services(request)
    names = session.role in PROFILE_READERS
    editor = session.role in MARKETING_EDITORS
    guests = None
    async with transaction(svc.pool) as conn:
        event = await get_event(conn, event_id)
        attendance = await event_attendance(conn, event_id)
        if names:
            guests = await event_guests(conn, event_id, limit=PAGE_SIZE, cursor=cursor)
            await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                               action="events.guests", subject_kind="event",
                               subject_id=event_id,
                               details={"results": len(guests.items), "via": "console"})
        segments = (await list_segments(conn, limit=SEGMENT_CHOICES)).items if editor else []
    if request.headers.get("hx-request") and cursor:
        return render(request, "event_guests.html", session=session, event=event,
                      guests=guests)
    now = dt.datetime.now(dt.UTC)
    return render(request, "event.html", session=session, event=event, attendance=attendance,
                  guests=guests, names=names, editor=editor, segments=segments,
                  errors=errors or {}, invited=invited, status_code=status_code, now=now,
                  open=event.status == "scheduled" and event.ends_at > now)


@get("/events/{event_id:uuid}")
async def event_page(request: AnyRequest, event_id: FromPath[UUID], cursor: Cursor = None,
                     invited: Shown = None) -> Response[str]:
    """One event: when and where, capacity and seats taken, invitations, check-ins, and the
    members (names for roles that read profiles); editors invite a segment from here."""
    session = await staff_session(request, MARKETING_READERS)
    return await _event_page(request, event_id, session=session, cursor=cursor or None,
                             invited=invited)


@post("/events/{event_id:uuid}/invitations", status_code=303)
async def invite_segment(request: AnyRequest, event_id: FromPath[UUID],
                         data: URLEncodedBody[InviteForm]) -> Response[Any]:
    """Invite a saved segment's reachable members, as an invitation campaign does; members
    already invited keep their invitation, so a second submit invites no one twice."""
    session = await staff_session(request, MARKETING_READERS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    may_edit(session, MARKETING_EDITORS)
    svc = services(request)
    staff_id = session.principal.staff_id
    now = dt.datetime.now(dt.UTC)
    try:
        segment_id = UUID(data.segment_id[:100])
    except ValueError:
        return await _event_page(request, event_id, session=session,
                                 errors={"segment_id": "invalid"}, status_code=400)
    async with transaction(svc.pool) as conn:
        try:
            segment = await get_segment(conn, segment_id)
        except LoyaltyError:
            segment = None
        if segment is not None:
            invited = await invite_members(
                conn, event_id=event_id,
                member_filter=await segment_filter(conn, segment_id, now=now),
                campaign_id=None, now=now)
            await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                               action="events.invite", subject_kind="event",
                               subject_id=event_id,
                               details={"segment_id": str(segment_id), "invited": invited,
                                        "via": "console"})
    if segment is None:
        return await _event_page(request, event_id, session=session,
                                 errors={"segment_id": "invalid"}, status_code=400)
    return Redirect(f"/console/events/{event_id}?invited={invited}", status_code=303)
