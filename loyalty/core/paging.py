"""Keyset paging: every list is read a page at a time after the last row seen, never by offset,
so a page stays cheap however deep it is and rows written meanwhile are neither skipped nor
repeated.

A cursor is opaque to clients: unpadded URL-safe base64 of either a row's uuid (for lists
ordered by a uuid v7 key) or of ``|``-joined parts (for lists ordered by several columns). A
cursor that does not decode is refused as invalid input, never passed to a query.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from schemas.base import Page

T = TypeVar("T")


def invalid_cursor() -> InvalidInput:
    """The one refusal of a cursor the server did not write (or that no longer parses)."""
    return InvalidInput("cursor is not valid", field="cursor")


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def encode_cursor(key: UUID) -> str:
    """A cursor for a list ordered by a uuid (members, segments, coupon templates, campaigns,
    grants, a wallet)."""
    return _encode(key.bytes)


def decode_cursor(cursor: str) -> UUID:
    """The uuid an ``encode_cursor`` cursor carries."""
    try:
        return UUID(bytes=_decode(cursor))
    except (ValueError, binascii.Error):
        raise invalid_cursor() from None


def encode_parts(*parts: str) -> str:
    """A cursor for a list ordered by several columns: their values as text, in order."""
    return _encode("|".join(parts).encode())


def decode_parts(cursor: str, count: int) -> list[str]:
    """The ``count`` text parts an ``encode_parts`` cursor carries; the caller parses each."""
    try:
        raw = _decode(cursor).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_cursor() from None
    parts = raw.split("|")
    if len(parts) != count:
        raise invalid_cursor()
    return parts


async def newest_first(
    conn: Connection, *, table: str, key: str, columns: str, item: Callable[[Any], T],
    limit: int, cursor: str | None,
) -> Page[T]:
    """One keyset page of ``table``'s rows, newest first by their uuid v7 ``key`` (a column
    among ``columns``), each made into an item by ``item``. ``table``, ``key`` and ``columns``
    are the caller's constants, never input."""
    before = decode_cursor(cursor) if cursor else None
    rows = await conn.fetch(
        f"select {columns} from {table} where $1::uuid is null or {key} < $1"  # noqa: S608 - table, columns and key come from the calling module's constants
        f" order by {key} desc limit $2", before, limit + 1)
    next_cursor = encode_cursor(rows[limit - 1][key]) if len(rows) > limit else None
    return Page(items=[item(row) for row in rows[:limit]], next_cursor=next_cursor)
