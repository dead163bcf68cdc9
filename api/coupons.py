"""Coupons: templates, codes and issues for marketing staff; the wallet in the member app.
The till's side (validate, redeem with a purchase) is in ``api.pos``."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from api.auth import members_only, staff_with
from api.deps import MEMBER_DEPENDENCIES, STAFF_DEPENDENCIES, Db, Me, Staff, Svc, utc_now
from api.idempotency import idempotent
from api.params import Cursor, Limit
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS, MARKETING_READERS
from loyalty.core.errors import InvalidInput
from loyalty.members.filter import MemberFilter
from loyalty.promotions.coupon_templates import (
    create_template,
    generate_code_batch,
    get_template,
    list_templates,
    update_template,
)
from loyalty.promotions.coupon_wallet import issue_coupons, wallet
from loyalty.promotions.segments import segment_filter
from schemas.base import Page
from schemas.coupons import (
    CodeBatch,
    CodeBatchRequest,
    CouponTemplate,
    CouponTemplateCreate,
    CouponTemplateUpdate,
    IssueRequest,
    IssueResult,
    WalletCoupon,
    WalletStatus,
)


class CouponTemplatesController(Controller):
    path = "/v1/coupon-templates"
    tags = ["coupons"]
    guards = [staff_with(*MARKETING_READERS)]
    dependencies = STAFF_DEPENDENCIES

    @post("", operation_id="createCouponTemplate", guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent
    async def create(self, data: JSONBody[CouponTemplateCreate], staff: Staff,
                     conn: Db) -> CouponTemplate:
        """A coupon template: discount, validity, where and for what, limits, stacking."""
        template = await create_template(conn, data, staff_id=staff.staff_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="coupon_template.create", subject_kind="coupon_template",
                           subject_id=template.template_id)
        return template

    @get("", operation_id="listCouponTemplates")
    async def list_(self, conn: Db, active: Annotated[bool | None, QueryParameter()] = None,
                    limit: Limit = 50, cursor: Cursor = None) -> Page[CouponTemplate]:
        """Templates, newest first, with how many were issued and redeemed."""
        return await list_templates(conn, active=active, limit=limit, cursor=cursor)

    @get("/{template_id:uuid}", operation_id="getCouponTemplate")
    async def get_(self, template_id: FromPath[UUID], conn: Db) -> CouponTemplate:
        """One template."""
        return await get_template(conn, template_id)

    @patch("/{template_id:uuid}", operation_id="updateCouponTemplate",
           guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent
    async def update(self, template_id: FromPath[UUID], data: JSONBody[CouponTemplateUpdate],
                     staff: Staff, conn: Db) -> CouponTemplate:
        """Change names, terms and limits, or deactivate (history stays)."""
        template = await update_template(conn, template_id, data)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="coupon_template.update", subject_kind="coupon_template",
                           subject_id=template_id)
        return template

    @post("/{template_id:uuid}/codes", operation_id="generateCouponCodes", status_code=201,
          guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent
    async def codes(self, template_id: FromPath[UUID], data: JSONBody[CodeBatchRequest],
                    staff: Staff, conn: Db, services: Svc) -> CodeBatch:
        """A batch of unique single-use codes with a check character, returned in full."""
        batch = await generate_code_batch(
            conn, template_id, count=data.count, prefix=data.prefix, staff_id=staff.staff_id,
            now=utc_now(), tz=services.settings.timezone)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="coupon_codes.generate", subject_kind="coupon_template",
                           subject_id=template_id,
                           details={"batch_id": str(batch.batch_id), "count": batch.count})
        return batch

    @post("/{template_id:uuid}/issue", operation_id="issueCoupons", status_code=201,
          guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent(required=True)
    async def issue(self, template_id: FromPath[UUID], data: JSONBody[IssueRequest],
                    staff: Staff, conn: Db, services: Svc) -> IssueResult:
        """Put one coupon of this template into the wallet of each member of a list or a
        segment; the same key and body again issues nothing more."""
        now = utc_now()
        target: dict[str, Any]
        if (data.members is None) == (data.segment_id is None):
            raise InvalidInput("give exactly one of members or segment_id", field="members")
        if data.members is not None:
            members = sorted(set(data.members))
            member_filter = MemberFilter.members(members)
            target = {"members": [str(m) for m in members]}
            requested: int | None = len(members)
        else:
            assert data.segment_id is not None
            member_filter = await segment_filter(conn, data.segment_id, now=now)
            target = {"segment_id": str(data.segment_id)}
            requested = None
        result = await issue_coupons(
            conn, template_id=template_id, member_filter=member_filter, target=target,
            staff_id=staff.staff_id, now=now, tz=services.settings.timezone,
            requested=requested)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="coupons.issue", subject_kind="coupon_template",
                           subject_id=template_id,
                           details={"issue_id": str(result.issue_id), "issued": result.issued})
        return result


class MyCouponsController(Controller):
    path = "/v1/me/coupons"
    tags = ["member app"]
    guards = [members_only]
    dependencies = MEMBER_DEPENDENCIES

    @get("", operation_id="getMyCoupons")
    async def coupons(
        self, me: Me, conn: Db,
        status: Annotated[WalletStatus | None, QueryParameter()] = None,
        limit: Limit = 50, cursor: Cursor = None,
    ) -> Page[WalletCoupon]:
        """The wallet: coupons usable now, upcoming, used or expired (``status``), newest
        first."""
        return await wallet(conn, me.member_id, status=status, now=utc_now(), limit=limit,
                            cursor=cursor)
