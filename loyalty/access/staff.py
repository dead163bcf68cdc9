"""Staff accounts: created by an admin (the first one from the CLI), logging in with a role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.access.sessions import end_sessions
from loyalty.core.db import Connection, fetch_returning
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.normalize import normalize_email, normalize_text
from loyalty.core.paging import decode_parts, encode_parts
from schemas.admin import StaffAccount
from schemas.base import Page

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


async def staff_password_hash(conn: Connection, staff_id: UUID) -> str | None:
    """The stored hash of an active account, or None."""
    stored: str | None = await conn.fetchval(
        "select password_hash from staff where staff_id = $1 and active", staff_id)
    return stored


async def set_staff_password(conn: Connection, staff_id: UUID, password_hash: str, *,
                             keep_session: UUID | None) -> None:
    """Store an account's new password and end its other sessions (console ones included)."""
    changed = await conn.execute(
        "update staff set password_hash = $2 where staff_id = $1 and active", staff_id,
        password_hash)
    if changed.split()[-1] == "0":
        raise NotFound("no active staff account has this id: sign in again", field="staff_id")
    await end_sessions(conn, staff_id=staff_id, keep=keep_session)


# Both end every session of the account, on every API instance within a second: the trigger
# of migration 0015 reacts to the row, whichever statement changes it.


async def deactivate_staff(conn: Connection, email: str) -> StaffAccount:
    """Stop an account from signing in; its sessions and access tokens end."""
    changed = await update_staff(conn, await staff_id_by_email(conn, email), active=False)
    return changed.account


async def set_staff_role(conn: Connection, email: str, role: str) -> StaffAccount:
    """Give an account another role; its sessions end, so its next sign-in carries the role."""
    changed = await update_staff(conn, await staff_id_by_email(conn, email), role=role)
    return changed.account


async def staff_id_by_email(conn: Connection, email: str) -> UUID:
    """The id of the account that signs in with ``email`` (active or not); NotFound if none."""
    try:
        normalized = normalize_email(email)
    except InvalidInput:
        normalized = None
    staff_id: UUID | None = None if normalized is None else await conn.fetchval(
        "select staff_id from staff where email = $1", normalized)
    if staff_id is None:
        raise NotFound(f"no staff account has the e-mail address {email}: check it is the "
                       "address the account signs in with", field="email")
    return staff_id


# Taken by every change that could leave no active admin, for the rest of its transaction:
# two admins switching each other off at once are then told apart, not both let through.
_ADMINS_LOCK = "loyalty.staff.active_admins"


@dataclass(frozen=True, slots=True)
class StaffChanged:
    """An account as an update left it, and what the update changed, ``{field: [from, to]}``
    (for the audit log; empty when nothing did)."""

    account: StaffAccount
    changes: dict[str, list[object]]


async def update_staff(
    conn: Connection, staff_id: UUID, *, role: str | None = None,
    display_name: str | None = None, active: bool | None = None,
) -> StaffChanged:
    """Change an account's role, display name or whether it may sign in (None: as it is).
    Deactivating or demoting the last active admin is refused (409 ``last_admin``)."""
    async with conn.transaction():
        current = await conn.fetchrow(
            f"select {_COLUMNS} from staff where staff_id = $1 for update",  # noqa: S608 - a module constant column list
            staff_id)
        if current is None:
            raise NotFound("no staff account has this id: reload the list of staff",
                           field="staff_id")
        stays_admin = ((role if role is not None else current["role"]) == "admin"
                       and (active if active is not None else current["active"]))
        if current["role"] == "admin" and current["active"] and not stays_admin:
            await conn.execute("select pg_advisory_xact_lock(hashtext($1))", _ADMINS_LOCK)
            others = await conn.fetchval(
                "select count(*) from staff where role = 'admin' and active and staff_id <> $1",
                staff_id)
            if others == 0:
                raise Conflict("this is the last active admin: make another account an admin "
                               "first, then change this one", code="last_admin",
                               field="active" if active is False else "role")
        row = await fetch_returning(
            conn,
            f"""
            update staff set role = coalesce($2, role),
                             display_name = coalesce($3, display_name),
                             active = coalesce($4, active)
             where staff_id = $1 returning {_COLUMNS}
            """,  # noqa: S608 - a module constant column list
            staff_id, role, None if display_name is None else normalize_text(display_name),
            active)
    changes = {name: [current[name], row[name]] for name in ("role", "display_name", "active")
               if current[name] != row[name]}
    return StaffChanged(msgspec.convert(dict(row), StaffAccount), changes)


async def get_staff(conn: Connection, staff_id: UUID) -> StaffAccount:
    row = await conn.fetchrow(
        f"select {_COLUMNS} from staff where staff_id = $1", staff_id)  # noqa: S608 - a module constant column list
    if row is None:
        raise NotFound("no staff account has this id: reload the list of staff",
                       field="staff_id")
    return msgspec.convert(dict(row), StaffAccount)


async def list_staff(
    conn: Connection, *, active: bool | None = None, role: str | None = None,
    limit: int = 50, cursor: str | None = None,
) -> Page[StaffAccount]:
    """Staff accounts by e-mail address, a page at a time, optionally only active (or
    inactive) ones, or one role's."""
    after = decode_parts(cursor, 1)[0] if cursor else None
    rows = await conn.fetch(
        f"""
        select {_COLUMNS} from staff
         where ($1::boolean is null or active = $1) and ($2::text is null or role = $2)
           and ($3::text is null or email > $3)
         order by email limit $4
        """,  # noqa: S608 - a module constant column list
        active, role, after, limit + 1)
    next_cursor = encode_parts(rows[limit - 1]["email"]) if len(rows) > limit else None
    return Page(items=[msgspec.convert(dict(r), StaffAccount) for r in rows[:limit]],
                next_cursor=next_cursor)
