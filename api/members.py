"""Members' own profile and consents (member token), and the staff view of members."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
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
from loyalty.access.roles import CONTACT_READERS, MEMBER_EDITORS, PROFILE_READERS, as_seen_by
from loyalty.access.sign_in import account_key
from loyalty.core.db import transaction
from loyalty.core.errors import RateLimited
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
from loyalty.members.merge import find_duplicates, merge_members
from loyalty.members.profiles import (
    get_consents,
    get_member,
    record_consents,
    search_members,
    update_member,
)
from schemas.auth import PasswordChange
from schemas.base import Page
from schemas.members import (
    Consents,
    ConsentUpdate,
    DuplicatePage,
    Member,
    MemberProfileUpdate,
    MemberStatus,
    MergeRequest,
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
                           details={"q": q, "status": status, "results": len(page.items)})
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
