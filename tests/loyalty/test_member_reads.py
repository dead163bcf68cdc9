"""The reads the console's member page adds to the domain: a member's status history, the
look-alike groups of one member (the same rules as ``find_duplicates``), and their RFM segment
and at-risk flag as the last runs left them."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

import asyncpg

from loyalty.core.db import Connection, init_connection
from loyalty.insights.at_risk import member_at_risk
from loyalty.insights.rfm import member_rfm
from loyalty.members.merge import duplicates_of, find_duplicates
from loyalty.members.profiles import register_member, status_history, update_member
from schemas.base import BirthDate
from schemas.members import MemberRegistration, StaffMemberUpdate

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


async def _connect(url: str) -> Connection:
    conn: Connection = await asyncpg.connect(url)
    await init_connection(conn)
    return conn


async def _member(conn: Connection, name: str, email: str, *, kana: str = "",
                  birth: BirthDate | None = None, postal: str | None = None) -> UUID:
    member = await register_member(
        conn, MemberRegistration(password="correct horse battery", name=name, name_kana=kana,
                                 email=email, birth_date=birth, postal_code=postal),
        password_hash="x", region="JP")
    return member.member_id


async def test_status_history_is_newest_first_with_the_reason(fresh_database: str) -> None:
    conn = await _connect(fresh_database)
    try:
        member = await _member(conn, "山田 太郎", "taro@example.jp")
        assert await status_history(conn, member) == []
        await update_member(conn, member, StaffMemberUpdate(status="suspended"), region="JP")
        await update_member(conn, member, StaffMemberUpdate(status="active"), region="JP")
        changes = await status_history(conn, member)
        assert [(c.from_status, c.to_status, c.reason) for c in changes] == [
            ("suspended", "active", "staff"), ("active", "suspended", "staff")]
    finally:
        await conn.close()


async def test_the_groups_of_one_member_are_those_find_duplicates_finds(
    fresh_database: str,
) -> None:
    conn = await _connect(fresh_database)
    birth = BirthDate(1985, 4, 12)
    try:
        ids = [
            await _member(conn, "山田 太郎", "taro@example.jp", kana="ヤマダ タロウ", birth=birth),
            await _member(conn, "山田 太郎", "yamada@example.com", kana="ヤマダ タロウ",
                          birth=birth, postal="150-0001"),
            await _member(conn, "山田 太郎", "t.yamada@example.net", postal="150-0001"),
            await _member(conn, "田口 花子", "hana@example.jp"),
            await _member(conn, "田ロ 花子", "hana+shop@example.jp"),
            await _member(conn, "鈴木 一郎", "ichiro@example.jp"),
        ]
        suspended_twin = await _member(conn, "鈴木 一郎", "ichiro2@example.jp", birth=birth)
        await update_member(conn, ids[5], StaffMemberUpdate(birth_date=birth), region="JP")
        everyone, _ = await find_duplicates(conn, limit=100)
        for member in [*ids, suspended_twin]:
            mine = await duplicates_of(conn, member)
            assert all(group.members[0].member_id == member for group in mine)
            got = sorted((g.reason, sorted(m.member_id for m in g.members)) for g in mine)
            expected = sorted((g.reason, sorted(m.member_id for m in g.members))
                              for g in everyone
                              if member in {m.member_id for m in g.members})
            assert got == expected, member
        assert {g.reason for g in await duplicates_of(conn, ids[3])} == {
            "look-alike name", "same mailbox"}
        assert await duplicates_of(conn, ids[5]) != []
        # A merged member is no one's duplicate any more.
        await conn.execute("update members set status = 'merged', merged_into = $1"
                           " where member_id = $2", ids[5], suspended_twin)
        assert await duplicates_of(conn, ids[5]) == []
    finally:
        await conn.close()


async def test_rfm_and_at_risk_are_read_as_the_last_runs_left_them(fresh_database: str) -> None:
    conn = await _connect(fresh_database)
    try:
        member = await _member(conn, "佐藤 花子", "hanako@example.jp")
        assert await member_rfm(conn, member) is None
        assert await member_at_risk(conn, member) is None
        await conn.execute(
            """
            insert into member_rfm (member_id, last_purchase_at, recency_days, frequency,
                                    monetary, recency_score, frequency_score, monetary_score,
                                    window_days, computed_at)
            values ($1, $2, 40, 2, 6000, 2, 4, 3, 365, $3)
            """, member, NOW - dt.timedelta(days=40), NOW)
        await conn.execute(
            """
            insert into member_at_risk (member_id, flagged_at, last_purchase_at, purchases,
                                        typical_interval_days, days_since, as_of)
            values ($1, $2, $3, 5, 7.5, 40, $2)
            """, member, NOW, NOW - dt.timedelta(days=40))
        rfm = await member_rfm(conn, member)
        assert rfm is not None
        assert (rfm.recency_score, rfm.frequency_score, rfm.segment) == (2, 4, "at_risk")
        flag = await member_at_risk(conn, member)
        assert flag is not None
        assert (flag.days_since, flag.typical_interval_days) == (40, 7.5)
    finally:
        await conn.close()

