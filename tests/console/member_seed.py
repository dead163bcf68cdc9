"""What the member page's tests add to tests/console/seed.py, written through the loyalty
functions the API calls: points earned by engagement actions (entries with rule traces), a
consent, a coupon in the wallet, and a second 山田 太郎 with the first one's birth date (a
look-alike the duplicate rules find)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from loyalty.access.passwords import Passwords
from loyalty.core.db import Connection, init_connection
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.members.filter import MemberFilter
from loyalty.members.profiles import record_consents, register_member, update_member
from loyalty.points.actions import record_action
from loyalty.points.rules import RuleBook
from loyalty.promotions.coupon_templates import create_template
from loyalty.promotions.coupon_wallet import issue_coupons
from schemas.base import BirthDate
from schemas.coupons import CouponTemplateCreate, FixedAmount
from schemas.members import ConsentChoice, MemberRegistration, StaffMemberUpdate
from tests.console.seed import MEMBERS, PASSWORD

BIRTH_DATE = BirthDate(1985, 4, 12)
TWIN_EMAIL = "yamada.t@example.com"
COUPON = "誕生月500円引き"


@dataclass(frozen=True)
class Seeded:
    yamada: UUID
    twin: UUID
    sato: UUID


async def seed_member_page(database_url: str) -> Seeded:
    conn: Connection = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        return await _seed(conn)
    finally:
        await conn.close()


async def _member_id(conn: Connection, email: str) -> UUID:
    member_id: UUID = await conn.fetchval("select member_id from members where email = $1",
                                          email)
    return member_id


async def _seed(conn: Connection) -> Seeded:
    yamada = await _member_id(conn, MEMBERS[0][2])
    sato = await _member_id(conn, MEMBERS[1][2])
    programme = Programme.from_settings(Settings())
    rulebook = RuleBook()
    now = dt.datetime.now(dt.UTC)
    await record_action(conn, member_id=yamada, action="site_visit", target=None,
                        rulebook=rulebook, programme=programme, now=now)
    await record_action(conn, member_id=yamada, action="review",
                        target="https://shop.example/items/42", rulebook=rulebook,
                        programme=programme, now=now)
    await record_consents(conn, yamada, [
        ConsentChoice(purpose="marketing_email", granted=True, text_version="2024-04")],
        actor_kind="member", actor_id=yamada)
    await update_member(conn, yamada, StaffMemberUpdate(birth_date=BIRTH_DATE), region="JP")
    passwords = Passwords(time_cost=1, memory_kib=8, parallelism=1)
    twin = (await register_member(
        conn, MemberRegistration(password=PASSWORD, name=MEMBERS[0][0], name_kana=MEMBERS[0][1],
                                 email=TWIN_EMAIL, birth_date=BIRTH_DATE),
        password_hash=await passwords.hash(PASSWORD), region="JP")).member_id
    await record_action(conn, member_id=twin, action="site_visit", target=None,
                        rulebook=rulebook, programme=programme, now=now)
    template = await create_template(
        conn, CouponTemplateCreate(name=COUPON, discount=FixedAmount(amount=500)),
        staff_id=None)
    await issue_coupons(conn, template_id=template.template_id,
                        member_filter=MemberFilter.members([yamada]),
                        target={"members": [str(yamada)]}, staff_id=None, now=now,
                        tz=programme.timezone.key)
    return Seeded(yamada=yamada, twin=twin, sato=sato)
