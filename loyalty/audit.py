"""Audit log of staff actions and reads of personal data (SPEC.md, privacy)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from loyalty.db import Connection


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
