"""Members' own profile and consents (member token), and the staff view of members."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated
from uuid import UUID

from litestar import Controller, MediaType, Response, delete, get, patch, post, put
from litestar.background_tasks import BackgroundTask
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Stream
from msgspec import UNSET

from api.auth import members_only, staff_with
from api.deps import (
    MEMBER_DEPENDENCIES,
    STAFF_DEPENDENCIES,
    AnyRequest,
    Db,
    Me,
    Staff,
    Svc,
    utc_now,
)
from api.idempotency import idempotent
from api.params import Cursor, Limit, SearchText, Since
from api.sessions import check_current_password, limit_sign_in_address
from loyalty.access.audit import record_audit
from loyalty.access.passwords import check_new_password
from loyalty.access.roles import (
    CONTACT_READERS,
    MEMBER_EDITORS,
    MEMBER_EXPORTERS,
    PROFILE_READERS,
    as_seen_by,
)
from loyalty.access.sign_in import account_key, verify_password
from loyalty.core.db import Pool, transaction
from loyalty.core.errors import AuthenticationFailed, InvalidInput, RateLimited
from loyalty.members.credentials import (
    CHANNELS,
    check_verification_code,
    code_refused,
    count_code_request,
    member_password_hash,
    send_codes_to_new_contacts,
    send_verification_code,
    set_member_password,
)
from loyalty.members.erasure import cancel_erasure, erasure_status, request_erasure
from loyalty.members.export import export_member
from loyalty.members.merge import find_duplicates, merge_members
from loyalty.members.profiles import (
    get_consents,
    get_member,
    record_consents,
    search_kind,
    search_members,
    update_member,
)
from schemas.auth import PasswordChange
from schemas.base import Page
from schemas.members import (
    Consents,
    ConsentUpdate,
    DuplicatePage,
    Erasure,
    Member,
    MemberExport,
    MemberProfileUpdate,
    MemberStatus,
    MergeRequest,
    MyErasureRequest,
    StaffErasureRequest,
    StaffMemberUpdate,
    VerificationAnswer,
    VerificationRequest,
    VerificationSent,
)


async def _count_contact_change(request: AnyRequest, services: Svc) -> None:
    """A contact change answers "taken" for another member's e-mail or phone, so it is counted
    before it is tried, like a sign-in, against the limit per client address: probing who is a
    member costs what guessing passwords costs, and once limited every probe gets the same 429.
    """
    try:
        await limit_sign_in_address(request, services)
    except RateLimited as limited:
        raise RateLimited("too many e-mail or phone changes and sign-ins from this address;"
                          " try again after the time in Retry-After",
                          retry_after=limited.retry_after) from None


# The document's shape for the OpenAPI: the handlers answer with a stream of its bytes.
_EXPORT_RESPONSES = {200: ResponseSpec(
    data_container=MemberExport,
    description="The member's data as one JSON document (an attachment), streamed section by "
                "section as it is read from one snapshot of the database.")}


def _export(pool: Pool, member: Member, *, now: dt.datetime) -> Stream:
    """The export of ``member`` as a streamed attachment, read on a connection of its own held
    only while the document is sent (the request's transaction has committed by then)."""

    async def document() -> AsyncGenerator[bytes, None]:
        # Closed before the connection goes back: the export's transaction ends on this
        # connection, not later on whichever request the pool has lent it to since.
        async with pool.acquire() as conn, \
                aclosing(export_member(conn, member.member_id, now=now)) as exported:
            async for piece in exported:
                yield piece

    pieces = document()

    async def close() -> None:  # a coroutine function: BackgroundTask awaits only those
        await pieces.aclose()

    filename = f"loyalty-export-{member.member_number}-{now:%Y%m%d}.json"
    return Stream(pieces, media_type=MediaType.JSON, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        # Personal data: kept by no cache on the way.
        "Cache-Control": "no-store"},
        # A client that leaves mid-document stops the stream between two pieces: closing the
        # generator then ends its transaction and returns its connection at once, rather than
        # whenever the garbage collector finds it (a snapshot held open meanwhile).
        background=BackgroundTask(close))


