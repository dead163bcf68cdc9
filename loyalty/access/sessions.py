"""Sign-in sessions: a session is a family of refresh tokens, each spent for its successor, and
the access tokens issued in it. Refresh tokens are random secrets stored only as their digest.
Ending a session ends its access tokens too (loyalty/access/revocation.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from uuid import UUID

from loyalty.access.principals import secret_digest
from loyalty.access.tokens import MEMBER_AUDIENCE, STAFF_AUDIENCE, TokenSigner
from loyalty.core.db import Connection
from loyalty.core.ids import uuid7
from schemas.auth import Tokens

# -- refresh tokens ---------------------------------------------------------------------------
#
# A session is a family of refresh tokens: each use spends one for its successor. It lives at
# most ``max_age`` seconds from its first sign-in, however often it rotates.


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
        secret_digest(token), session_id, member_id, staff_id, timedelta(seconds=ttl_seconds),
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
               -- Whole seconds left, rounded down: a token never outlives its session.
               floor(extract(epoch from t.session_started_at + $2::interval - now()))::int
                   as seconds_left,
               coalesce(m.status in ('active', 'dormant'), s.active) as subject_ok
          from refresh_tokens t
          left join members m on m.member_id = t.member_id
          left join staff s on s.staff_id = t.staff_id
         where t.token_hash = $1
           for update of t
        """,
        secret_digest(token), max_age,
    )
    if row is None or row["revoked_at"] is not None or not row["live"] or not row["subject_ok"]:
        return Rotation("invalid")
    if row["used_at"] is not None:
        await revoke_family(conn, row["family_id"])
        return Rotation("reused")
    await conn.execute("update refresh_tokens set used_at = now() where token_hash = $1",
                       secret_digest(token))
    successor = secrets.token_urlsafe(32)
    await conn.execute(
        """
        insert into refresh_tokens (token_hash, family_id, member_id, staff_id,
                                    session_started_at, expires_at)
        values ($1, $2, $3, $4, $5::timestamptz,
                least(now() + $6::interval, $5::timestamptz + $7::interval))
        """,
        secret_digest(successor), row["family_id"], row["member_id"], row["staff_id"],
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


async def end_sessions(conn: Connection, *, member_id: UUID | None = None,
                       staff_id: UUID | None = None, keep: UUID | None = None) -> int:
    """End every session of a member or a staff account but ``keep`` (the one asking, after a
    password change); how many tokens were revoked. Their access tokens end with them."""
    status = await conn.execute(
        """
        update refresh_tokens set revoked_at = now()
         where (member_id = $1 or staff_id = $2) and revoked_at is null
           and ($3::uuid is null or family_id <> $3)
        """,
        member_id, staff_id, keep)
    return int(status.split()[-1])


async def revoke_refresh_token_family(conn: Connection, token: str) -> bool:
    """Log out: revoke the family ``token`` belongs to. False when the token is unknown."""
    family_id = await conn.fetchval(
        "select family_id from refresh_tokens where token_hash = $1", secret_digest(token)
    )
    if family_id is None:
        return False
    await revoke_family(conn, family_id)
    return True


# -- access tokens in a session -----------------------------------------------------------------


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
