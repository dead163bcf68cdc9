"""flag_dormant on its own: business days in the business time zone, batches of any size, once."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from loyalty.insights.dormancy import dormancy_cutoff, flag_dormant
from tests.factories import TOKYO, make_members


def tokyo(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=TOKYO)


def test_the_cutoff_is_the_start_of_a_business_day() -> None:
    # 03:00 on 11 July in Tokyo, 180 days: members last active before 12 January are dormant.
    now = tokyo("2025-07-11T03:00")
    assert dormancy_cutoff(now, TOKYO, 180) == tokyo("2025-01-12T00:00")
    # The same instant is still 10 July in UTC; the business day is Tokyo's.
    assert dormancy_cutoff(now.astimezone(dt.UTC), TOKYO, 180) == tokyo("2025-01-12T00:00")


@pytest.mark.parametrize("batch_size", [1, 3, 4, 100])
async def test_members_are_flagged_once_whatever_the_batches(
        fresh_database: str, batch_size: int) -> None:
    members = await make_members(fresh_database, 10)
    now = tokyo("2025-07-11T03:00")
    # Last activity per member (in member-id order): 23:59 on 11 January (dormant: the whole
    # of 12 January .. 10 July, 180 days, has passed without them), 00:00 on 12 January (not
    # yet), and so on alternately; one suspended member, long quiet, is left alone.
    last_seen = [tokyo("2025-01-11T23:59") if n % 2 == 0 else tokyo("2025-01-12T00:00")
                 for n in range(10)]
    conn = await asyncpg.connect(fresh_database)
    try:
        for member, seen in zip(members, last_seen, strict=True):
            await conn.execute("update members set last_activity_at = $2 where member_id = $1",
                               member, seen)
        await conn.execute("update members set status = 'suspended' where member_id = $1",
                           members[8])
        first = await flag_dormant(conn, now=now, tz=TOKYO, days=180, batch_size=batch_size)
        again = await flag_dormant(conn, now=now, tz=TOKYO, days=180, batch_size=batch_size)
        dormant = {r["member_id"] for r in await conn.fetch(
            "select member_id from members where status = 'dormant'")}
        history = await conn.fetch(
            "select member_id, changed_at, from_status, to_status, reason"
            " from member_status_changes where to_status = 'dormant'")
    finally:
        await conn.close()
    expected = {members[n] for n in (0, 2, 4, 6)}
    assert first == {"scanned": 10, "flagged": 4}
    assert again == {"scanned": 10, "flagged": 0}
    assert dormant == expected
    assert sorted((r["member_id"], r["changed_at"], r["from_status"], r["reason"])
                  for r in history) == sorted((m, now, "active", "inactivity") for m in expected)


async def test_a_dormant_member_active_again_is_recorded_once_by_the_trigger(
        fresh_database: str) -> None:
    [member] = await make_members(fresh_database, 1)
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("update members set last_activity_at = $2 where member_id = $1",
                           member, tokyo("2025-01-01T12:00"))
        await flag_dormant(conn, now=tokyo("2025-08-01T03:00"), tz=TOKYO, days=180)
        # An older receipt arriving late does not wake them; a newer one does.
        await conn.execute("update members set last_activity_at = greatest(last_activity_at, $2)"
                           " where member_id = $1", member, tokyo("2024-12-01T12:00"))
        assert await conn.fetchval("select status from members where member_id = $1",
                                   member) == "dormant"
        await conn.execute("update members set last_activity_at = greatest(last_activity_at, $2)"
                           " where member_id = $1", member, tokyo("2025-08-02T12:00"))
        rows = await conn.fetch("select from_status, to_status, reason from"
                                " member_status_changes where member_id = $1 order by change_id",
                                member)
        status = await conn.fetchval("select status from members where member_id = $1", member)
    finally:
        await conn.close()
    assert status == "active"
    assert [tuple(r) for r in rows] == [("active", "dormant", "inactivity"),
                                        ("dormant", "active", "activity")]


async def test_a_late_purchase_reactivates_at_its_own_time(fresh_database: str) -> None:
    # Flagged on 1 August; a purchase made on 2 August reaches the database later (an offline
    # till, an import): the member is active again from the purchase, not from its recording.
    [member] = await make_members(fresh_database, 1)
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("update members set last_activity_at = $2 where member_id = $1",
                           member, tokyo("2025-01-01T12:00"))
        await flag_dormant(conn, now=tokyo("2025-08-01T03:00"), tz=TOKYO, days=180)
        # The statement a till's purchase runs (loyalty/points/purchases.py).
        await conn.execute("update members set last_activity_at = greatest(last_activity_at, $2)"
                           " where member_id = $1", member, tokyo("2025-08-02T12:00"))
        row = await conn.fetchrow("select status, status_changed_at from members"
                                  " where member_id = $1", member)
        changes = await conn.fetch("select changed_at, to_status from member_status_changes"
                                   " where member_id = $1 order by change_id", member)
    finally:
        await conn.close()
    assert row is not None
    assert tuple(row) == ("active", tokyo("2025-08-02T12:00"))
    assert [tuple(r) for r in changes] == [(tokyo("2025-08-01T03:00"), "dormant"),
                                           (tokyo("2025-08-02T12:00"), "active")]