class MeController(Controller):
    path = "/v1/me"
    tags = ["member app"]
    guards = [members_only]
    dependencies = MEMBER_DEPENDENCIES

    @get("", operation_id="getMe")
    async def get_me(self, me: Me, conn: Db) -> Member:
        """The signed-in member's profile."""
        return await get_member(conn, me.member_id)

    @patch("", operation_id="updateMe")
    @idempotent
    async def update_me(
        self, request: AnyRequest, me: Me, data: JSONBody[MemberProfileUpdate],
        conn: Db, services: Svc,
    ) -> Member:
        """Change one's own profile; omitted fields stay as they are. Sending ``email`` or
        ``phone`` counts as a sign-in attempt from the client's address."""
        contact_change = data.email is not UNSET or data.phone is not UNSET
        if contact_change:
            await _count_contact_change(request, services)
            before = await get_member(conn, me.member_id)
        member = await update_member(conn, me.member_id, data,
                                     region=services.settings.default_region,
                                     member_attributes=services.settings.member_attributes)
        if contact_change:
            await send_codes_to_new_contacts(conn, services.limiter, member, [
                channel for channel in CHANNELS
                if getattr(member, channel) != getattr(before, channel)])
        return member

    @put("/password", operation_id="changeMyPassword", status_code=204)
    async def change_my_password(
        self, request: AnyRequest, me: Me, data: JSONBody[PasswordChange], conn: Db,
        services: Svc,
    ) -> None:
        """Change one's password, giving the current one (counted like a sign-in). Every other
        session ends; this one goes on with its tokens as they are."""
        await limit_sign_in_address(request, services)
        check_new_password(data.new_password, field="new_password")
        await check_current_password(services, account_key("member", me.member_id),
                                     await member_password_hash(conn, me.member_id),
                                     data.current_password)
        await set_member_password(conn, me.member_id,
                                  await services.passwords.hash(data.new_password),
                                  keep_session=me.session_id)

    @post("/verification", operation_id="requestContactVerification", status_code=202)
    async def request_verification(
        self, me: Me, data: JSONBody[VerificationRequest], conn: Db, services: Svc
    ) -> VerificationSent:
        """Send a six-digit code to one's e-mail or phone (event
        ``member.verification_requested``), to type into ``POST /v1/me/verify``."""
        wait = await count_code_request(services.limiter, me.member_id, data.channel)
        if wait:
            raise RateLimited("too many codes asked for: use the last one sent, or ask again "
                              "after the time in Retry-After", retry_after=wait)
        sent = await send_verification_code(conn, me.member_id, data.channel)
        return VerificationSent(channel=sent.channel, expires_at=sent.expires_at)

    @post("/verify", operation_id="verifyContact", status_code=200)
    async def verify_contact(
        self, me: Me, data: JSONBody[VerificationAnswer], services: Svc
    ) -> Member:
        """Prove one reads one's e-mail or phone with the code sent there; the profile then
        says it is verified. A wrong code uses up one of a few tries."""
        # Its own transaction, not the request's: a wrong try must count though the answer
        # is a 422.
        async with transaction(services.pool) as conn:
            checked = await check_verification_code(conn, me.member_id, data.channel,
                                                    data.code)
            member = await get_member(conn, me.member_id)
        if checked.outcome != "verified":
            raise code_refused(checked, data.channel)
        return member

    @get("/consents", operation_id="getMyConsents")
    async def get_my_consents(self, me: Me, conn: Db) -> Consents:
        """Current consent per purpose, and its history."""
        return await get_consents(conn, me.member_id)

    @put("/consents", operation_id="setMyConsents")
    @idempotent
    async def set_my_consents(
        self, me: Me, data: JSONBody[ConsentUpdate], conn: Db
    ) -> Consents:
        """Give or withdraw consent per purpose, under the text version shown to the member.
        Withdrawing ``data_analysis`` deletes the member's RFM, at-risk and churn scores at once
        (what each purpose gates: docs/privacy.md)."""
        return await record_consents(conn, me.member_id, data.consents, actor_kind="member",
                                     actor_id=me.member_id)

    @get("/export", operation_id="exportMe", responses=_EXPORT_RESPONSES)
    async def export_me(self, me: Me, conn: Db, services: Svc) -> Stream:
        """Everything the programme holds about the signed-in member, as one JSON document
        (``MemberExport``; docs/privacy.md): profile, consents and their history, points,
        purchases, coupons, tiers, events, segments and campaigns, scores, sessions, and who
        on the staff read their data."""
        member = await get_member(conn, me.member_id)
        return _export(services.pool, member, now=utc_now())


    @delete("", operation_id="eraseMe", status_code=202,
            responses={200: ResponseSpec(data_container=Erasure,
                                         description="Erased at once (no grace period)")})
    async def erase_me(self, me: Me, data: JSONBody[MyErasureRequest], conn: Db,
                       services: Svc) -> Response[Erasure]:
        """Erase my personal data (the password again): 202 with ``due_at``, the end of the
        grace period (``LOYALTY_ERASURE_GRACE_DAYS``) during which I may sign in and cancel;
        200 when the programme erases at once. Purchases and points stay for accounting under
        an id that no longer names me. No idempotency key: the body is a password, which is
        never kept, even hashed; asking again answers the erasure already pending."""
        stored = await conn.fetchval(
            "select password_hash from members where member_id = $1", me.member_id)
        try:
            await verify_password(services.limiter, services.passwords, services.settings,
                                  key=account_key("member", me.member_id),
                                  stored_hash=stored, password=data.password)
        except AuthenticationFailed:
            raise InvalidInput("the password is wrong: type the password you sign in with",
                               field="password", code="wrong_password") from None
        erasure = await request_erasure(
            conn, me.member_id, by="member", by_id=me.member_id, now=utc_now(),
            grace=dt.timedelta(days=services.settings.erasure_grace_days))
        return Response(erasure, status_code=200 if erasure.state == "erased" else 202)

    @get("/erasure", operation_id="getMyErasure")
    async def get_my_erasure(self, me: Me, conn: Db) -> Erasure:
        """Whether an erasure of my data is pending, and when it is due."""
        return await erasure_status(conn, me.member_id)

    @post("/erasure/cancel", operation_id="cancelMyErasure", status_code=200)
    @idempotent
    async def cancel_my_erasure(self, me: Me, conn: Db) -> Erasure:
        """Keep my data after all: cancels the pending erasure (with none pending, says where
        the latest stands)."""
        return await cancel_erasure(conn, me.member_id, by="member", by_id=me.member_id,
                                    now=utc_now())


