"""campaign_reach: what the launch confirmation states is what the launch then does."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from loyalty.access.staff import create_staff
from loyalty.core.db import Connection, init_connection
from loyalty.core.errors import NotFound
from loyalty.core.programme import Programme
from loyalty.points.rules import RuleBook
from loyalty.promotions.campaigns import Reach, campaign_reach, create_campaign, launch_campaign
from loyalty.promotions.segments import create_segment
from schemas.campaigns import BonusPoints, CampaignCreate
from schemas.segments import SegmentCreate, StatusCondition
from tests.factories import make_members

TOKYO = Programme(currency="JPY", timezone=ZoneInfo("Asia/Tokyo"))


@pytest.mark.parametrize(("holdout", "cap", "expected"), [
    (0, None, Reach(eligible=57, treated=57, control=0)),
    (10, None, Reach(eligible=57, treated=51, control=6)),
    (50, 10, Reach(eligible=57, treated=10, control=10)),
    (33, 1000, Reach(eligible=57, treated=38, control=19)),
])
async def test_the_reach_before_launch_is_the_groups_the_launch_makes(
    fresh_database: str, holdout: int, cap: int | None, expected: Reach,
) -> None:
    await make_members(fresh_database, 57)
    # Suspended members are in the segment but out of reach, as the launch leaves them.
    await make_members(fresh_database, 5, status="suspended")
    conn: Connection = await asyncpg.connect(fresh_database)
    try:
        await init_connection(conn)
        now = dt.datetime.now(dt.UTC)
        staff_id = (await create_staff(
            conn, email="reach@staff.example", password_hash="x",
            role="marketer", display_name="reach")).staff_id
        segment = (await create_segment(conn, SegmentCreate(
            name="Everyone", definition=StatusCondition(statuses=["active", "suspended"])),
            staff_id=staff_id, now=now)).segment_id
        campaign = await create_campaign(conn, CampaignCreate(
            name="Reach", action=BonusPoints(points=10), segment_id=segment,
            holdout_percent=holdout, max_members=cap), staff_id=None)
        before = await campaign_reach(conn, campaign.campaign_id, now=now)
        assert before == expected
        launched = await launch_campaign(conn, campaign.campaign_id, rulebook=RuleBook(),
                                         programme=TOKYO, now=now)
        assert (launched.eligible, launched.treated, launched.control) == (
            before.eligible, before.treated, before.control)
        # Once launched, the groups as they were made, whatever the segment says now.
        await conn.execute("update members set status = 'dormant'")
        assert await campaign_reach(conn, campaign.campaign_id, now=now) == before
        with pytest.raises(NotFound):
            await campaign_reach(conn, uuid.uuid4(), now=now)
    finally:
        await conn.close()
