"""Who a request comes from: a member (the app), a staff account (the console) or a store
terminal (a till), and what checking their credentials shares: a memory of credentials already
checked, and the digest stored of a random secret.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from uuid import UUID

# ``session_id`` is the session (refresh-token family) a token was issued in: ending the session
# ends its access tokens too (loyalty/access/revocation.py).


@dataclass(frozen=True, slots=True)
class MemberPrincipal:
    member_id: UUID
    session_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class StaffPrincipal:
    staff_id: UUID
    role: str
    session_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class TerminalPrincipal:
    terminal_id: UUID
    store_id: UUID
    store_code: str


Principal = MemberPrincipal | StaffPrincipal | TerminalPrincipal


# -- credentials already checked -------------------------------------------------------------

T = TypeVar("T")


class Remembered(Generic[T]):
    """A bounded map of checked credentials, each kept until its own deadline (least recently
    used dropped first). Only successes are kept: a wrong credential is checked every time."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def get(self, key: str, now: float) -> T | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: str, deadline: float, value: T) -> None:
        self._items[key] = (deadline, value)
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)

    def forget(self, matches: Callable[[T], bool]) -> None:
        for key in [k for k, (_, v) in self._items.items() if matches(v)]:
            del self._items[key]


def secret_digest(secret: str) -> bytes:
    """What is stored of a refresh token or an API key: its SHA-256. Either carries 256 bits of
    entropy, so a slow hash would add nothing."""
    return hashlib.sha256(secret.encode()).digest()
