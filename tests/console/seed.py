"""The seeded data the console's tests read: a staff account of each role and a few members
with Japanese names, kana, e-mail addresses and phone numbers, who joined 60 days ago and have
bought at one store on most of the last 30 days (for the dashboard's figures and chart)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from loyalty.access.passwords import Passwords
from loyalty.access.staff import create_staff
from loyalty.access.stores import create_store, create_terminal
from loyalty.core.db import Connection, init_connection
from loyalty.members.profiles import register_member
from loyalty.points.rules import ensure_default_rules
from schemas.members import Member, MemberRegistration

PASSWORD = "correct horse battery staple"
ROLES = ("admin", "support", "marketer", "analyst")
# Each seeded account's display name: its desk, not a person.
DISPLAY_NAMES = {"admin": "管理担当", "support": "サポート窓口", "marketer": "販促担当",
                 "analyst": "分析担当"}
MEMBERS = (
    ("山田 太郎", "ヤマダ タロウ", "taro.yamada@example.jp", "090-1234-5678"),
    ("佐藤 花子", "サトウ ハナコ", "hanako.sato@example.jp", "080-2345-6789"),
    ("鈴木 一郎", "スズキ イチロウ", "ichiro.suzuki@example.jp", "070-3456-7890"),
)


def staff_email(role: str) -> str:
    return f"{role}@staff.example"


async def seed(database_url: str) -> list[Member]:
    """The staff accounts (each signs in with PASSWORD) and the members."""
    conn: Connection = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        return await _seed(conn)
    finally:
        await conn.close()


async def _seed(conn: Connection) -> list[Member]:
    passwords = Passwords(time_cost=1, memory_kib=8, parallelism=1)
    password_hash = await passwords.hash(PASSWORD)
    for role in ROLES:
        await create_staff(conn, email=staff_email(role), password_hash=password_hash,
                           role=role, display_name=DISPLAY_NAMES[role])
    members = [
        await register_member(
            conn, MemberRegistration(password=PASSWORD, name=name, name_kana=kana, email=email,
                                     phone=phone),
            password_hash=password_hash, region="JP")
        for name, kana, email, phone in MEMBERS
    ]
    await _purchases(conn, members)
    return members


async def _purchases(conn: Connection, members: list[Member]) -> None:
    """Purchases written as a till's would be stored, without earning: the dashboard reads
    orders and sales, and the ledger stays empty for the members pages."""
    await ensure_default_rules(conn)
    store = await create_store(conn, code="SHIBUYA", name="渋谷店")
    terminal = (await create_terminal(conn, store=store, name="レジ1")).terminal.terminal_id
    now = dt.datetime.now(dt.UTC)
    await conn.execute("update members set joined_at = $1",
                       now - dt.timedelta(days=60))
    receipt = 0
    for back in range(1, 30):
        for n, member in enumerate(members):
            if (back + n) % 3:
                continue
            receipt += 1
            await conn.execute(
                """
                insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                                       occurred_at, currency, total, lines, points_earned,
                                       points_redeemed, rule_version, recorded_at)
                values ($1, uuid_v7(), $2, $3, $4, $5, 'JPY', $6, '[]', 0, 0, 1, $5)
                """, member.member_id, store.store_id, terminal, f"R-{receipt}",
                now - dt.timedelta(days=back), 1_000 + 370 * ((back * 7 + n * 3) % 11))
