"""The at_risk job on a real PostgreSQL: a small data set flagged by hand, the day a member tips
over, running twice, flags cleared when members buy again or go dormant, any batch size, and a
run that fails part-way finished by the next."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from loyalty.core.db import Connection
from loyalty.insights.at_risk import flag_at_risk
from tests.crashes import allow_members, refuse_member
from tests.factories import AT_RISK_NOW, Shop, hand_flagged, insert_member

NOW = AT_RISK_NOW
DAY = dt.timedelta(days=1)


async def flags(conn: Connection) -> dict[UUID, dict[str, Any]]:
    rows = await conn.fetch("select * from member_at_risk order by member_id")
    return {r["member_id"]: dict(r) for r in rows}


async def flagged_names(conn: Connection, people: dict[str, UUID]) -> set[str]:
    names = {member_id: name for name, member_id in people.items()}
    return {names[member_id] for member_id in await flags(conn)}


async def run(conn: Connection, now: dt.datetime = NOW, **options: Any) -> dict[str, int]:
    return await flag_at_risk(conn, now=now, **{"multiple": 2.0, "min_purchases": 3, **options})


async def test_hand_computed_flags(db: Connection) -> None:
    people = await hand_flagged(db)
    # Active members scanned: ann ben cal dee gus hal jon kim.
    assert await run(db) == {"members": 8, "flagged": 4, "cleared": 0}
    assert await flagged_names(db, people) == {"ann", "cal", "gus", "jon"}
    rows = await flags(db)
    by_name = {name: rows[member_id] for name, member_id in people.items() if member_id in rows}
    assert {name: (r["purchases"], r["typical_interval_days"], r["days_since"])
            for name, r in by_name.items()} == {
        "ann": (3, 10.0, 21), "cal": (5, 7.0, 15), "gus": (3, 10.0, 21), "jon": (3, 10.0, 21)}
    assert by_name["ann"]["last_purchase_at"] == NOW - 21 * DAY
    assert {(r["flagged_at"], r["as_of"]) for r in rows.values()} == {(NOW, NOW)}


async def test_a_member_tips_over_the_day_after_twice_their_interval(db: Connection) -> None:
    shop = await Shop(db).open()
    member = await shop.member("regular")
    for day in (0, 10, 20):
        await shop.buy(member, NOW + day * DAY, 1_000)
    last = NOW + 20 * DAY
    assert (await run(db, last + 20 * DAY))["flagged"] == 0
    # 20 days and 23 hours: still 20 whole days.
    assert (await run(db, last + 21 * DAY - dt.timedelta(hours=1)))["flagged"] == 0
    assert await run(db, last + 21 * DAY) == {"members": 1, "flagged": 1, "cleared": 0}
    assert (await flags(db))[member]["days_since"] == 21
    # With a multiple of 3 the same silence is not long enough.
    assert await run(db, last + 21 * DAY, multiple=3.0) == {
        "members": 1, "flagged": 0, "cleared": 1}
    # Nor with 4 purchases required.
    assert (await run(db, last + 21 * DAY, min_purchases=4))["flagged"] == 0


async def test_running_twice_at_one_moment_changes_nothing(db: Connection) -> None:
    await hand_flagged(db)
    await run(db)
    first = await flags(db)
    assert await run(db) == {"members": 8, "flagged": 0, "cleared": 0}
    assert await flags(db) == first


async def test_flags_follow_the_members_from_one_day_to_the_next(db: Connection) -> None:
    people = await hand_flagged(db)
    shop = await Shop.reopen(db)
    await run(db)
    later = NOW + DAY
    # ann buys again (one purchase: her silence is over); cal goes dormant; ben reaches 21 days.
    await shop.buy(people["ann"], later - dt.timedelta(hours=1), 1_000)
    await db.execute("update members set status = 'dormant' where member_id = $1", people["cal"])
    assert await run(db, later) == {"members": 7, "flagged": 1, "cleared": 2}
    assert await flagged_names(db, people) == {"ben", "gus", "jon"}
    rows = await flags(db)
    # A member still at risk keeps the moment they were first flagged; the rest is as of today.
    assert (rows[people["gus"]]["flagged_at"], rows[people["gus"]]["days_since"],
            rows[people["gus"]]["as_of"]) == (NOW, 22, later)
    assert rows[people["ben"]]["flagged_at"] == later


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5000])
async def test_every_batch_size_gives_the_same_flags(db: Connection, batch_size: int) -> None:
    people = await hand_flagged(db)
    await run(db)
    # The member with the highest id there can be, flagged, then gone dormant: only the last
    # batch, open-ended, covers their row.
    shop = await Shop.reopen(db)
    last = await insert_member(db, "last",
                               member_id=UUID("ffffffff-ffff-7fff-bfff-ffffffffffff"))
    for ago in (41, 31, 21):
        await shop.buy(last, NOW - ago * DAY, 1_000)
    assert (await run(db))["flagged"] == 1
    await db.execute("update members set status = 'dormant' where member_id = $1", last)
    await db.execute("update members set status = 'dormant' where member_id = $1", people["ann"])
    assert await run(db, batch_size=batch_size) == {"members": 7, "flagged": 0, "cleared": 2}
    assert await flagged_names(db, people) == {"cal", "gus", "jon"}


async def test_a_run_that_fails_part_way_is_finished_by_the_next(db: Connection) -> None:
    people = await hand_flagged(db)
    await run(db)
    before = await flags(db)
    later = NOW + DAY
    # A failure in the batch of gus: PostgreSQL refuses his row.
    await refuse_member(db, "member_at_risk", people["gus"], events="insert or update")
    with pytest.raises(asyncpg.RaiseError, match="refused"):
        await run(db, later, batch_size=1)
    after_failure = await flags(db)
    # Batches before gus's (members in id order) were written as of later; gus's and the ones
    # after it are untouched.
    assert {member_id: row for member_id, row in after_failure.items()
            if member_id >= people["gus"]} == {member_id: row for member_id, row in before.items()
                                               if member_id >= people["gus"]}
    assert {row["as_of"] for member_id, row in after_failure.items()
            if member_id < people["gus"]} <= {later}
    await allow_members(db, "member_at_risk")
    # ben was newly flagged by a batch of the failed run that committed.
    assert await run(db, later, batch_size=1) == {"members": 8, "flagged": 0, "cleared": 0}
    assert await flagged_names(db, people) == {"ann", "ben", "cal", "gus", "jon"}
    assert {r["as_of"] for r in (await flags(db)).values()} == {later}


@pytest.mark.parametrize(("options", "message"), [
    ({"multiple": 0.0}, "multiple"),
    ({"min_purchases": 1}, "min_purchases"),
    ({"batch_size": 0}, "batch_size"),
])
async def test_bad_options_are_refused(db: Connection, options: dict[str, Any],
                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await run(db, **options)
