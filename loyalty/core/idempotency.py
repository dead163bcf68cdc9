"""Idempotency keys: every write happens once per key of the principal that sent it
(docs/decisions/0006-idempotency.md, 0012-idempotency-for-every-write.md).

One table, ``idempotency_keys``, keyed by (principal, key), holds the request's hash and the
first response. Ledger writes put the key in their posting statement
(``loyalty.points.ledger.post``); every other write claims it in its own transaction before the
effect (``claim``) and stores its
response in the same transaction after it (``record_response``), so the key commits exactly
when the effect does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection, repeat_in_batches
from loyalty.core.errors import Conflict, InvalidInput
from schemas.base import encode_edge, json_encoder

_encode = json_encoder.encode

# How long keys are kept: a retry later than this is treated as a new request.
IDEMPOTENCY_KEPT = dt.timedelta(hours=72)


@dataclass(frozen=True)
class Idempotency:
    """A request's key, scoped to its principal (a terminal, staff account or member id)."""

    principal_id: UUID
    key: str
    request_hash: bytes


@dataclass(frozen=True)
class StoredResponse:
    """The response a principal got the first time it sent an idempotency key."""

    request_hash: bytes
    status: int
    body: bytes


class KeyInFlight(Conflict):
    """The first request under this key is still running: nothing is known of its outcome yet."""

    code = "idempotency_key_in_flight"

    def __init__(self, retry_after: int) -> None:
        super().__init__("a request with this Idempotency-Key is still being processed; send it "
                         "again in a moment to get its answer", field="Idempotency-Key")
        self.retry_after = retry_after


# Body fields added after tills began storing keys: left out of the hash while empty, so a
# retry of a request first sent before they existed still matches its key.
_LATER_FIELDS: dict[str, object] = {"coupons": [], "discount": 0}
# Never part of a stored hash: a SHA-256 of a known body with a password in it could be
# guessed offline (passwords are stored as argon2id). A retry that changes only the password
# is the same request.
_SECRET_FIELDS = ("password",)


def request_hash(method: str, path: str, body: msgspec.Struct | None) -> bytes:
    """What makes two requests the same: method, path and the decoded body re-encoded, so
    white space and key order do not count."""
    encoded = _encode(body)
    if body is not None and (
        any(getattr(body, name, None) == empty for name, empty in _LATER_FIELDS.items())
        or any(hasattr(body, name) for name in _SECRET_FIELDS)
    ):
        data = msgspec.to_builtins(body, enc_hook=encode_edge)
        for name, empty in _LATER_FIELDS.items():
            if name in data and data[name] == empty:
                del data[name]
        for name in _SECRET_FIELDS:
            data.pop(name, None)
        encoded = _encode(data)
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + encoded).digest()


def check_same_request(stored_hash: bytes, request_hash: bytes) -> None:
    """A key seen before must come with the request it first came with: else 422, for every
    idempotent write."""
    if stored_hash != request_hash:
        raise InvalidInput(
            "this Idempotency-Key was used for a different request; use a new key",
            field="Idempotency-Key", code="idempotency_key_reused")


# -- writes in the caller's transaction --------------------------------------------------------


async def claim(conn: Connection, idempotency: Idempotency, *, wait_ms: int
                ) -> StoredResponse | None:
    """Within the caller's transaction, before the write: take the key (None: go ahead and
    write), or the response stored under it (replay it). A request still running under the key
    is waited for at most ``wait_ms``, then KeyInFlight."""
    for _ in range(2):
        try:
            row = await conn.fetchrow(
                "select * from claim_idempotency_key($1, $2, $3, $4)",  # migration 0014
                idempotency.principal_id, idempotency.key, idempotency.request_hash,
                f"{wait_ms}ms")
        except asyncpg.LockNotAvailableError:
            raise KeyInFlight(retry_after=max(1, -(-wait_ms // 1000))) from None
        if row is None:
            continue  # the key was there and has just been aged out: claim it afresh
        if row["claimed"]:
            return None
        check_same_request(row["request_hash"], idempotency.request_hash)
        return StoredResponse(row["request_hash"], row["response_status"], row["response_body"])
    raise AssertionError("an idempotency key came and went twice")


async def record_response(conn: Connection, idempotency: Idempotency, status: int,
                          body: bytes) -> None:
    """Within the caller's transaction, after the write: the response a retry will get."""
    await conn.execute(
        """
        update idempotency_keys set response_status = $3, response_body = $4
         where principal_id = $1 and idempotency_key = $2
        """,
        idempotency.principal_id, idempotency.key, status, body)


async def record_refusal(conn: Connection, idempotency: Idempotency, status: int,
                         body: bytes) -> bool:
    """In a statement of its own: keep a refusal under the key, as a write's answer is kept,
    so the same request again is answered with it (an offline till's batch item: its
    refusal is final, docs/decisions/0016-offline-tills.md). False when the key was taken
    meanwhile: its own answer stands."""
    kept: bool | None = await conn.fetchval(
        """
        insert into idempotency_keys (principal_id, idempotency_key, request_hash,
                                      response_status, response_body)
        values ($1, $2, $3, $4, $5) on conflict do nothing returning true
        """,
        idempotency.principal_id, idempotency.key, idempotency.request_hash, status, body)
    return bool(kept)


# -- keeping keys -------------------------------------------------------------------------------

_DELETE_OLD_KEYS = """
with old as (
    select principal_id, idempotency_key from idempotency_keys
     where created_at < $1 order by created_at limit $2
), deleted as (
    delete from idempotency_keys k using old
     where k.principal_id = old.principal_id and k.idempotency_key = old.idempotency_key
    returning 1
)
select count(*) from deleted
"""


async def delete_old_idempotency_keys(
    conn: Connection, *, before: dt.datetime, batch_size: int = 10_000,
) -> dict[str, int]:
    """Delete the keys recorded before ``before``, oldest first, a batch per transaction:
    every principal's, tills', staff accounts' and members' alike."""
    deleted = await repeat_in_batches(conn, _DELETE_OLD_KEYS, before, batch_size=batch_size)
    return {"deleted": deleted}