class StaffMembersController(Controller):
    path = "/v1/members"
    tags = ["members (staff)"]
    guards = [staff_with(*PROFILE_READERS)]
    dependencies = STAFF_DEPENDENCIES

    @get("", operation_id="searchMembers")
    async def search(
        self, staff: Staff, conn: Db, services: Svc,
        q: SearchText = None,
        status: FromQuery[MemberStatus | None] = None,
        joined_from: Since = None,
        joined_to: Since = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[Member]:
        """Find members by e-mail, phone, member number, or the start of name or kana. A role
        that may not see contact details finds by number, name and kana only, and gets
        members without them."""
        contacts = staff.role in CONTACT_READERS
        page = await search_members(
            conn, q=q, status=status, joined_from=joined_from, joined_to=joined_to, limit=limit,
            cursor=cursor, region=services.settings.default_region, by_contact=contacts,
        )
        if not contacts:
            page = Page(items=[as_seen_by(staff.role, m) for m in page.items],
                        next_cursor=page.next_cursor)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="members.search", subject_kind="member", subject_id=None,
                           details={"q_kind": search_kind(q), "status": status,
                                    "results": len(page.items),
                                    "found": [str(m.member_id) for m in page.items]})
        return page

    @get("/duplicates", operation_id="findDuplicateMembers",
         guards=[staff_with(*MEMBER_EDITORS)])
    async def duplicates(
        self, staff: Staff, conn: Db,
        limit: Limit = 50,
        cursor: Annotated[UUID | None, QueryParameter()] = None,
    ) -> DuplicatePage:
        """Members that may be one person (same name or reading and birth date, same name and
        postal code, same mailbox, e-mails or names that look alike), to check and merge."""
        groups, after = await find_duplicates(conn, limit=limit, after=cursor)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="members.duplicates", subject_kind="member", subject_id=None,
                           details={"groups": len(groups)})
        return DuplicatePage(items=groups, next_cursor=str(after) if after else None)

    @post("/{member_id:uuid}/merge", operation_id="mergeMembers", status_code=200,
          guards=[staff_with(*MEMBER_EDITORS)])
    @idempotent(required=True)
    async def merge(self, member_id: FromPath[UUID], data: JSONBody[MergeRequest],
                    staff: Staff, conn: Db) -> Member:
        """Merge ``from_member_id`` into this member: points, totals and consents move, and
        the merged member answers with ``merged_into`` from then on. Audited."""
        return await merge_members(conn, survivor_id=member_id,
                                   merged_id=data.from_member_id, staff_id=staff.staff_id,
                                   now=utc_now())

    @post("/{member_id:uuid}/export", operation_id="exportMember", status_code=200,
          guards=[staff_with(*MEMBER_EXPORTERS)], responses=_EXPORT_RESPONSES)
    async def export(self, member_id: FromPath[UUID], staff: Staff, conn: Db,
                     services: Svc) -> Stream:
        """A member's data export (``MemberExport``), for their request received by customer
        service: the document ``GET /v1/me/export`` gives the member. Audited
        (``members.export``), and so listed in the member's next export."""
        member = await get_member(conn, member_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="members.export", subject_kind="member", subject_id=member_id)
        return _export(services.pool, member, now=utc_now())

    @get("/{member_id:uuid}", operation_id="getMember")
    async def read(self, member_id: FromPath[UUID], staff: Staff, conn: Db) -> Member:
        """One member's profile (without contact details for a role that may not see them);
        the read is audited."""
        member = await get_member(conn, member_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="members.read", subject_kind="member", subject_id=member_id)
        return as_seen_by(staff.role, member)

    @patch("/{member_id:uuid}", operation_id="updateMember",
           guards=[staff_with(*MEMBER_EDITORS)])
    @idempotent
    async def update(
        self, member_id: FromPath[UUID], data: JSONBody[StaffMemberUpdate], staff: Staff,
        conn: Db, services: Svc,
    ) -> Member:
        """Correct a member's profile, or suspend and reinstate them."""
        member = await update_member(conn, member_id, data,
                                     region=services.settings.default_region)
        changed = [f for f in data.__struct_fields__ if getattr(data, f) is not UNSET]
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="members.update", subject_kind="member", subject_id=member_id,
                           details={"fields": changed})
        return member

    @post("/{member_id:uuid}/erasure", operation_id="eraseMember", status_code=202,
          guards=[staff_with(*MEMBER_EDITORS)],
          responses={200: ResponseSpec(data_container=Erasure,
                                       description="Erased at once (no grace period)")})
    @idempotent
    async def erase(self, member_id: FromPath[UUID], data: JSONBody[StaffErasureRequest],
                    staff: Staff, conn: Db, services: Svc) -> Response[Erasure]:
        """Erase a member's personal data at their request, received by support: as ``DELETE
        /v1/me`` (the grace period, during which the member or staff may cancel). Audited with
        the reason; 409 ``already_erased``."""
        # Written first, so an erasure done at once also erases its own values from the reason.
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="members.erase", subject_kind="member", subject_id=member_id,
                           details={"reason": data.reason})
        erasure = await request_erasure(
            conn, member_id, by="staff", by_id=staff.staff_id, now=utc_now(),
            grace=dt.timedelta(days=services.settings.erasure_grace_days))
        return Response(erasure, status_code=200 if erasure.state == "erased" else 202)

    @post("/{member_id:uuid}/erasure/cancel", operation_id="cancelMemberErasure",
          status_code=200, guards=[staff_with(*MEMBER_EDITORS)])
    @idempotent
    async def cancel_erasure(self, member_id: FromPath[UUID], staff: Staff,
                             conn: Db) -> Erasure:
        """Cancel a member's pending erasure (the member changed their mind); audited."""
        erasure = await cancel_erasure(conn, member_id, by="staff", by_id=staff.staff_id,
                                       now=utc_now())
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="members.erase_cancel", subject_kind="member",
                           subject_id=member_id, details={"state": erasure.state})
        return erasure
