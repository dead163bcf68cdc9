"""Campaigns for marketing staff: make one, launch it, read its results against the holdout."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Ledger, Staff, Svc, utc_now
from api.idempotency import idempotent
from api.params import Cursor, Limit
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS, MARKETING_READERS
from loyalty.promotions.campaigns import (
    campaign_results,
    create_campaign,
    get_campaign,
    launch_campaign,
    list_campaigns,
)
from schemas.base import Page
from schemas.campaigns import Campaign, CampaignCreate, CampaignResults


class CampaignsController(Controller):
    path = "/v1/campaigns"
    tags = ["campaigns"]
    guards = [staff_with(*MARKETING_READERS)]
    dependencies = STAFF_DEPENDENCIES

    @post("", operation_id="createCampaign", guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent
    async def create(self, data: JSONBody[CampaignCreate], staff: Staff, conn: Db) -> Campaign:
        """A draft campaign: audience, action, schedule, budget cap, holdout, channel."""
        campaign = await create_campaign(conn, data, staff_id=staff.staff_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="campaign.create", subject_kind="campaign",
                           subject_id=campaign.campaign_id)
        return campaign

    @get("", operation_id="listCampaigns")
    async def list_(self, conn: Db, limit: Limit = 50, cursor: Cursor = None) -> Page[Campaign]:
        """Campaigns, newest first."""
        return await list_campaigns(conn, limit=limit, cursor=cursor)

    @get("/{campaign_id:uuid}", operation_id="getCampaign")
    async def get_(self, campaign_id: FromPath[UUID], conn: Db) -> Campaign:
        """One campaign, with its groups' sizes once launched."""
        return await get_campaign(conn, campaign_id)

    @post("/{campaign_id:uuid}/launch", operation_id="launchCampaign", status_code=200,
          guards=[staff_with(*MARKETING_EDITORS)])
    @idempotent(required=True)
    async def launch(self, campaign_id: FromPath[UUID], staff: Staff, ledger: Ledger,
                     services: Svc) -> Campaign:
        """Assign the audience to treated and control, and act for the treated group; or
        schedule it, if it starts later. Launching again changes nothing (and finishes a
        launch that was interrupted)."""
        # Its steps commit on ``ledger`` as they go, so a launch cut short is finished by its
        # retry; the key's answer commits at the end (api.idempotency).
        campaign = await launch_campaign(ledger, campaign_id, rulebook=services.rulebook,
                                         programme=services.programme, now=utc_now())
        await record_audit(ledger, actor_kind="staff", actor_id=staff.staff_id,
                           action="campaign.launch", subject_kind="campaign",
                           subject_id=campaign_id, details={"status": campaign.status})
        return campaign

    @get("/{campaign_id:uuid}/results", operation_id="getCampaignResults")
    async def results(self, campaign_id: FromPath[UUID], conn: Db) -> CampaignResults:
        """Reach, coupons redeemed, points granted, purchasers, revenue per member and
        reactivations, treated against control, with the difference and its 95% interval."""
        return await campaign_results(conn, campaign_id, now=utc_now())
