"""Points in the member app (member token) and for staff (balance, history, adjustments)."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from api.auth import members_only, staff_with
from api.deps import (
    MEMBER_DEPENDENCIES,
    STAFF_DEPENDENCIES,
    AnyRequest,
    Db,
    Ledger,
    Me,
    Staff,
    Svc,
    member_of,
    services_of,
    utc_now,
)
from api.idempotency import idempotent, respond, stored_as
from api.params import Cursor, Limit
from loyalty.access.audit import record_audit
from loyalty.access.roles import LEDGER_READERS, POINTS_ADJUSTERS
from loyalty.core.idempotency import Idempotency
from loyalty.members.cards import issue_card
from loyalty.points.actions import record_action
from loyalty.points.adjustments import adjust_points
from loyalty.points.history import entry_detail, points_history, points_summary
from loyalty.points.summaries import member_points
from loyalty.points.tiers import member_tier
from schemas.base import Page
from schemas.points import (
    ActionRequest,
    ActionResult,
    Adjustment,
    AdjustmentRecorded,
    Entry,
    EntryDetail,
    MemberCard,
    PointsSummary,
)
from schemas.rules import MemberTier

# One member's points, history and tier: customer service's (docs/security.md).
MEMBER_READERS = LEDGER_READERS
ADJUSTERS = POINTS_ADJUSTERS


class MyPointsController(Controller):
    path = "/v1/me"
    tags = ["member app"]
    guards = [members_only]
    dependencies = MEMBER_DEPENDENCIES

    # Reads are one statement each: no transaction around them (two round trips saved).

    # The member app's hottest read: the stored summary's bytes as they are (the read model,
    # docs/decisions/0019), neither decoded nor encoded again here; the document still says
    # PointsSummary.
    @get("/points", operation_id="getMyPoints",
         responses={200: ResponseSpec(data_container=PointsSummary,
                                      description="Request fulfilled, document follows")})
    async def points(self, request: AnyRequest, ledger: Ledger) -> Response[bytes]:
        """Available and pending points, release dates, what expires in the next 90 days."""
        # The caller and the services from the request: one provider (api/deps.py).
        services = services_of(request.app.state)
        body = await member_points(ledger, member_of(request).member_id,
                                   rulebook=services.rulebook, programme=services.programme,
                                   now=utc_now())
        return Response(body, media_type=MediaType.JSON)

    @get("/points/history", operation_id="getMyPointsHistory")
    async def history(self, me: Me, ledger: Ledger, limit: Limit = 50,
                      cursor: Cursor = None) -> Page[Entry]:
        """Every change of points, newest first, each with its reason."""
        return await points_history(ledger, me.member_id, limit=limit, cursor=cursor)

    @get("/points/entries/{entry_id:uuid}", operation_id="getMyPointsEntry")
    async def entry(self, me: Me, ledger: Ledger, entry_id: FromPath[UUID]) -> EntryDetail:
        """One entry and why it has these points: the rules that applied, step by step."""
        return await entry_detail(ledger, me.member_id, entry_id)

    @get("/tier", operation_id="getMyTier")
    async def tier(self, me: Me, ledger: Ledger, services: Svc) -> MemberTier:
        """The member's tier, the measure so far, what is left to the next, the history."""
        return await member_tier(ledger, me.member_id, rulebook=services.rulebook,
                                 tz=services.programme.timezone, now=utc_now())

    @get("/card", operation_id="getMyCard")
    async def card(self, me: Me, services: Svc) -> MemberCard:
        """A member card to show at the till: valid for about a minute, then ask again."""
        token, expires = issue_card(services.signer, me.member_id)
        return MemberCard(token=token, expires_at=expires)

    @post("/actions", operation_id="recordMyAction", status_code=200,
          responses={200: stored_as(ActionResult)})
    @idempotent(in_ledger=True)
    async def action(self, me: Me, data: JSONBody[ActionRequest], ledger: Ledger,
                     services: Svc, idempotency: Idempotency | None) -> Response[bytes]:
        """Points for a site visit, a share, a check-in...: 0 with the reason once a cap is
        reached."""
        return respond(await record_action(
            ledger, member_id=me.member_id, action=data.type, target=data.target,
            rulebook=services.rulebook, programme=services.programme, now=utc_now(),
            idempotency=idempotency))


class StaffPointsController(Controller):
    path = "/v1/members/{member_id:uuid}"
    tags = ["members (staff)"]
    guards = [staff_with(*MEMBER_READERS)]
    dependencies = STAFF_DEPENDENCIES

    @get("/points", operation_id="getMemberPoints")
    async def points(self, member_id: FromPath[UUID], staff: Staff, conn: Db,
                     services: Svc) -> PointsSummary:
        """A member's balance as the member sees it; the read is audited."""
        summary = await points_summary(conn, member_id, rulebook=services.rulebook,
                                       programme=services.programme, now=utc_now())
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="points.read", subject_kind="member", subject_id=member_id)
        return summary

    @get("/points/history", operation_id="getMemberPointsHistory")
    async def history(self, member_id: FromPath[UUID], staff: Staff, conn: Db,
                      limit: Limit = 50, cursor: Cursor = None) -> Page[Entry]:
        """A member's entries, newest first; the read is audited."""
        page = await points_history(conn, member_id, limit=limit, cursor=cursor)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="points.history", subject_kind="member", subject_id=member_id,
                           details={"results": len(page.items)})
        return page

    @get("/tier", operation_id="getMemberTier")
    async def tier(self, member_id: FromPath[UUID], staff: Staff, ledger: Ledger,
                   services: Svc) -> MemberTier:
        """A member's tier as the member sees it, with the history of changes; the read is
        audited."""
        tier = await member_tier(ledger, member_id, rulebook=services.rulebook,
                                 tz=services.programme.timezone, now=utc_now())
        await record_audit(ledger, actor_kind="staff", actor_id=staff.staff_id,
                           action="members.tier", subject_kind="member", subject_id=member_id)
        return tier

    @post("/adjustments", operation_id="adjustMemberPoints", status_code=201,
          guards=[staff_with(*ADJUSTERS)], responses={201: stored_as(AdjustmentRecorded)})
    @idempotent(required=True, in_ledger=True)
    async def adjust(self, member_id: FromPath[UUID], data: JSONBody[Adjustment], staff: Staff,
                     ledger: Ledger, services: Svc, idempotency: Idempotency) -> Response[bytes]:
        """Add or take away points, with the reason; audited; once per key."""
        return respond(await adjust_points(
            ledger, member_id=member_id, points=data.points, reason=data.reason,
            staff_id=staff.staff_id, rulebook=services.rulebook, programme=services.programme,
            now=utc_now(), idempotency=idempotency))
