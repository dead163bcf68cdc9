"""Shared base Structs and constrained types: validation at the edge happens by type."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

import msgspec
from msgspec import Meta

# No control characters: PostgreSQL refuses NUL in text, and nobody's name holds a tab.
_PRINTABLE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def text(max_length: int, *, min_length: int = 0) -> object:
    return Meta(min_length=min_length, max_length=max_length, pattern=_PRINTABLE)


Name = Annotated[str, text(100, min_length=1)]
ShortText = Annotated[str, text(100)]
Email = Annotated[str, text(254, min_length=3)]
Phone = Annotated[str, text(32, min_length=3)]
Password = Annotated[str, Meta(min_length=8, max_length=128)]
PostalCode = Annotated[str, text(16)]
Code = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
Token = Annotated[str, Meta(min_length=16, max_length=512)]
Limit = Annotated[int, Meta(ge=1, le=200)]
Cursor = Annotated[str, Meta(max_length=200)]

AttributeKey = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
AttributeValue = (
    Annotated[str, text(500)] | Annotated[int, Meta(ge=-(2**53), le=2**53)] | float | bool | None
)
Attributes = Annotated[dict[AttributeKey, AttributeValue], Meta(max_length=50)]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies: unknown fields are refused, not ignored."""


class Output(msgspec.Struct, kw_only=True):
    """Response bodies."""


T = TypeVar("T")


class Page(Output, Generic[T]):
    """A page of a keyset-paginated list; pass ``next_cursor`` back as ``cursor``."""

    items: list[T]
    next_cursor: str | None = None
