"""emit() and the contract of the events: one registry entry per event type of issue 15, the
same API version in Python and in the database, envelopes a receiver can decode."""

from __future__ import annotations

import datetime as dt
from uuid import UUID, uuid4

import msgspec
import pytest

from loyalty.core.db import Connection
from loyalty.core.outbox import API_VERSION, emit
from schemas.outbox import EVENT_TYPES, EventRsvpData, envelope_type

# The event types issue 15 names, "at least".
ISSUE_TYPES = {
    "member.registered", "member.updated", "member.status_changed", "member.merged",
    "points.earned", "points.redeemed", "points.reversed", "points.adjusted", "points.expired",
    "points.expiring_soon", "tier.changed", "coupon.issued", "coupon.redeemed",
    "coupon.reinstated", "purchase.recorded", "purchase.returned", "campaign.launched",
    "event.rsvp", "event.checked_in",
    # issue 16
    "member.erased",
}
# Issue 16's: a reset link and a verification code for the brand's mailer to send.
ISSUE_16_TYPES = {"member.password_reset_requested", "member.verification_requested"}


def test_the_registry_names_every_event_type_with_a_payload_struct() -> None:
    assert set(EVENT_TYPES) == ISSUE_TYPES | ISSUE_16_TYPES
    assert all(issubclass(kind, msgspec.Struct) for kind in EVENT_TYPES.values())
    # One payload per type: a receiver can tell them apart by name in the document too.
    assert len({kind.__name__ for kind in EVENT_TYPES.values()}) == len(EVENT_TYPES)


async def test_the_database_writes_the_api_version_python_writes(db: Connection) -> None:
    assert await db.fetchval("select outbox_api_version()") == API_VERSION


async def test_emit_writes_one_event_in_the_callers_transaction(db: Connection) -> None:
    member_id, event_id = uuid4(), uuid4()
    at = dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC)
    data = EventRsvpData(member_id=member_id, member_number="1234", event_id=event_id,
                         reserved_at=at, seats_left=3)
    first = await emit(db, "event.rsvp", data, member_id=member_id, occurred_at=at)
    second = await emit(db, "event.rsvp", data, member_id=member_id)
    rows = await db.fetch("select event_id, type, occurred_at, api_version, member_id, data"
                          " from outbox where member_id = $1 order by seq", member_id)
    assert [r["event_id"] for r in rows] == [first, second]
    # UUID v7: time-ordered to the millisecond (within one, seq orders them: migration 0021).
    assert first.version == 7
    assert first.int >> 80 <= second.int >> 80
    assert rows[0]["occurred_at"] == at
    assert rows[0]["api_version"] == API_VERSION
    assert msgspec.convert(rows[0]["data"], EventRsvpData, strict=False) == data


def test_an_envelope_decodes_with_its_payload_typed() -> None:
    kind = envelope_type("event.rsvp")
    member_id, event_id = uuid4(), uuid4()
    body = msgspec.json.encode({
        "id": str(UUID(int=7)), "type": "event.rsvp", "occurred_at": "2026-12-05T10:00:00Z",
        "api_version": API_VERSION,
        "data": {"member_id": str(member_id), "member_number": "1", "event_id": str(event_id),
                 "reserved_at": "2026-12-05T10:00:00Z", "seats_left": 2}})
    decoded = msgspec.json.decode(body, type=kind)
    assert isinstance(decoded.data, EventRsvpData)  # type: ignore[attr-defined]
    assert decoded.data.seats_left == 2  # type: ignore[attr-defined]
    wrong_type = body.replace(b'"type":"event.rsvp"', b'"type":"event.checked_in"')
    with pytest.raises(msgspec.ValidationError, match="type"):
        msgspec.json.decode(wrong_type, type=kind)
