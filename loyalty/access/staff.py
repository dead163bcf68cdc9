"""Staff accounts: created by an admin (the first one from the CLI), logging in with a role."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection, fetch_returning
from loyalty.core.errors import Conflict, NotFound
from loyalty.core.normalize import normalize_email, normalize_text
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
                """,  # noqa: S608 - a module constant column list
                normalize_email(email), password_hash, role, normalize_text(display_name),
            )
    except asyncpg.UniqueViolationError:
        raise Conflict("a staff account with this e-mail exists", field="email",
                       code="email_taken") from None
    return msgspec.convert(dict(row), StaffAccount)


async def find_staff_login(conn: Connection, email: str) -> Any:
    """(staff_id, password_hash, role, display_name) of an active account, or None."""
    try:
        email = normalize_email(email)
    except Exception:
        return None
    return await conn.fetchrow(
        "select staff_id, password_hash, role, display_name from staff where email = $1 and active",
        email,
    )


async def staff_role(conn: Connection, staff_id: UUID) -> str | None:
    role: str | None = await conn.fetchval(
        "select role from staff where staff_id = $1 and active", staff_id
    )
    return role


# Both end every session of the account, on every API instance within a second: the trigger
# of migration 0015 reacts to the row, whichever statement changes it.


async def deactivate_staff(conn: Connection, email: str) -> StaffAccount:
    """Stop an account from signing in; its sessions and access tokens end."""
    return await _change_staff(conn, email, "update staff set active = false where email = $1"  # noqa: S608 - a module constant column list
                               f" returning {_COLUMNS}")


async def set_staff_role(conn: Connection, email: str, role: str) -> StaffAccount:
    """Give an account another role; its sessions end, so its next sign-in carries the role."""
    return await _change_staff(conn, email, "update staff set role = $2 where email = $1"  # noqa: S608 - a module constant column list
                               f" returning {_COLUMNS}", role)


async def _change_staff(conn: Connection, email: str, sql: str, *args: object) -> StaffAccount:
    row = await conn.fetchrow(sql, normalize_email(email), *args)
    if row is None:
        raise NotFound(f"no staff account has the e-mail address {email}: check it is the "
                       "address the account signs in with", field="email")
    return msgspec.convert(dict(row), StaffAccount)
