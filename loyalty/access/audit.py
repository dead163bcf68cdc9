"""Audit log of staff actions and reads of personal data (docs/security.md)."""

from __future__ import annotations

import datetime as dt
from contextvars import ContextVar
from typing import Any, Literal
from uuid import UUID

import msgspec

from loyalty.core.db import Connection
from loyalty.core.paging import decode_parts, encode_parts, invalid_cursor
from schemas.admin import AuditEntry
from schemas.base import Page

# The client's address of the request being served: set by the API's middleware around every
# request (console pages included), written with each audit row as where it came from. None
# outside a request (jobs, the CLI).
REQUEST_ADDRESS: ContextVar[str | None] = ContextVar("request_address", default=None)


async def record_audit(
    conn: Connection, *, actor_kind: str, actor_id: UUID | None, action: str,
    subject_kind: str, subject_id: UUID | None, details: dict[str, Any] | None = None,
) -> None:
    """Written in the caller's transaction, so an action and its audit row commit together."""
    await conn.execute(
        """
        insert into audit_log (actor_kind, actor_id, action, subject_kind, subject_id, details,
                               address)
        values ($1, $2, $3, $4, $5, $6, $7)
        """,
        actor_kind, actor_id, action, subject_kind, subject_id, details or {},
        REQUEST_ADDRESS.get(),
    )


async def record_till_lookup(
    conn: Connection, *, terminal_id: UUID, member_id: UUID | None,
    by: Literal["card", "number", "phone"],
) -> None:
    """A till looked a member up (``member_id`` None: nobody matched). The kind of identifier
    is kept, never its value: a phone number in the audit log would be one more copy of it."""
    await record_audit(conn, actor_kind="terminal", actor_id=terminal_id,
                       action="pos.members.lookup", subject_kind="member", subject_id=member_id,
                       details={"by": by, "found": member_id is not None})


async def list_audit(
    conn: Connection, *, actor_id: UUID | None = None, subject_id: UUID | None = None,
    action: str | None = None, recorded_from: dt.datetime | None = None,
    recorded_to: dt.datetime | None = None, limit: int = 50, cursor: str | None = None,
) -> Page[AuditEntry]:
    """Audit rows newest first, narrowed by who acted, on whom or what (a member, a staff
    account, ...), which action, and when (``recorded_from`` inclusive, ``recorded_to`` not)."""
    after_at: dt.datetime | None = None
    after_id: UUID | None = None
    if cursor:
        at, key = decode_parts(cursor, 2)
        try:
            after_at, after_id = dt.datetime.fromisoformat(at), UUID(key)
        except ValueError:
            raise invalid_cursor() from None
    rows = await conn.fetch(
        """
        select a.audit_id, a.recorded_at, a.actor_kind, a.actor_id, s.email as actor_email,
               a.action, a.subject_kind, a.subject_id, a.details, a.address
          from audit_log a
          left join staff s on a.actor_kind = 'staff' and s.staff_id = a.actor_id
         where ($1::uuid is null or a.actor_id = $1) and ($2::uuid is null or a.subject_id = $2)
           and ($3::text is null or a.action = $3)
           and ($4::timestamptz is null or a.recorded_at >= $4)
           and ($5::timestamptz is null or a.recorded_at < $5)
           and ($6::timestamptz is null or (a.recorded_at, a.audit_id) < ($6, $7::uuid))
         order by a.recorded_at desc, a.audit_id desc
         limit $8
        """,
        actor_id, subject_id, action, recorded_from, recorded_to, after_at, after_id, limit + 1)
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_parts(last["recorded_at"].isoformat(), str(last["audit_id"]))
    return Page(items=[msgspec.convert(dict(r), AuditEntry) for r in rows[:limit]],
                next_cursor=next_cursor)


async def delete_old_audit_rows(conn: Connection, *, retention_days: int,
                                now: dt.datetime) -> dict[str, int]:
    """The retention job: rows recorded on UTC days wholly older than ``retention_days`` leave,
    whole days at a time; ``retention_days`` 0 keeps everything. The only delete the table's
    trigger (migration 0026) lets through."""
    if retention_days <= 0:
        return {"deleted": 0}
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    before = today - dt.timedelta(days=retention_days)
    async with conn.transaction():
        await conn.execute("set local loyalty.audit_retention = 'on'")
        status = await conn.execute("delete from audit_log where recorded_at < $1", before)
    return {"deleted": int(status.split()[-1])}
