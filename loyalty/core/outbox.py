"""Writing events into the transactional outbox (migration 0021): on the connection, and so in
the transaction, of the change the event reports. A rolled-back change leaves no event; a
committed one cannot lose its event. Set-based changes write their events with an
``insert into outbox ... select`` of their own, naming ``API_VERSION`` the same way."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

import msgspec

from loyalty.core.db import Connection

# The version of the event payloads (schemas/outbox.py) a receiver is sent, in the envelope.
API_VERSION = "2026-12-01"


async def emit(conn: Connection, type_: str, data: msgspec.Struct, *,
               member_id: UUID | None = None, occurred_at: dt.datetime | None = None) -> UUID:
    """Writes one event of ``type_`` carrying ``data``; its id."""
    event_id: UUID = await conn.fetchval(
        """
        insert into outbox (type, occurred_at, api_version, member_id, data)
        values ($1, coalesce($2, now()), $3, $4, $5)
        returning event_id
        """, type_, occurred_at, API_VERSION, member_id, msgspec.to_builtins(data))
    return event_id
