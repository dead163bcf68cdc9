"""Terminal API keys: a till authenticates with a random key (``lk_…``), stored only as its
digest and remembered for a few seconds after it is checked.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from uuid import UUID

from loyalty.access.principals import Remembered, TerminalPrincipal, secret_digest
from loyalty.core.db import Connection
from loyalty.core.errors import AuthenticationFailed

API_KEY_PREFIX = "lk_"


def new_api_key() -> tuple[str, str, bytes]:
    """A fresh key: (the key shown once, its short public prefix, the hash to store)."""
    prefix = secrets.token_hex(4)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, secret_digest(key)


def is_api_key(credential: str) -> bool:
    return credential.startswith(API_KEY_PREFIX)


class TerminalKeys:
    """Terminal API keys checked against the database, remembered for ``ttl`` seconds: a till
    sends its key with every request. A key revoked through this process is forgotten at once;
    other processes stop accepting it within ``ttl``."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._known: Remembered[TerminalPrincipal] = Remembered(10_000)

    async def authenticate(
        self, api_key: str, connect: Callable[[], AbstractAsyncContextManager[Connection]]
    ) -> TerminalPrincipal:
        digest = secret_digest(api_key).hex()
        now = time.monotonic()
        known = self._known.get(digest, now)
        if known is not None:
            return known
        async with connect() as conn:
            principal = await authenticate_terminal(conn, api_key)
        self._known.put(digest, now + self.ttl, principal)
        return principal

    def forget(self, terminal_id: UUID) -> None:
        self._known.forget(lambda principal: principal.terminal_id == terminal_id)


async def authenticate_terminal(conn: Connection, api_key: str) -> TerminalPrincipal:
    row = await conn.fetchrow(
        """
        select t.terminal_id, t.store_id, s.code
          from terminals t join stores s using (store_id)
         where t.key_hash = $1 and t.revoked_at is null
        """,
        secret_digest(api_key),
    )
    if row is None:
        raise AuthenticationFailed("API key is not valid")
    return TerminalPrincipal(row["terminal_id"], row["store_id"], row["code"])
