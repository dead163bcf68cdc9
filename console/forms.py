"""What the coupons and events pages share in reading forms: typed values from the strings a
form sends, the field a validation error names, and writes made once per key through the
API's idempotency mechanism (loyalty.core.idempotency), so a double submit does one write."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Annotated, Any, get_type_hints
from zoneinfo import ZoneInfo

import msgspec
from litestar.params import QueryParameter

from console.pages import Refused
from console.services import ConsoleServices
from console.session import ConsoleSession
from loyalty.core.db import Connection
from loyalty.core.idempotency import Idempotency, claim, record_response, request_hash
from schemas.base import SINGLE_LINE, decode_edge, json_encoder, whole

Cursor = Annotated[str | None, QueryParameter(max_length=200,
                                              pattern=whole(r"[A-Za-z0-9_-]*"))]
# A uuid chosen in a list (a batch just made, a segment to confirm), read by the page that
# needs it; anything else in the box is the page's to refuse.
Choice = Annotated[str | None, QueryParameter(max_length=100, pattern=SINGLE_LINE)]
# How many members an invitation just reached, shown on the page it returns to.
Shown = Annotated[int | None, QueryParameter(ge=0, le=100_000_000)]
PAGE_SIZE = 25
# A key the page renders into a form, as the API's Idempotency-Key header takes it.
_KEY = re.compile(r"console-[A-Za-z0-9_-]{32}")
_PATH = re.compile(r"`\$((?:\.\w+|\[\d+\])*)`")


class Unreadable(ValueError):
    """A form field's text is not what the field takes."""


def new_key() -> str:
    """A fresh idempotency key for a form that writes once."""
    return "console-" + secrets.token_urlsafe(24)


def whole_number(text: str, *, optional: bool = False) -> int | None:
    """An integer typed into a box: full-width digits and thousands separators allowed."""
    cleaned = text.strip().replace(",", "").replace("，", "")
    if not cleaned:
        if optional:
            return None
        raise Unreadable(text)
    try:
        number = int(cleaned)
    except ValueError:
        raise Unreadable(text) from None
    if abs(number) > 10**15:
        raise Unreadable(text)
    return number


def local_moment(text: str, timezone: str, *, optional: bool = False) -> str | None:
    """A ``datetime-local`` box's value (``2026-12-01T10:00``), read in the business's time
    zone, as the RFC 3339 text the API's Instant takes."""
    cleaned = text.strip()
    if not cleaned:
        if optional:
            return None
        raise Unreadable(text)
    try:
        moment = dt.datetime.fromisoformat(cleaned)
    except ValueError:
        raise Unreadable(text) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment.isoformat()


def words(text: str) -> list[str]:
    """Codes or names typed into one box, separated by commas, spaces or new lines."""
    return [word for word in re.split(r"[\s,、，]+", text) if word]


def failed_path(error: msgspec.ValidationError) -> list[str]:
    """The fields a msgspec validation error names (``$.discount.amount`` → discount,
    amount), without list indexes."""
    found = _PATH.search(str(error))
    if not found:
        return []
    return [part for part in re.split(r"[.\[\]]", found.group(1)) if part and not part.isdigit()]


def problems(data: dict[str, Any], struct: type[msgspec.Struct]) -> list[list[str]]:
    """Every field of ``data`` that ``struct`` refuses, each as its path (``[discount,
    amount]``): one field at a time, so the form shows all its mistakes at once."""
    hints = get_type_hints(struct, include_extras=True)
    found = []
    for name, value in data.items():
        try:
            msgspec.convert(value, hints[name], dec_hook=decode_edge)
        except msgspec.ValidationError as error:
            found.append([name, *failed_path(error)])
    return found


def may_edit(session: ConsoleSession, editors: tuple[str, ...]) -> None:
    """Refuse (403) a write to a role that may only read."""
    if session.role not in editors:
        raise Refused(session)


def valid_key(key: str) -> bool:
    return bool(_KEY.fullmatch(key))


async def claimed(
    conn: Connection, svc: ConsoleServices, session: ConsoleSession, key: str, api_path: str,
    body: msgspec.Struct,
) -> tuple[Idempotency, bytes | None]:
    """Take ``key`` for the write the API would make at ``api_path`` with ``body``, in
    ``conn``'s transaction: (the key, None) to go ahead, or the stored answer of the first
    submit. A second submit still in flight waits for the first (KeyInFlight past the wait)."""
    idempotency = Idempotency(session.principal.staff_id, key,
                              request_hash("POST", api_path, body))
    stored = await claim(conn, idempotency, wait_ms=svc.settings.idempotency_wait_ms)
    return idempotency, None if stored is None else stored.body


async def answered(conn: Connection, idempotency: Idempotency, result: Any) -> None:
    """Store the write's answer under its key, in the same transaction as the write."""
    await record_response(conn, idempotency, 201, json_encoder.encode(result))
