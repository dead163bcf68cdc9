"""A member's password changed by themselves or reset through their e-mail or phone, and the codes
that prove they read that e-mail or phone (docs/decisions/0017-password-resets-and-
verification.md). Secrets are sent once, in an event for the brand's mailer, and kept only as
digests."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from loyalty.access.principals import secret_digest
from loyalty.access.ratelimit import RateLimiter
from loyalty.access.sessions import end_sessions
from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.normalize import normalize_email, normalize_phone
from loyalty.core.outbox import emit
from schemas.members import Member
from schemas.outbox import MemberPasswordResetRequestedData, MemberVerificationRequestedData

Channel = Literal["email", "phone"]
CHANNELS: tuple[Channel, ...] = ("email", "phone")

# A reset link is for now, not for later: long enough to open the mail, short enough that a
# mailbox read next month holds nothing that still works.
RESET_TTL = dt.timedelta(minutes=30)
# A verification code is six digits: a few tries each, a quarter of an hour, then a new one.
CODE_TTL = dt.timedelta(minutes=15)
CODE_TRIES = 5
# Asking again is for a message that did not arrive, not a way to flood someone's inbox.
CODES_PER_HOUR = 5
RESETS_PER_CONTACT_PER_HOUR = 5

_CHANNEL_NAMES = {"email": "e-mail address", "phone": "phone number"}
# SQL names a channel's columns only through these: a channel is never text from a request.
_CONTACT_COLUMN = {"email": "email", "phone": "phone"}
_VERIFIED_COLUMN = {"email": "email_verified_at", "phone": "phone_verified_at"}


# -- the password, changed or reset -------------------------------------------------------------


async def member_password_hash(conn: Connection, member_id: UUID) -> str | None:
    """The stored hash of a member who may sign in, or None."""
    stored: str | None = await conn.fetchval(
        "select password_hash from members where member_id = $1"
        " and status in ('active', 'dormant')", member_id)
    return stored


async def set_member_password(conn: Connection, member_id: UUID, password_hash: str, *,
                              keep_session: UUID | None) -> None:
    """Store a new password and end every session but ``keep_session`` (the one that changed
    it), on every API instance within a second."""
    changed = await conn.execute(
        "update members set password_hash = $2, updated_at = now()"
        " where member_id = $1 and status in ('active', 'dormant')", member_id, password_hash)
    if changed.split()[-1] == "0":
        raise NotFound("no such member")
    await end_sessions(conn, member_id=member_id, keep=keep_session)


async def request_password_reset(conn: Connection, *, email: str | None, phone: str | None,
                                 region: str) -> bool:
    """For a member who may sign in with ``email`` or ``phone``, a single-use reset token sent
    in ``member.password_reset_requested``; nothing for anyone else. Whether a member was found
    is for tests and logs, never for the caller's answer."""
    try:
        contact = normalize_email(email) if email is not None \
            else normalize_phone(phone or "", region)
    except InvalidInput:
        return False
    channel: Channel = "email" if email is not None else "phone"
    row = await conn.fetchrow(
        f"select member_id, member_number from members where {_CONTACT_COLUMN[channel]} = $1"  # noqa: S608 - a module constant column name
        " and status in ('active', 'dormant')", contact)
    if row is None:
        return False
    # Spent and long-expired resets of this member are not kept past their use.
    await conn.execute(
        "delete from member_password_resets where member_id = $1"
        " and (used_at is not null or expires_at < now() - interval '1 day')", row["member_id"])
    token = secrets.token_urlsafe(32)
    expires_at = await conn.fetchval(
        """
        insert into member_password_resets (member_id, token_hash, channel, expires_at)
        values ($1, $2, $3, now() + $4::interval) returning expires_at
        """,
        row["member_id"], secret_digest(token), channel, RESET_TTL)
    await emit(conn, "member.password_reset_requested", MemberPasswordResetRequestedData(
        member_id=row["member_id"], member_number=row["member_number"], channel=channel,
        contact=contact, token=token, expires_at=expires_at), member_id=row["member_id"])
    return True


