"""Staff accounts: created by an admin (the first one from the CLI), logging in with a role."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.db import Connection, fetch_returning
from loyalty.errors import Conflict
from loyalty.normalize import normalize_email, normalize_text
from schemas.admin import StaffAccount

_COLUMNS = "staff_id, email, role, display_name, active, created_at"


async def create_staff(
    conn: Connection, *, email: str, password_hash: str, role: str, display_name: str = ""
) -> StaffAccount:
    try:
        async with conn.transaction():
            row = await fetch_returning(
                conn,
                f"""
                insert into staff (email, password_hash, role, display_name)
                values ($1, $2, $3, $4) returning {_COLUMNS}
                """,
                normalize_email(email), password_hash, role, normalize_text(display_name),
            )
    except asyncpg.UniqueViolationError:
        raise Conflict("a staff account with this e-mail exists", field="email",
                       code="email_taken") from None
    return msgspec.convert(dict(row), StaffAccount)


async def find_staff_login(conn: Connection, email: str) -> Any:
    """(staff_id, password_hash, role) of an active account, or None."""
    try:
        email = normalize_email(email)
    except Exception:
        return None
    return await conn.fetchrow(
        "select staff_id, password_hash, role from staff where email = $1 and active", email
    )


async def staff_role(conn: Connection, staff_id: UUID) -> str | None:
    role: str | None = await conn.fetchval(
        "select role from staff where staff_id = $1 and active", staff_id
    )
    return role
