"""Sign-up, log-in, token refresh and log-out for members and staff."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from litestar import Controller, post
from litestar.di import Provide
from litestar.params import JSONBody

from api.deps import AnyRequest, Db, Services, Svc, provide_conn, provide_services
from loyalty.access.addresses import client_address
from loyalty.access.passwords import check_new_password
from loyalty.access.sessions import (
    access_token,
    revoke_refresh_token_family,
    rotate_refresh_token,
    start_session,
)
from loyalty.access.sign_in import account_key, limit_address, verify_password
from loyalty.access.staff import find_staff_login, staff_role
from loyalty.core.db import Connection, transaction
from loyalty.core.errors import AuthenticationFailed, PermissionDenied, RateLimited
from loyalty.members.credentials import (
    CHANNELS,
    RESETS_PER_CONTACT_PER_HOUR,
    confirm_password_reset,
    request_password_reset,
    send_codes_to_new_contacts,
)
from loyalty.members.profiles import find_login, register_member
from schemas.auth import (
    LogoutRequest,
    MemberLogin,
    PasswordResetAccepted,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    StaffLogin,
    Tokens,
)
from schemas.members import MemberRegistration, Registered


async def _limit_address(request: AnyRequest, services: Svc) -> None:
    """Sign-in endpoints are limited per client address, whoever the caller claims to be."""
    await limit_address(services.limiter, services.settings,
                        client_address(request.scope, services.settings.trusted_proxies))


# Other answers to "does this contact belong to a member?" count here too (api/members.py).
limit_sign_in_address = _limit_address


async def _verify_password(services: Svc, key: str, stored_hash: str | None,
                           password: str) -> None:
    await verify_password(services.limiter, services.passwords, services.settings, key=key,
                          stored_hash=stored_hash, password=password)


async def check_current_password(services: Svc, key: str, stored_hash: str | None,
                                 password: str) -> None:
    """A signed-in caller's current password, before it is changed: counted and limited like a
    sign-in's, but wrong is a 403 (the token is fine; the password typed is not)."""
    try:
        await _verify_password(services, key, stored_hash, password)
    except AuthenticationFailed:
        raise PermissionDenied("the current password is wrong: type it again, or, if it is "
                               "forgotten, sign out and reset it", field="current_password",
                               code="wrong_password") from None


# A reset request answers no sooner than this after it arrived, found or not: what a found
# member costs (a token written, an event, a commit) hides inside it.
RESET_ANSWER_SECONDS = 0.25
RESET_ACCEPTED = ("if this e-mail address or phone number belongs to a member, a message with a "
                  "link to choose a new password is on its way; the link works for 30 minutes. "
                  "Nothing arrived? Check the address and ask again in a few minutes.")


async def _start_session(
    conn: Connection, services: Services, *, member_id: UUID | None = None,
    staff: tuple[UUID, str] | None = None,
) -> Tokens:
    """A new session for a member or a staff account, under the configured lifetimes."""
    return await start_session(conn, services.signer, member_id=member_id, staff=staff,
                               refresh_ttl=services.settings.refresh_token_ttl_seconds,
                               max_age=services.settings.session_max_age_seconds)