async def confirm_password_reset(conn: Connection, token: str, password_hash: str) -> UUID:
    """Spend a reset token: the member's password becomes ``password_hash``, every reset they
    asked for is spent, and every session of theirs ends. Their member id."""
    row = await conn.fetchrow(
        """
        select r.member_id, r.channel, r.used_at, r.expires_at > now() as live
          from member_password_resets r
         where r.token_hash = $1
           for update
        """,
        secret_digest(token))
    if row is None:
        raise InvalidInput("this password reset link is not valid (mistyped, or replaced by a "
                           "newer one): ask for a new one", field="token",
                           code="reset_token_invalid")
    if row["used_at"] is not None:
        raise InvalidInput("this password reset link was already used: sign in with the new "
                           "password, or ask for a new link", field="token",
                           code="reset_token_used")
    if not row["live"]:
        raise InvalidInput("this password reset link has expired (it works for 30 minutes): "
                           "ask for a new one", field="token", code="reset_token_expired")
    member_id: UUID = row["member_id"]
    await conn.execute(
        "update member_password_resets set used_at = now() where member_id = $1"
        " and used_at is null", member_id)
    # The reset reached the member through that contact: it is proven as well as a code would.
    verified = _VERIFIED_COLUMN[row["channel"]]
    await conn.execute(
        f"update members set {verified} = coalesce({verified}, now()) where member_id = $1",  # noqa: S608 - a module constant column name
        member_id)
    await set_member_password(conn, member_id, password_hash, keep_session=None)
    return member_id


# -- verification codes --------------------------------------------------------------------------


def _code_digest(member_id: UUID, channel: str, code: str) -> bytes:
    # Salted by member and channel, so one digest says nothing about another member's code. Six
    # digits are a million guesses offline: the short life and the few tries are what protect
    # a code, the digest keeps it out of sight of whoever reads the table.
    return hashlib.sha256(f"{member_id}:{channel}:{code}".encode()).digest()


@dataclass(frozen=True, slots=True)
class CodeSent:
    channel: Channel
    expires_at: dt.datetime


async def send_verification_code(conn: Connection, member_id: UUID, channel: Channel
                                 ) -> CodeSent:
    """A new code for the member's current e-mail or phone, sent in
    ``member.verification_requested``; it replaces any code sent before."""
    row = await conn.fetchrow(
        f"select member_number, {_CONTACT_COLUMN[channel]} as contact,"  # noqa: S608 - module constant column names
        f" {_VERIFIED_COLUMN[channel]} is not null as done"
        " from members where member_id = $1 and status in ('active', 'dormant')", member_id)
    if row is None:
        raise NotFound("no such member")
    if row["contact"] is None:
        raise InvalidInput(f"you have no {_CHANNEL_NAMES[channel]} on file: add one to your "
                           "profile first", field="channel", code="no_contact")
    if row["done"]:
        raise Conflict(f"your {_CHANNEL_NAMES[channel]} is already verified: nothing to do",
                       field="channel", code="already_verified")
    code = f"{secrets.randbelow(1_000_000):06d}"
    expires_at = await conn.fetchval(
        """
        insert into member_verification_codes (member_id, channel, code_hash, expires_at)
        values ($1, $2, $3, now() + $4::interval)
        on conflict (member_id, channel) do update
           set code_hash = excluded.code_hash, attempts = 0, created_at = now(),
               expires_at = excluded.expires_at
        returning expires_at
        """,
        member_id, channel, _code_digest(member_id, channel, code), CODE_TTL)
    await emit(conn, "member.verification_requested", MemberVerificationRequestedData(
        member_id=member_id, member_number=row["member_number"], channel=channel,
        contact=row["contact"], code=code, expires_at=expires_at), member_id=member_id)
    return CodeSent(channel, expires_at)


