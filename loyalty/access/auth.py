"""Credentials for the three principals: member and staff passwords and tokens, terminal keys.

JWTs are EdDSA-signed with a ``kid``; the verifier pins the algorithm, requires
``exp iat iss aud sub`` and keeps member and staff audiences apart. Refresh tokens and API
keys are random secrets stored only as SHA-256 hashes (they carry 256 bits of entropy, so a
slow hash adds nothing); passwords are argon2id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

import argon2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from loyalty.core.db import Connection
from loyalty.core.errors import AuthenticationFailed, ConfigurationError
from loyalty.core.ids import uuid7
from schemas.auth import Tokens

MEMBER_AUDIENCE = "loyalty:member"
STAFF_AUDIENCE = "loyalty:staff"
ALGORITHM = "EdDSA"
API_KEY_PREFIX = "lk_"


# -- principals -------------------------------------------------------------------------------


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


# -- passwords --------------------------------------------------------------------------------


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


# -- signing keys -----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    # RFC 7638 thumbprint: the kid is derived from the key, so it never needs configuring.
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    return {**jwk, "kid": _b64url(hashlib.sha256(canonical).digest()), "alg": ALGORITHM,
            "use": "sig"}


def _load_private(pem: str, variable: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except ValueError:
        raise ConfigurationError(f"{variable}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{variable}: must be an Ed25519 key")
    return key


def _load_publics(pem_bundle: str, variable: str) -> list[Ed25519PublicKey]:
    keys = []
    for block in pem_bundle.split("-----END PUBLIC KEY-----"):
        if "-----BEGIN PUBLIC KEY-----" not in block:
            continue
        try:
            key = serialization.load_pem_public_key((block + "-----END PUBLIC KEY-----").encode())
        except ValueError:
            raise ConfigurationError(f"{variable}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigurationError(f"{variable}: must hold Ed25519 keys")
        keys.append(key)
    return keys


def load_or_create_signing_key(data_dir: Path) -> str:
    """The PEM of the key in ``data_dir``, generated (mode 0600) on first run."""
    path = data_dir / "jwt-signing-key.pem"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Written whole under a private name, then linked into place: link() fails if the
        # key exists, so processes starting together all end up reading the first complete
        # key, never a half-written file.
        draft = data_dir / f".jwt-signing-key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text()


class TokenSigner:
    """Issues and verifies access tokens. Retired public keys keep verifying during rotation."""

    def __init__(
        self, private_pem: str, *, issuer: str, access_ttl: int,
        previous_public_pems: str | None = None,
    ) -> None:
        self._private = _load_private(private_pem, "LOYALTY_JWT_PRIVATE_KEY")
        active = _public_jwk(self._private.public_key())
        self.kid = active["kid"]
        self.issuer = issuer
        self.access_ttl = access_ttl
        self._verifiers: dict[str, Ed25519PublicKey] = {self.kid: self._private.public_key()}
        self._verified: Remembered[MemberPrincipal | StaffPrincipal] = Remembered(50_000)
        self._jwks = [active]
        for key in _load_publics(previous_public_pems or "", "LOYALTY_JWT_PREVIOUS_PUBLIC_KEYS"):
            jwk = _public_jwk(key)
            if jwk["kid"] not in self._verifiers:
                self._verifiers[jwk["kid"]] = key
                self._jwks.append(jwk)

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self._jwks)}

    def issue(self, subject: UUID, audience: str, *, ttl: int | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer, "aud": audience, "sub": str(subject), "iat": now,
            "exp": now + (self.access_ttl if ttl is None else ttl), **claims,
        }
        return jwt.encode(payload, self._private, algorithm=ALGORITHM, headers={"kid": self.kid})

    def verify(
        self, token: str, audiences: tuple[str, ...] = (MEMBER_AUDIENCE, STAFF_AUDIENCE)
    ) -> dict[str, Any]:
        """The claims of a valid token for one of ``audiences`` (member or staff unless told);
        anything else is AuthenticationFailed."""
        try:
            header = jwt.get_unverified_header(token)
            key = self._verifiers.get(str(header.get("kid")))
            if key is None or header.get("alg") != ALGORITHM:
                raise AuthenticationFailed("token is not signed by a known key")
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=list(audiences),
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"], "strict_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("token has expired") from None
        except jwt.PyJWTError:
            raise AuthenticationFailed("token is not valid") from None
        if not isinstance(claims.get("aud"), str):
            raise AuthenticationFailed("token must name exactly one audience")
        return claims

    def principal(self, token: str) -> MemberPrincipal | StaffPrincipal:
        """The caller a member or staff token names. A token verified before is taken from
        memory until it expires: an app sends the same token for its 15 minutes, and checking
        its signature is the dearest step of a read."""
        now = time.time()
        known = self._verified.get(token, now)
        if known is not None:
            return known
        principal, expires = self._principal(token)
        self._verified.put(token, expires, principal)
        return principal

    def _principal(self, token: str) -> tuple[MemberPrincipal | StaffPrincipal, float]:
        claims = self.verify(token)
        expires = float(claims["exp"])
        try:
            subject = UUID(claims["sub"])
            session = None if claims.get("sid") is None else UUID(claims["sid"])
        except (ValueError, TypeError, AttributeError):
            raise AuthenticationFailed("token subject or session is not valid") from None
        if claims["aud"] == MEMBER_AUDIENCE:
            return MemberPrincipal(subject, session), expires
        role = claims.get("role")
        if not isinstance(role, str):
            raise AuthenticationFailed("staff token carries no role")
        return StaffPrincipal(subject, role, session), expires


# -- refresh tokens ---------------------------------------------------------------------------
#
# A session is a family of refresh tokens: each use spends one for its successor. It lives at
# most ``max_age`` seconds from its first sign-in, however often it rotates.


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def _open_session(
    conn: Connection, *, ttl_seconds: int, max_age_seconds: int, member_id: UUID | None = None,
    staff_id: UUID | None = None,
) -> tuple[UUID, str]:
    """A new session and its first refresh token: (the session's id, the token)."""
    session_id = uuid7()
    token = secrets.token_urlsafe(32)
    await conn.execute(
        """
        insert into refresh_tokens (token_hash, family_id, member_id, staff_id,
                                    session_started_at, expires_at)
        values ($1, $2, $3, $4, now(), now() + least($5::interval, $6::interval))
        """,
        _digest(token), session_id, member_id, staff_id, timedelta(seconds=ttl_seconds),
        timedelta(seconds=max_age_seconds),
    )
    return session_id, token


@dataclass(frozen=True)
class Rotation:
    """What presenting a refresh token led to."""

    outcome: Literal["rotated", "reused", "invalid"]
    kind: Literal["member", "staff"] | None = None
    subject_id: UUID | None = None
    refresh_token: str | None = None
    session_id: UUID | None = None
    # Until the session's absolute end; no access token may outlive it.
    seconds_left: int = 0


async def rotate_refresh_token(
    conn: Connection, token: str, *, ttl_seconds: int, max_age_seconds: int
) -> Rotation:
    """Spend ``token`` for a successor in its family, expiring no later than the family's
    start plus ``max_age_seconds``.

    A token already spent means it leaked (or was stolen and raced): the whole family is
    revoked and ``reused`` returned; the caller must commit that before refusing.
    """
    max_age = timedelta(seconds=max_age_seconds)
    row = await conn.fetchrow(
        """
        select t.family_id, t.member_id, t.staff_id, t.used_at, t.revoked_at,
               t.session_started_at,
               t.expires_at > now() and t.session_started_at + $2::interval > now() as live,
               extract(epoch from t.session_started_at + $2::interval - now())::int
                   as seconds_left,
               coalesce(m.status in ('active', 'dormant'), s.active) as subject_ok
          from refresh_tokens t
          left join members m on m.member_id = t.member_id
          left join staff s on s.staff_id = t.staff_id
         where t.token_hash = $1
           for update of t
        """,
        _digest(token), max_age,
    )
    if row is None or row["revoked_at"] is not None or not row["live"] or not row["subject_ok"]:
        return Rotation("invalid")
    if row["used_at"] is not None:
        await revoke_family(conn, row["family_id"])
        return Rotation("reused")
    await conn.execute("update refresh_tokens set used_at = now() where token_hash = $1",
                       _digest(token))
    successor = secrets.token_urlsafe(32)
    await conn.execute(
        """
        insert into refresh_tokens (token_hash, family_id, member_id, staff_id,
                                    session_started_at, expires_at)
        values ($1, $2, $3, $4, $5::timestamptz,
                least(now() + $6::interval, $5::timestamptz + $7::interval))
        """,
        _digest(successor), row["family_id"], row["member_id"], row["staff_id"],
        row["session_started_at"], timedelta(seconds=ttl_seconds), max_age,
    )
    kind: Literal["member", "staff"] = "member" if row["member_id"] is not None else "staff"
    return Rotation("rotated", kind, row["member_id"] or row["staff_id"], successor,
                    row["family_id"], max(1, row["seconds_left"]))


async def revoke_family(conn: Connection, family_id: UUID) -> None:
    # Migration 0015's trigger tells every API process, so the family's access tokens end too.
    await conn.execute(
        "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
        family_id,
    )


async def revoke_refresh_token_family(conn: Connection, token: str) -> bool:
    """Log out: revoke the family ``token`` belongs to. False when the token is unknown."""
    family_id = await conn.fetchval(
        "select family_id from refresh_tokens where token_hash = $1", _digest(token)
    )
    if family_id is None:
        return False
    await revoke_family(conn, family_id)
    return True


# -- terminal API keys ------------------------------------------------------------------------


def new_api_key() -> tuple[str, str, bytes]:
    """A fresh key: (the key shown once, its short public prefix, the hash to store)."""
    prefix = secrets.token_hex(4)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, _digest(key)


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
        digest = _digest(api_key).hex()
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
        _digest(api_key),
    )
    if row is None:
        raise AuthenticationFailed("API key is not valid")
    return TerminalPrincipal(row["terminal_id"], row["store_id"], row["code"])


