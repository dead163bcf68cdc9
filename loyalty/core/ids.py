"""Time-ordered ids (UUID version 7, RFC 9562), made in Python when a response must name a row
before the statement that writes it runs."""

from __future__ import annotations

import secrets
import time
from uuid import UUID

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62


def uuid7() -> UUID:
    """48 bits of Unix milliseconds, then 74 random bits: unique, and sorted by creation."""
    millis = time.time_ns() // 1_000_000 & ((1 << 48) - 1)
    rand = secrets.randbits(74)
    return UUID(int=millis << 80 | _VERSION | (rand >> 62) << 64 | _VARIANT
                | rand & ((1 << 62) - 1))
