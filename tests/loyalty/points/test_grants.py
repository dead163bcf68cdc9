"""Bulk grants on a real PostgreSQL, through the functions the API and campaigns call: stopped
and resumed, run twice at once, by list and by filter; one entry per member per grant always."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from loyalty.core.db import Connection
from loyalty.core.ids import uuid7
from loyalty.members.filter import MemberFilter
from loyalty.members.profiles import register_member
from loyalty.points.earning import expires_at
from loyalty.points.grants import MemberList, create_grant, get_grant, run_grant
from loyalty.points.rules import RuleBook, save_rules
from schemas.grants import CampaignGrantTarget
from schemas.members import MemberRegistration
from schemas.rules import EarningRules, RollingExpiry
from tests.factories import PROGRAMME, TOKYO
from tests.ledger_checks import check_invariants, read_rows

NOW = dt.datetime(2026, 3, 10, 1, 0, tzinfo=dt.UTC)
_numbers = itertools.count()


async def new_members(conn: Connection, count: int, *, prefix: str = "Grantee") -> list[UUID]:
    made = []
    for _ in range(count):
        n = next(_numbers)
        member = await register_member(
            conn, MemberRegistration(password="x" * 8, name=f"{prefix} {n}",
                                     email=f"grantee{n}@example.com"),
            password_hash="unused", region="JP")
        made.append(member.member_id)
    return sorted(made)


async def grant_for(conn: Connection, target: Any, *, points: int = 25,
                    rulebook: RuleBook | None = None) -> UUID:
    grant_id = await create_grant(conn, points=points, reason="Test grant", target=target,
                                  rulebook=rulebook or RuleBook(), programme=PROGRAMME, now=NOW)
    assert grant_id is not None
    return grant_id


async def granted(conn: Connection, grant_id: UUID) -> list[UUID]:
    rows = await conn.fetch(
        "select member_id from point_entries where grant_id = $1 order by member_id", grant_id)
    return [row["member_id"] for row in rows]


async def test_a_grant_stopped_after_its_first_batch_finishes_when_run_again(
    db: Connection,
) -> None:
    members = await new_members(db, 10)
    audience = MemberList.of(members)
    grant_id = await grant_for(db, audience)

    assert await run_grant(db, grant_id, audience, now=NOW, batch_size=4, max_batches=1) is False
    assert await granted(db, grant_id) == members[:4]
    stopped = await get_grant(db, grant_id)
    assert (stopped.status, stopped.members_granted, stopped.points_granted) == (
        "running", 4, 100)
    assert stopped.members_skipped is None

    assert await run_grant(db, grant_id, audience, now=NOW, batch_size=4) is True
    assert await granted(db, grant_id) == members
    done = await get_grant(db, grant_id)
    assert (done.status, done.members_granted, done.points_granted) == ("done", 10, 250)
    assert done.finished_at == NOW
    rows = await read_rows(db)
    assert all(b["available"] == 25 for b in rows.balances if b["member_id"] in members)
    check_invariants(rows)


async def test_running_a_grant_again_from_the_start_doubles_nothing(db: Connection) -> None:
    members = await new_members(db, 5)
    audience = MemberList.of(members)
    grant_id = await grant_for(db, audience)
    assert await run_grant(db, grant_id, audience, now=NOW, batch_size=2)
    # As if its progress were lost: every member is visited again and found already granted.
    await db.execute("update point_grants set status = 'running', finished_at = null,"
                     " progress = null where grant_id = $1", grant_id)
    assert await run_grant(db, grant_id, audience, now=NOW, batch_size=2)
    assert await granted(db, grant_id) == members
    assert (await get_grant(db, grant_id)).members_granted == 5
    check_invariants(await read_rows(db))


async def test_the_database_refuses_a_second_entry_for_a_member_and_grant(
    db: Connection,
) -> None:
    (member,) = await new_members(db, 1)
    grant_id = uuid7()
    insert = """
        insert into point_entries (member_id, entry_id, kind, amount, reason, source,
                                   grant_id, created_at)
        values ($1, $2, 'earn', 5, 'twice', 'staff', $3, $4)
    """
    await db.execute(insert, member, uuid7(), grant_id, NOW)
    with pytest.raises(asyncpg.UniqueViolationError, match="point_entries_grant"):
        async with db.transaction():
            await db.execute(insert, member, uuid7(), grant_id, NOW)


async def test_a_filter_reaches_only_active_and_dormant_members_and_resumes(
    db: Connection,
) -> None:
    active = await new_members(db, 5, prefix="Filtered")
    dormant, suspended, erased, merged = await new_members(db, 4, prefix="Filtered")
    outsider = await new_members(db, 2, prefix="Elsewhere")
    for member, status in ((dormant, "dormant"), (suspended, "suspended"), (erased, "erased"),
                           (merged, "merged")):
        await db.execute("update members set status = $2 where member_id = $1", member, status)
    audience = MemberFilter("m.name like $?", ("Filtered %",))
    grant_id = await grant_for(db, CampaignGrantTarget(campaign_id=uuid7()))

    assert not await run_grant(db, grant_id, audience, now=NOW, batch_size=2, max_batches=2)
    assert len(await granted(db, grant_id)) == 4
    assert await run_grant(db, grant_id, audience, now=NOW, batch_size=2)
    assert await granted(db, grant_id) == sorted([*active, dormant])
    assert not set(outsider) & set(await granted(db, grant_id))
    check_invariants(await read_rows(db))


async def test_a_campaign_grant_is_recorded_as_campaign_points(db: Connection) -> None:
    members = await new_members(db, 2)
    campaign_id = uuid7()
    grant_id = await grant_for(db, CampaignGrantTarget(campaign_id=campaign_id), points=70)
    assert await run_grant(db, grant_id, MemberList.of(members), now=NOW)
    grant = await get_grant(db, grant_id)
    assert grant.source == "campaign"
    assert grant.target == CampaignGrantTarget(campaign_id=campaign_id)
    assert (grant.unknown_members, grant.members_skipped) == (0, None)
    rows = await db.fetch("select source, amount, kind from point_entries where grant_id = $1",
                          grant_id)
    assert [tuple(r) for r in rows] == [("campaign", 70, "earn")] * 2


async def test_lots_expire_per_the_rules_in_force_when_the_grant_was_made(
    db: Connection,
) -> None:
    members = await new_members(db, 3)
    await save_rules(db, EarningRules(expiry=RollingExpiry(months=3)), staff_id=None)
    rulebook = RuleBook()
    audience = MemberList.of(members)
    grant_id = await grant_for(db, audience, rulebook=rulebook)
    await save_rules(db, EarningRules(expiry=RollingExpiry(months=24)), staff_id=None)
    assert await run_grant(db, grant_id, audience, now=NOW + dt.timedelta(days=40))
    lots = await db.fetch(
        """
        select l.expires_at, l.earned_at from point_lots l
          join point_entries e using (member_id, entry_id) where e.grant_id = $1
        """, grant_id)
    assert {tuple(lot) for lot in lots} == {
        (expires_at(RollingExpiry(months=3), NOW, TOKYO), NOW + dt.timedelta(days=40))}
    assert (await get_grant(db, grant_id)).expires_at == dt.datetime(
        2026, 6, 10, 15, 0, tzinfo=dt.UTC)


# -- two runners at once, on connections of their own ----------------------------------------


async def test_two_runners_of_one_grant_at_once_write_each_member_once(
    connections: list[Connection],
) -> None:
    setup, first, second = connections
    members = await new_members(setup, 20)
    audience = MemberList.of([*members, uuid7()])
    grant_id = await grant_for(setup, audience, points=9)
    results = await asyncio.gather(
        run_grant(first, grant_id, audience, now=NOW, batch_size=3),
        run_grant(second, grant_id, audience, now=NOW, batch_size=3))
    assert list(results) == [True, True]
    assert await granted(setup, grant_id) == members
    grant = await get_grant(setup, grant_id)
    assert (grant.members_granted, grant.points_granted, grant.unknown_members) == (20, 180, 1)
    assert grant.members_skipped == 0
    check_invariants(await read_rows(setup))