async def count_code_request(limiter: RateLimiter, member_id: UUID, channel: Channel) -> int:
    """Counts one code asked for; seconds to wait when past ``CODES_PER_HOUR``, else 0."""
    return await limiter.hit(f"verification:{member_id}:{channel}", limit=CODES_PER_HOUR,
                             period_seconds=3600)


async def send_codes_to_new_contacts(conn: Connection, limiter: RateLimiter, member: Member,
                                     channels: list[Channel]) -> None:
    """A code for each of ``channels`` the member just gave (at sign-up, by a change) and has
    not verified, under the limit of codes asked for: past it, the member asks later."""
    for channel in channels:
        verified = member.email_verified if channel == "email" else member.phone_verified
        if getattr(member, channel) is None or verified:
            continue
        if await count_code_request(limiter, member.member_id, channel):
            continue
        await send_verification_code(conn, member.member_id, channel)


@dataclass(frozen=True, slots=True)
class CodeChecked:
    """What typing a code led to; ``tries_left`` after a wrong one."""

    outcome: Literal["verified", "wrong", "no_code", "expired"]
    tries_left: int = 0


async def check_verification_code(conn: Connection, member_id: UUID, channel: Channel,
                                  code: str) -> CodeChecked:
    """Mark the contact verified if ``code`` is its live code. A wrong code uses up a try (the
    last one deletes the code): the caller commits that even though it refuses the request."""
    row = await conn.fetchrow(
        """
        select code_hash, attempts, expires_at > now() as live from member_verification_codes
         where member_id = $1 and channel = $2
           for update
        """,
        member_id, channel)
    if row is None:
        return CodeChecked("no_code")
    if not row["live"]:
        await _forget_code(conn, member_id, channel)
        return CodeChecked("expired")
    if not hmac.compare_digest(row["code_hash"], _code_digest(member_id, channel, code)):
        tries_left = CODE_TRIES - row["attempts"] - 1
        if tries_left <= 0:
            await _forget_code(conn, member_id, channel)
        else:
            await conn.execute(
                "update member_verification_codes set attempts = attempts + 1"
                " where member_id = $1 and channel = $2", member_id, channel)
        return CodeChecked("wrong", max(tries_left, 0))
    await _forget_code(conn, member_id, channel)
    await conn.execute(
        f"update members set {_VERIFIED_COLUMN[channel]} = now(), updated_at = now()"  # noqa: S608 - a module constant column name
        " where member_id = $1", member_id)
    return CodeChecked("verified")


async def _forget_code(conn: Connection, member_id: UUID, channel: str) -> None:
    await conn.execute("delete from member_verification_codes where member_id = $1"
                       " and channel = $2", member_id, channel)


def code_refused(checked: CodeChecked, channel: Channel) -> InvalidInput:
    """The problem to answer for a code that did not verify."""
    contact = _CHANNEL_NAMES[channel]
    match checked.outcome:
        case "wrong" if checked.tries_left > 0:
            tries = "1 try" if checked.tries_left == 1 else f"{checked.tries_left} tries"
            return InvalidInput(f"this is not the code sent to your {contact}: check it and "
                                f"try again ({tries} left)", field="code",
                                code="verification_code_wrong")
        case "wrong":
            return InvalidInput(f"this is not the code sent to your {contact}, and that was "
                                "the last try: ask for a new code", field="code",
                                code="verification_code_wrong")
        case "expired":
            return InvalidInput(f"the code sent to your {contact} has expired (codes work for "
                                "15 minutes): ask for a new one", field="code",
                                code="verification_code_expired")
        case _:
            return InvalidInput(f"no code is waiting for your {contact} (none was asked for, "
                                "it was used, or the contact changed): ask for one with POST "
                                "/v1/me/verification", field="code",
                                code="verification_code_missing")
