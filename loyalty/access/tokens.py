"""Access tokens for members and staff, and the keys that sign them.

JWTs are EdDSA-signed with a ``kid``; the verifier pins the algorithm, requires
``exp iat iss aud sub`` and keeps member and staff audiences apart. Retired public keys keep
verifying while a key is rotated.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from loyalty.access.principals import MemberPrincipal, Remembered, StaffPrincipal
from loyalty.core.errors import AuthenticationFailed, ConfigurationError

MEMBER_AUDIENCE = "loyalty:member"
STAFF_AUDIENCE = "loyalty:staff"
ALGORITHM = "EdDSA"


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
