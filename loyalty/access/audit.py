"""Audit log of staff actions and reads of personal data (docs/security.md)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from loyalty.core.db import Connection


async def record_audit(
    conn: Connection, *, actor_kind: str, actor_id: UUID | None, action: str,
    subject_kind: str, subject_id: UUID | None, details: dict[str, Any] | None = None,
) -> None:
    """Written in the caller's transaction, so an action and its audit row commit together."""
    await conn.execute(
        """
        insert into audit_log (actor_kind, actor_id, action, subject_kind, subject_id, details)
        values ($1, $2, $3, $4, $5, $6)
        """,
        actor_kind, actor_id, action, subject_kind, subject_id, details or {},
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