class SessionController(Controller):
    path = "/v1/auth"
    tags = ["auth"]
    dependencies = {"services": Provide(provide_services), "conn": Provide(provide_conn)}

    @post("/member/register", operation_id="registerMember", status_code=201)
    async def register(
        self, request: AnyRequest, data: JSONBody[MemberRegistration], services: Svc,
        conn: Db,
    ) -> Registered:
        """Create a member account and sign it in."""
        await _limit_address(request, services)
        check_new_password(data.password)
        password_hash = await services.passwords.hash(data.password)
        member = await register_member(conn, data, password_hash=password_hash,
                                       region=services.settings.default_region,
                                       member_attributes=services.settings.member_attributes)
        await send_codes_to_new_contacts(conn, services.limiter, member, list(CHANNELS))
        tokens = await _start_session(conn, services, member_id=member.member_id)
        return Registered(member=member, tokens=tokens)

    @post("/member/login", operation_id="loginMember", status_code=200)
    async def member_login(
        self, request: AnyRequest, data: JSONBody[MemberLogin], services: Svc,
        conn: Db,
    ) -> Tokens:
        """Log a member in with e-mail or phone and password."""
        await _limit_address(request, services)
        region = services.settings.default_region
        found = await find_login(conn, email=data.email, phone=data.phone, region=region)
        key = account_key("member", found[0] if found else None, email=data.email,
                          phone=data.phone, region=region)
        await _verify_password(services, key, found[1] if found else None, data.password)
        assert found is not None
        return await _start_session(conn, services, member_id=found[0])

    @post("/staff/login", operation_id="loginStaff", status_code=200)
    async def staff_login(
        self, request: AnyRequest, data: JSONBody[StaffLogin], services: Svc,
        conn: Db,
    ) -> Tokens:
        """Log a staff account in; the access token carries its role."""
        await _limit_address(request, services)
        row = await find_staff_login(conn, data.email)
        key = account_key("staff", row["staff_id"] if row else None, email=data.email)
        await _verify_password(services, key, row["password_hash"] if row else None,
                               data.password)
        return await _start_session(conn, services, staff=(row["staff_id"], row["role"]))

    @post("/member/password-reset", operation_id="requestPasswordReset", status_code=202)
    async def password_reset(
        self, request: AnyRequest, data: JSONBody[PasswordResetRequest], services: Svc
    ) -> PasswordResetAccepted:
        """Send a member a single-use link (token) to choose a new password, through the event
        ``member.password_reset_requested``. The same answer, after the same time, whether or
        not the e-mail or phone belongs to a member."""
        started = time.monotonic()
        await _limit_address(request, services)
        region = services.settings.default_region
        # Counted per contact before anyone is looked up, so the 429 says nothing either.
        contact = account_key("reset", None, email=data.email, phone=data.phone, region=region)
        wait = await services.limiter.hit(contact, limit=RESETS_PER_CONTACT_PER_HOUR,
                                          period_seconds=3600)
        if wait:
            raise RateLimited("too many password resets asked for this e-mail address or phone "
                              "number: use the last link sent, or ask again after the time in "
                              "Retry-After", retry_after=wait)
        # Committed here, not after the answer, so the answer's time covers the commit.
        async with transaction(services.pool) as conn:
            await request_password_reset(conn, email=data.email, phone=data.phone,
                                         region=region)
        await asyncio.sleep(max(0.0, started + RESET_ANSWER_SECONDS - time.monotonic()))
        return PasswordResetAccepted(detail=RESET_ACCEPTED)

    @post("/member/password-reset/confirm", operation_id="confirmPasswordReset",
          status_code=204)
    async def password_reset_confirm(
        self, request: AnyRequest, data: JSONBody[PasswordResetConfirm], services: Svc,
        conn: Db,
    ) -> None:
        """Choose a new password with the token a reset sent: the token is spent, every
        session of the member ends, and they sign in with the new password at once, even
        when wrong guesses had locked the account (the token proves the member)."""
        await _limit_address(request, services)
        check_new_password(data.new_password, field="new_password")
        password_hash = await services.passwords.hash(data.new_password)
        member_id = await confirm_password_reset(conn, data.token, password_hash)
        await services.limiter.forget(account_key("member", member_id))

    @post("/refresh", operation_id="refreshTokens", status_code=200)
    async def refresh(
        self, request: AnyRequest, data: JSONBody[RefreshRequest], services: Svc
    ) -> Tokens:
        """Spend a refresh token for new tokens. A token spent twice revokes its whole family."""
        await _limit_address(request, services)
        settings = services.settings
        # Its own transaction, not the request's: a detected reuse must commit the revocation
        # even though the answer is a 401.
        async with transaction(services.pool) as conn:
            rotation = await rotate_refresh_token(
                conn, data.refresh_token, ttl_seconds=settings.refresh_token_ttl_seconds,
                max_age_seconds=settings.session_max_age_seconds)
            role = None
            if rotation.kind == "staff" and rotation.subject_id is not None:
                role = await staff_role(conn, rotation.subject_id)
        if rotation.outcome == "reused":
            raise AuthenticationFailed(
                "this refresh token was already used; its session is revoked",
                                       code="refresh_token_reused")
        if rotation.outcome != "rotated" or rotation.subject_id is None \
                or (rotation.kind == "staff" and role is None):
            raise AuthenticationFailed("refresh token is not valid or its session has ended: "
                                       "sign in again", code="invalid_refresh_token")
        assert rotation.refresh_token is not None
        assert rotation.session_id is not None
        access, ttl = access_token(services.signer, rotation.subject_id, rotation.session_id,
                                   role=role, seconds_left=rotation.seconds_left)
        return Tokens(access_token=access, refresh_token=rotation.refresh_token,
                      expires_in=ttl)

    @post("/logout", operation_id="logout", status_code=204)
    async def logout(self, data: JSONBody[LogoutRequest], conn: Db) -> None:
        """End the session the refresh token belongs to. An unknown token changes nothing."""
        await revoke_refresh_token_family(conn, data.refresh_token)
