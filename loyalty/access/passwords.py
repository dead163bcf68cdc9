"""Member and staff passwords: argon2id, hashed and verified off the event loop; a new password
is refused when it is one of the most common."""

from __future__ import annotations

import asyncio
import functools
import secrets
from pathlib import Path

import argon2

from loyalty.core.errors import InvalidInput

# The 10,000 most common passwords, lower-cased (data/LICENSE-common-passwords.txt says whence).
_COMMON = Path(__file__).parents[1] / "data" / "common-passwords.txt"


@functools.cache
def _common_passwords() -> frozenset[str]:
    return frozenset(_COMMON.read_text(encoding="utf-8").split("\n")) - {""}


def check_new_password(password: str, *, field: str = "password") -> None:
    """Refuse a password being set (sign-up, change, reset, a staff account) that is among the
    most common: they are the first any attacker tries, whatever the per-account limits."""
    if password.lower() in _common_passwords() or password.strip().lower() in _common_passwords():
        raise InvalidInput(
            "this password is one of the 10,000 most common passwords, which attackers try "
            "first: choose another, such as a few unrelated words", field=field,
            code="common_password")


class Passwords:
    """argon2id hashing, run off the event loop (a hash takes tens of milliseconds)."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Verified against when the account does not exist, so both cases cost the same.
        self._decoy = self._hasher.hash(secrets.token_hex(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self._verify, stored_hash or self._decoy, password)

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