# -- sessions ---------------------------------------------------------------------------------


def access_token(
    signer: TokenSigner, subject: UUID, session_id: UUID, *, role: str | None = None,
    seconds_left: int | None = None,
) -> tuple[str, int]:
    """An access token in session ``session_id`` and its lifetime: a staff token carries the
    role; none outlives its session (``seconds_left``)."""
    ttl = signer.access_ttl if seconds_left is None else min(signer.access_ttl, seconds_left)
    if role is None:
        return signer.issue(subject, MEMBER_AUDIENCE, ttl=ttl, sid=str(session_id)), ttl
    return signer.issue(subject, STAFF_AUDIENCE, ttl=ttl, sid=str(session_id), role=role), ttl


async def start_session(
    conn: Connection, signer: TokenSigner, *, refresh_ttl: int, max_age: int,
    member_id: UUID | None = None, staff: tuple[UUID, str] | None = None,
) -> Tokens:
    """A new session's access and refresh tokens, for a member or a staff account with its
    role."""
    if member_id is not None:
        session_id, refresh = await _open_session(
            conn, ttl_seconds=refresh_ttl, max_age_seconds=max_age, member_id=member_id)
        access, ttl = access_token(signer, member_id, session_id, seconds_left=max_age)
    else:
        assert staff is not None
        session_id, refresh = await _open_session(
            conn, ttl_seconds=refresh_ttl, max_age_seconds=max_age, staff_id=staff[0])
        access, ttl = access_token(signer, staff[0], session_id, role=staff[1],
                                   seconds_left=max_age)
    return Tokens(access_token=access, refresh_token=refresh, expires_in=ttl)
