"""Console sessions and CSRF tokens.

A console session is a refresh-token family like the API's (loyalty/access/sessions.py), so
signing out, deactivating the account or changing its role ends it exactly as it ends the
API's sessions: each request asks ``Revocations.check`` with the family as the session, on
every process within a second (loyalty/access/revocation.py). The family's refresh token is
never handed out; the browser holds a random secret of its own in an HttpOnly, SameSite=Strict
cookie, and Redis keeps what the secret stands for (under its digest) for the idle timeout,
renewed by each request and never past the absolute one. No new table: a session row would
repeat what the family already says, and the idle clock changes on every request, which Redis
keeps without a write to PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass
from uuid import UUID

import msgspec

from console.services import AnyRequest, ConsoleServices
from loyalty.access.principals import StaffPrincipal
from loyalty.access.sessions import revoke_family, start_session
from loyalty.core.db import transaction
from loyalty.core.errors import AuthenticationFailed

SESSION_COOKIE = "loyalty_console"
# Before sign-in there is no session to hold the CSRF token: the sign-in and language forms
# carry the one in this cookie (a browser on another site can neither read it nor send it,
# SameSite=Strict).
CSRF_COOKIE = "loyalty_console_csrf"
LANGUAGE_COOKIE = "loyalty_console_language"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_KEY = "console:session:"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in staff member: who, in which role, in which session, since when."""

    staff_id: str
    email: str
    role: str
    session_id: str
    started_at: float
    csrf_token: str
    # What the staff member is called (the account's display name; may be empty).
    display_name: str = ""

    @property
    def principal(self) -> StaffPrincipal:
        return StaffPrincipal(UUID(self.staff_id), self.role, session_id=UUID(self.session_id))


class SignInRequired(Exception):
    """No session, or one that has ended; ``reason`` is shown on the sign-in page."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason


class CSRFRefused(Exception):
    """A form or htmx request whose CSRF token is missing or wrong."""


def _key(secret: str) -> str:
    return _KEY + hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _seconds_left(services: ConsoleServices, session: ConsoleSession, now: float) -> int:
    """Until the idle timeout, capped by the absolute one."""
    settings = services.settings
    absolute = session.started_at + settings.console_session_max_age_seconds - now
    return int(min(settings.console_idle_timeout_seconds, absolute))


async def sign_in(services: ConsoleServices, *, staff_id: UUID, email: str, role: str,
                  display_name: str = "") -> tuple[str, ConsoleSession]:
    """A new session for a staff account whose password was checked: the cookie's secret and
    the session. Its family lives no longer than the console's absolute timeout."""
    max_age = services.settings.console_session_max_age_seconds
    async with transaction(services.pool) as conn:
        tokens = await start_session(conn, services.signer, refresh_ttl=max_age,
                                     max_age=max_age, staff=(staff_id, role))
    # The family's id is the sid of its first access token, which is otherwise not used.
    principal = services.signer.principal(tokens.access_token)
    assert isinstance(principal, StaffPrincipal)
    assert principal.session_id is not None
    session = ConsoleSession(staff_id=str(staff_id), email=email, role=role,
                             session_id=str(principal.session_id), started_at=time.time(),
                             csrf_token=new_token(), display_name=display_name)
    secret = new_token()
    await services.redis.set(_key(secret), msgspec.json.encode(asdict(session)),
                             ex=_seconds_left(services, session, session.started_at))
    return secret, session


async def current_session(services: ConsoleServices, secret: str | None) -> ConsoleSession:
    """The session the cookie's ``secret`` stands for, its idle clock restarted; raises
    SignInRequired when there is none, it timed out, or its account or role changed."""
    if not secret:
        raise SignInRequired()
    raw = await services.redis.get(_key(secret))
    if raw is None:
        raise SignInRequired("expired")
    session = msgspec.json.decode(raw, type=ConsoleSession)
    left = _seconds_left(services, session, time.time())
    if left <= 0:
        await end_session(services, secret, session)
        raise SignInRequired("expired")
    try:
        await services.revocations.check(session.principal)
    except AuthenticationFailed:
        await services.redis.delete(_key(secret))
        raise SignInRequired("ended") from None
    await services.redis.expire(_key(secret), left)
    return session


async def end_session(services: ConsoleServices, secret: str, session: ConsoleSession) -> None:
    """Sign out: the family revoked (every process hears of it) and the secret forgotten."""
    async with transaction(services.pool) as conn:
        await revoke_family(conn, UUID(session.session_id))
    await services.redis.delete(_key(secret))


def check_csrf(request: AnyRequest, expected: str | None, sent: str | None) -> None:
    """Refuse a state-changing request unless it carries the expected token, in the form field
    or (htmx) the header."""
    sent = sent or request.headers.get(CSRF_HEADER)
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise CSRFRefused()
