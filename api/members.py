"""Members' own profile and consents (member token), and the staff view of members."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated
from uuid import UUID

from litestar import Controller, MediaType, get, patch, post, put
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
from api.sessions import limit_sign_in_address
from loyalty.access.audit import record_audit
from loyalty.access.roles import (
    CONTACT_READERS,
    MEMBER_EDITORS,
    MEMBER_EXPORTERS,
    PROFILE_READERS,
    as_seen_by,
)
from loyalty.core.db import Pool
from loyalty.core.errors import RateLimited
from loyalty.members.export import export_member
from loyalty.members.merge import find_duplicates, merge_members
from loyalty.members.profiles import (
    get_consents,
    get_member,
    record_consents,
    search_members,
    update_member,
)
from schemas.base import Page
from schemas.members import (
    Consents,
    ConsentUpdate,
    DuplicatePage,
    Member,
    MemberExport,
    MemberProfileUpdate,
    MemberStatus,
    MergeRequest,
    StaffMemberUpdate,
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
        if data.email is not UNSET or data.phone is not UNSET:
            await _count_contact_change(request, services)
        return await update_member(conn, me.member_id, data,
                                   region=services.settings.default_region,
                                   member_attributes=services.settings.member_attributes)

    @get("/consents", operation_id="getMyConsents")
    async def get_my_consents(self, me: Me, conn: Db) -> Consents:
        """Current consent per purpose, and its history."""
        return await get_consents(conn, me.member_id)

    @put("/consents", operation_id="setMyConsents")
    @idempotent
    async def set_my_consents(
        self, me: Me, data: JSONBody[ConsentUpdate], conn: Db
    ) -> Consents:
        """Give or withdraw consent per purpose, under the text version shown to the member."""
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
