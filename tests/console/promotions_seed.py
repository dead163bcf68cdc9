"""What the coupons and events pages' tests add to tests/console/seed.py, written through the
loyalty functions the API calls: a saved segment of the active members, a coupon template, an
event under way with the three members invited, two holding seats and one checked in at the
seeded till, and an event to come with nobody yet."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from loyalty.access.principals import TerminalPrincipal
from loyalty.core.db import Connection, init_connection
from loyalty.core.idempotency import Idempotency
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.members.filter import MemberFilter
from loyalty.points.rules import RuleBook
from loyalty.promotions.coupon_templates import create_template
from loyalty.promotions.event_seats import check_in, reserve_seat
from loyalty.promotions.segments import create_segment
from loyalty.promotions.store_events import create_event, invite_members
from schemas.coupons import CouponTemplateCreate, FixedAmount
from schemas.events import EventCreate
from schemas.segments import SegmentCreate, StatusCondition
from tests.factories import instant, query

SEGMENT = "アクティブ会員"
TEMPLATE = "冬のご優待 500円引き"
EVENT = "新春お楽しみ会"
LATER_EVENT = "春の新作発表会"


@dataclass(frozen=True)
class Promotions:
    segment_id: UUID
    template_id: UUID
    event_id: UUID
    later_event_id: UUID


async def seed_promotions(database_url: str) -> Promotions:
    conn: Connection = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        return await _seed(conn)
    finally:
        await conn.close()


async def _seed(conn: Connection) -> Promotions:
    now = dt.datetime.now(dt.UTC)
    staff_id = await conn.fetchval("select staff_id from staff where role = 'marketer'")
    segment = await create_segment(conn, SegmentCreate(
        name=SEGMENT, definition=StatusCondition(statuses=["active"]),
        description="利用中の会員すべて"), staff_id=staff_id, now=now)
    template = await create_template(conn, CouponTemplateCreate(
        name=TEMPLATE, discount=FixedAmount(amount=500), min_spend=3000,
        description="3,000円以上のお買い上げで500円引き"), staff_id=staff_id)
    event = await create_event(conn, EventCreate(
        name=EVENT, place="渋谷店 2階", starts_at=instant(now - dt.timedelta(minutes=30)),
        ends_at=instant(now + dt.timedelta(hours=3)), capacity=20, points=100,
        store_code="SHIBUYA"),
        staff_id=staff_id, now=now - dt.timedelta(days=7))
    later = await create_event(conn, EventCreate(
        name=LATER_EVENT, place="渋谷店 3階", starts_at=instant(now + dt.timedelta(days=30)),
        ends_at=instant(now + dt.timedelta(days=30, hours=2)), capacity=50, invitation_only=False),
        staff_id=staff_id, now=now)
    members = [r["member_id"] for r in await conn.fetch(
        "select member_id from members order by member_id")]
    await invite_members(conn, event_id=event.event_id,
                         member_filter=MemberFilter.members(members), campaign_id=None,
                         now=now - dt.timedelta(days=6))
    for member_id in members[:2]:
        await reserve_seat(conn, event_id=event.event_id, member_id=member_id,
                           now=now - dt.timedelta(days=5))
    till = await conn.fetchrow(
        "select t.terminal_id, t.store_id, s.code from terminals t join stores s using (store_id)"
        " where s.code = 'SHIBUYA'")
    assert till is not None
    await check_in(
        conn, event_id=event.event_id, member=members[0],
        terminal=TerminalPrincipal(till["terminal_id"], till["store_id"], till["code"]),
        idempotency=Idempotency(till["terminal_id"], "seed-check-in", b"\0" * 32),
        rulebook=RuleBook(), programme=Programme(currency="JPY", timezone=ZoneInfo("Asia/Tokyo")),
        now=now)
    return Promotions(segment.segment_id, template.template_id, event.event_id,
                      later.event_id)


async def count_rows(settings: Settings, sql: str, *args: object) -> int:
    """``sql``'s one number, on the test's database."""
    assert settings.database_url
    rows = await query(settings.database_url, sql, *args)
    return int(rows[0][0])
