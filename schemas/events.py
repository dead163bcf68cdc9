"""Events on the wire: what marketing staff create and edit, what a member sees and reserves,
what a till sends to check a member in."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from schemas.base import Code, Input, Instant, Name, Output, text
from schemas.points import Balance, MemberRef

Place = Annotated[str, text(200, min_length=1)]
Capacity = Annotated[int, Meta(ge=1, le=1_000_000)]
AttendancePoints = Annotated[int, Meta(ge=0, le=1_000_000)]
EventStatus = Literal["scheduled", "cancelled"]


class EventCreate(Input):
    """An event; with ``store_code`` only that store's terminals may check members in."""

    name: Name
    place: Place
    starts_at: Instant
    ends_at: Instant
    capacity: Capacity
    points: AttendancePoints = 0
    store_code: Code | None = None
    invitation_only: bool = True


class EventUpdate(Input):
    """Omitted fields stay; ``store_code`` null unbinds the event from its store; ``status``
    ``cancelled`` cancels it (for good)."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    place: Place | msgspec.UnsetType = msgspec.UNSET
    starts_at: Instant | msgspec.UnsetType = msgspec.UNSET
    ends_at: Instant | msgspec.UnsetType = msgspec.UNSET
    capacity: Capacity | msgspec.UnsetType = msgspec.UNSET
    points: AttendancePoints | msgspec.UnsetType = msgspec.UNSET
    store_code: Code | msgspec.UnsetType | None = msgspec.UNSET
    invitation_only: bool | msgspec.UnsetType = msgspec.UNSET
    status: EventStatus | msgspec.UnsetType = msgspec.UNSET


class _EventDetails(Output):
    """What an event is, where and when: the start of both the staff's and the member's view."""

    event_id: UUID
    name: str
    place: str
    store_code: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime


class Event(_EventDetails):
    """An event as staff see it, with the seats reserved and the members checked in."""

    capacity: int
    points: int
    invitation_only: bool
    status: EventStatus
    reserved: int
    checked_in: int
    created_at: dt.datetime
    updated_at: dt.datetime


class MyEvent(_EventDetails):
    """An event in the member app: what it is, and where the member stands with it."""

    points: int
    status: EventStatus
    seats_left: int
    invited: bool
    reserved: bool
    reserved_at: dt.datetime | None
    checked_in: bool
    checked_in_at: dt.datetime | None


class Reservation(Output):
    """A seat the member holds."""

    event_id: UUID
    member_id: UUID
    reserved_at: dt.datetime
    seats_left: int


class CheckIn(Input):
    member: MemberRef


class CheckedIn(Output):
    """A member checked in at the till, with the attendance points the visit earned."""

    event_id: UUID
    member_id: UUID
    checked_in_at: dt.datetime
    points_earned: int
    balance: Balance
    action_id: UUID


class EventGuest(Output):
    """A member invited to, holding a seat at, or checked in at an event (staff's view: no
    contact details)."""

    member_id: UUID
    member_number: str
    name: str
    invited_at: dt.datetime | None
    reserved_at: dt.datetime | None
    checked_in_at: dt.datetime | None


class EventAttendance(Output):
    """How many members an event invited, holds seats for and checked in."""

    invited: int
    reserved: int
    checked_in: int
