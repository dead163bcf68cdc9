"""Shared base Structs and constrained types: validation at the edge happens by type."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Generic, TypeVar

import msgspec
from msgspec import Meta


def whole(pattern: str) -> str:
    """``pattern`` matching the whole string. msgspec searches with Python's ``re``, where ``$``
    also matches before a final line break (``^[0-9]+$`` takes "12\\n"); the lookahead, which
    JSON Schema's regular expressions understand too, closes that gap."""
    return "^" + pattern + r"$(?!\n)"


# No control characters: PostgreSQL refuses NUL in text, and nobody's name holds a tab or a line
# break. Descriptions may break lines (tab, LF, CR); nothing else may hold C0 or C1 controls.
SINGLE_LINE = whole(r"[^\x00-\x1f\x7f-\x9f]*")
MULTI_LINE = whole(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*")


def text(max_length: int, *, min_length: int = 0, multiline: bool = False) -> object:
    return Meta(min_length=min_length, max_length=max_length,
                pattern=MULTI_LINE if multiline else SINGLE_LINE)


Name = Annotated[str, text(100, min_length=1)]
ShortText = Annotated[str, text(100)]
Email = Annotated[str, text(254, min_length=3)]
Phone = Annotated[str, text(32, min_length=3)]
Password = Annotated[str, Meta(min_length=8, max_length=128)]
PostalCode = Annotated[str, text(16)]
Code = Annotated[str, Meta(min_length=1, max_length=32,
                           pattern=whole(r"[A-Za-z0-9][A-Za-z0-9_-]*"))]
Token = Annotated[str, Meta(min_length=16, max_length=512)]
Limit = Annotated[int, Meta(ge=1, le=200)]
Cursor = Annotated[str, Meta(max_length=200)]

AttributeKey = Annotated[str, Meta(min_length=1, max_length=64, pattern=whole(r"[A-Za-z0-9_.-]+"))]
# Numbers a JSON document keeps exactly, whatever stores it: PostgreSQL's jsonb writes 3.9e16 back
# as the integer 39000000000000000, so a float beyond ±2**53 would come back as an integer out of
# range. Integers and floats alike stay within ±2**53 (and floats finite).
SafeInteger = Annotated[int, Meta(ge=-(2**53), le=2**53)]
SafeFloat = Annotated[float, Meta(ge=-(2**53), le=2**53)]
AttributeValue = Annotated[str, text(500)] | SafeInteger | SafeFloat | bool | None
Attributes = Annotated[dict[AttributeKey, AttributeValue], Meta(max_length=50)]


# -- moments and days --------------------------------------------------------------------------
# Every moment a request carries lies in the calendar the product serves. PostgreSQL would take
# year 1 or 9999 as -infinity / infinity (asyncpg maps datetime.min / max to them), and one such
# row stops every later job that subtracts times; with an offset the same years overflow Python.

EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
EARLIEST_BIRTH_DATE = dt.date(1900, 1, 1)
# Today somewhere on Earth: a birth date may be "today" for a member in UTC+14.
_EARLIEST_ZONE_AHEAD = dt.timedelta(hours=14)


class Instant(dt.datetime):
    """A moment with its UTC offset, from 2000 to 2100: purchases, campaign and coupon windows,
    events, filters."""


class Day(dt.date):
    """A calendar day from 2000 to 2100 (``YYYY-MM-DD``), such as a business day of a report."""


class BirthDate(dt.date):
    """A birth date: from 1900-01-01 up to today (``YYYY-MM-DD``)."""


def _moment(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            # Strict RFC 3339, as msgspec reads JSON; not Python's lenient ISO parser.
            moment = msgspec.convert(value, dt.datetime)
        except msgspec.ValidationError:
            raise ValueError(
                f"{value[:40]!r} is not a date-time such as 2026-11-23T12:00:00+09:00") from None
    else:
        raise TypeError("expected a date-time string such as 2026-11-23T12:00:00+09:00")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("give the time with its UTC offset, such as 2026-11-23T12:00:00+09:00")
    try:
        inside = EARLIEST <= moment < LATEST
    except OverflowError:  # year 1 at +14:00 cannot even be compared in UTC
        inside = False
    if not inside:
        raise ValueError("must be from 2000-01-01 up to 2100-01-01 (UTC)")
    return Instant(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                   moment.second, moment.microsecond, moment.tzinfo, fold=moment.fold)


def _day(value: object, kind: type[dt.date], earliest: dt.date, latest: dt.date,
         describe: str) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        day = value
    elif isinstance(value, str):
        try:
            day = msgspec.convert(value, dt.date)
        except msgspec.ValidationError:
            raise ValueError(f"{value[:40]!r} is not a date such as 2026-11-23") from None
    else:
        raise TypeError("expected a date string such as 2026-11-23")
    if not earliest <= day <= latest:
        raise ValueError(f"must be {describe}")
    return kind(day.year, day.month, day.day)


def decode_edge(type_: type, value: Any) -> Any:
    """msgspec ``dec_hook`` for the bounded types above: every decoder of request bodies, query
    parameters and stored definitions passes it, so each bound is checked in one place."""
    if type_ is Instant:
        return _moment(value)
    if type_ is Day:
        return _day(value, Day, EARLIEST.date(), LATEST.date(),
                    "from 2000-01-01 up to 2100-01-01")
    if type_ is BirthDate:
        today = (dt.datetime.now(dt.UTC) + _EARLIEST_ZONE_AHEAD).date()
        return _day(value, BirthDate, EARLIEST_BIRTH_DATE, today, "from 1900-01-01 up to today")
    raise NotImplementedError(f"no decoder for {type_!r}")


def encode_edge(value: Any) -> Any:
    """msgspec ``enc_hook``: the bounded types encode as the plain dates and times they are."""
    if isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, value.hour, value.minute,
                           value.second, value.microsecond, value.tzinfo, fold=value.fold)
    if isinstance(value, dt.date):
        return dt.date(value.year, value.month, value.day)
    raise NotImplementedError(f"cannot encode {type(value)!r}")


EDGE_TYPES: tuple[type, ...] = (Instant, Day, BirthDate)
# JSON in and out for values that may hold the bounded types (stored definitions, bodies).
json_encoder = msgspec.json.Encoder(enc_hook=encode_edge)


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies: unknown fields are refused, not ignored."""


class OneOf(Input):
    """A body that says one thing in several ways: exactly one of the fields ``one_of`` names is
    given (and not null), such as a member by id, card or number.

    Checked as the body is decoded, so a body naming two of them, or none, does not match the
    document: 400 ``validation_failed`` naming the fields, before anything is read or written.
    api/openapi.py writes the same rule into the document as ``oneOf``. The fields keep their
    names on the wire (no tag field): clients already send them so. A subclass with a
    ``__post_init__`` of its own calls this one first.
    """

    one_of: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        given = [name for name in self.one_of if getattr(self, name) is not None]
        if len(given) != 1:
            said = " and ".join(given) + " were given" if given else "none was given"
            raise ValueError(f"give exactly one of {_listed(self.one_of)}: {said}")


def _listed(names: tuple[str, ...]) -> str:
    """``("id", "card", "number")`` as "id, card or number"."""
    return " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


class Output(msgspec.Struct, kw_only=True):
    """Response bodies."""


T = TypeVar("T")


class Page(Output, Generic[T]):
    """A page of a keyset-paginated list; pass ``next_cursor`` back as ``cursor``."""

    items: list[T]
    next_cursor: str | None = None
