"""What the segments and campaigns pages' tests add to tests/console/seed.py: members who have
never bought (so a purchase-based condition narrows a count), and purchases written as a
till's would be stored after a campaign's launch (so its results have something to compare)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from uuid import UUID, uuid4

import asyncpg

from loyalty.access.passwords import Passwords
from loyalty.core.db import Connection, init_connection
from loyalty.members.profiles import register_member
from schemas.members import MemberRegistration
from tests.console.seed import PASSWORD

# Members without a purchase, on top of the seed's three buyers.
NON_BUYERS = 20
BUYERS = 3


async def connect(database_url: str) -> Connection:
    conn: Connection = await asyncpg.connect(database_url)
    await init_connection(conn)
    return conn


async def more_members(database_url: str) -> None:
    """NON_BUYERS members who joined today and never bought."""
    conn = await connect(database_url)
    try:
        password_hash = await Passwords(time_cost=1, memory_kib=8, parallelism=1).hash(PASSWORD)
        for n in range(NON_BUYERS):
            await register_member(
                conn, MemberRegistration(password=PASSWORD, name=f"試験 会員{n:02d}",
                                         name_kana="シケン カイイン",
                                         email=f"member{n:02d}@example.jp"),
                password_hash=password_hash, region="JP")
    finally:
        await conn.close()


async def buy_after_launch(database_url: str, campaign_id: UUID, *, treated_share: float,
                           control_share: float) -> None:
    """Purchases just after the campaign's launch by the first ``treated_share`` of its
    treated members and ``control_share`` of its control members (by member id), at the
    seed's store."""
    conn = await connect(database_url)
    try:
        launched = await conn.fetchval(
            "select launched_at from campaigns where campaign_id = $1", campaign_id)
        assert launched is not None, "the campaign has not been launched"
        till = await conn.fetchrow(
            "select s.store_id, t.terminal_id from stores s join terminals t using (store_id)"
            " where s.code = 'SHIBUYA'")
        assert till is not None, "tests/console/seed.py makes the store and its till"
        buyers: list[UUID] = []
        for arm, share in (("treated", treated_share), ("control", control_share)):
            members = [r["member_id"] for r in await conn.fetch(
                "select member_id from campaign_members where campaign_id = $1 and arm = $2"
                " order by member_id", campaign_id, arm)]
            buyers += members[:round(len(members) * share)]
        await _purchases(conn, buyers, till["store_id"], till["terminal_id"],
                         launched + dt.timedelta(milliseconds=1))
    finally:
        await conn.close()


async def _purchases(conn: Connection, members: Iterable[UUID], store: UUID, terminal: UUID,
                     at: dt.datetime) -> None:
    for n, member_id in enumerate(members):
        await conn.execute(
            """
            insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                                   occurred_at, currency, total, lines, points_earned,
                                   points_redeemed, rule_version, recorded_at)
            values ($1, uuid_v7(), $2, $3, $4, $5, 'JPY', $6, '[]', 0, 0, 1, $5)
            """, member_id, store, terminal, f"C-{uuid4()}", at, 1_500 + 250 * (n % 5))


async def buy_recently(database_url: str, count: int) -> None:
    """The first ``count`` of the members more_members made buy once, ten days ago."""
    conn = await connect(database_url)
    try:
        till = await conn.fetchrow(
            "select s.store_id, t.terminal_id from stores s join terminals t using (store_id)"
            " where s.code = 'SHIBUYA'")
        assert till is not None, "tests/console/seed.py makes the store and its till"
        members = [r["member_id"] for r in await conn.fetch(
            "select member_id from members where name like '試験 %' order by name limit $1",
            count)]
        await _purchases(conn, members, till["store_id"], till["terminal_id"],
                         dt.datetime.now(dt.UTC) - dt.timedelta(days=10))
    finally:
        await conn.close()
