"""Stores and the checkout terminals bound to them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.access.terminal_keys import new_api_key
from loyalty.core.db import Connection, fetch_returning
from loyalty.core.errors import Conflict, NotFound
from loyalty.core.normalize import normalize_text
from schemas.admin import Store, Terminal, TerminalCreated

_STORE_COLUMNS = "store_id, code, name, created_at"


async def create_store(conn: Connection, *, code: str, name: str) -> Store:
    try:
        async with conn.transaction():
            row = await fetch_returning(
                conn,
                f"insert into stores (code, name) values ($1, $2) returning {_STORE_COLUMNS}",  # noqa: S608 - a module constant column list
                code, normalize_text(name),
            )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"store {code} exists", field="code", code="store_exists") from None
    return msgspec.convert(dict(row), Store)


async def ensure_store(conn: Connection, *, code: str, name: str | None = None) -> Store:
    """The store with ``code``, created (named after its code) when new."""
    row = await fetch_returning(
        conn,
        f"""
        with created as (
            insert into stores (code, name) values ($1, $2)
            on conflict (code) do nothing returning {_STORE_COLUMNS})
        select {_STORE_COLUMNS} from created
        union all
        select {_STORE_COLUMNS} from stores where code = $1
        limit 1
        """,  # noqa: S608 - a module constant column list
        code, normalize_text(name or code),
    )
    return msgspec.convert(dict(row), Store)


async def list_stores(conn: Connection) -> list[Store]:
    rows = await conn.fetch(f"select {_STORE_COLUMNS} from stores order by code")  # noqa: S608 - a module constant column list
    return [msgspec.convert(dict(row), Store) for row in rows]


async def get_store_by_code(conn: Connection, code: str) -> Store:
    row = await conn.fetchrow(f"select {_STORE_COLUMNS} from stores where code = $1", code)  # noqa: S608 - a module constant column list
    if row is None:
        raise NotFound(f"no store {code}", field="store_code")
    return msgspec.convert(dict(row), Store)


_TERMINAL_SQL = """
    select t.terminal_id, t.name, t.key_prefix, t.created_at, t.revoked_at,
           s.store_id, s.code, s.name as store_name, s.created_at as store_created_at
      from terminals t join stores s using (store_id)
"""


def _terminal(row: Any) -> Terminal:
    return Terminal(
        terminal_id=row["terminal_id"], name=row["name"], key_prefix=row["key_prefix"],
        created_at=row["created_at"], revoked_at=row["revoked_at"],
        store=Store(store_id=row["store_id"], code=row["code"], name=row["store_name"],
                    created_at=row["store_created_at"]),
    )


async def create_terminal(
    conn: Connection, *, store: Store, name: str = "", created_by: UUID | None = None
) -> TerminalCreated:
    """A terminal for ``store`` with a fresh API key, returned this once and stored hashed."""
    api_key, prefix, key_hash = new_api_key()
    terminal_id = await conn.fetchval(
        """
        insert into terminals (store_id, name, key_prefix, key_hash, created_by)
        values ($1, $2, $3, $4, $5) returning terminal_id
        """,
        store.store_id, normalize_text(name) or f"{store.code} terminal", prefix, key_hash,
        created_by,
    )
    return TerminalCreated(terminal=await get_terminal(conn, terminal_id), api_key=api_key)


async def get_terminal(conn: Connection, terminal_id: UUID) -> Terminal:
    row = await conn.fetchrow(_TERMINAL_SQL + " where t.terminal_id = $1", terminal_id)
    if row is None:
        raise NotFound("no such terminal")
    return _terminal(row)


async def list_terminals(conn: Connection, *, include_revoked: bool = False) -> list[Terminal]:
    rows = await conn.fetch(
        _TERMINAL_SQL + " where $1 or t.revoked_at is null order by s.code, t.created_at",
        include_revoked,
    )
    return [_terminal(row) for row in rows]


async def revoke_terminal(conn: Connection, terminal_id: UUID) -> None:
    """Revoke the key; revoking twice is fine, an unknown terminal is NotFound."""
    found = await conn.fetchval(
        """
        update terminals set revoked_at = coalesce(revoked_at, now())
         where terminal_id = $1 returning terminal_id
        """,
        terminal_id,
    )
    if found is None:
        raise NotFound("no such terminal")
