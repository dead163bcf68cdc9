"""Birthday rewards on a real PostgreSQL: who gets them on which business day (time zone, 29
February, the week's look-back, the turn of the year), once per member per year however often
the job runs, points through the ledger with its invariants intact, coupons into wallets, a run
that fails part-way finished by the next, and two runs at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from loyalty.core.db import Connection
from loyalty.core.errors import Conflict
from loyalty.points.earning import expires_at
from loyalty.points.rules import RuleBook, ensure_default_rules
from loyalty.promotions.birthdays import (
    BirthdayDay,
    birthday_issue_id,
    birthdays_due,
    celebrated_on,
    give_birthday_rewards,
)
from loyalty.promotions.coupon_templates import create_template
from schemas.coupons import CouponTemplateCreate, CouponTemplateUpdate, DaysAfterIssue, FixedAmount
from tests.crashes import allow_members, refuse_member
from tests.factories import PROGRAMME, TOKYO, insert_member
from tests.ledger_checks import check_invariants, read_rows

# 00:30 on 10 March 2026 in Tokyo; in UTC it is still 9 March.
NOW = dt.datetime(2026, 3, 9, 15, 30, tzinfo=dt.UTC)
JOINED = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_n = itertools.count()


def tokyo(year: int, month: int, day: int, hour: int = 0, minute: int = 30) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=TOKYO)


async def member(conn: Connection, born: dt.date | None, *, status: str = "active",
                 joined: dt.datetime = JOINED) -> UUID:
    return await insert_member(conn, f"member {next(_n)}", birth_date=born, status=status,
                               joined_at=joined)


async def template(conn: Connection) -> UUID:
    made = await create_template(conn, CouponTemplateCreate(
        name="Happy birthday", discount=FixedAmount(amount=500), validity=DaysAfterIssue(days=30),
    ), staff_id=None)
    return made.template_id


async def give(conn: Connection, now: dt.datetime = NOW, *, points: int = 100,
               coupon_template_id: UUID | None = None, tz: ZoneInfo = TOKYO,
               **options: Any) -> dict[str, int]:
    await ensure_default_rules(conn)
    return await give_birthday_rewards(
        conn, now=now, tz=tz, points=points, coupon_template_id=coupon_template_id,
        rulebook=RuleBook(), programme=PROGRAMME, **options)


async def rewards(conn: Connection) -> dict[UUID, list[dict[str, Any]]]:
    found: dict[UUID, list[dict[str, Any]]] = {}
    for row in await conn.fetch("select * from birthday_rewards order by member_id, year"):
        found.setdefault(row["member_id"], []).append(dict(row))
    return found


async def rewarded_years(conn: Connection) -> dict[UUID, list[tuple[int, dt.date]]]:
    return {member_id: [(r["year"], r["birthday"]) for r in rows]
            for member_id, rows in (await rewards(conn)).items()}


# -- the calendar, pure ----------------------------------------------------------------------


def test_29_february_is_celebrated_on_28_february_in_common_years() -> None:
    leap = dt.date(2000, 2, 29)
    assert celebrated_on(leap, 2027) == dt.date(2027, 2, 28)
    assert celebrated_on(leap, 2028) == dt.date(2028, 2, 29)
    assert celebrated_on(dt.date(1990, 3, 10), 2027) == dt.date(2027, 3, 10)


def test_a_run_rewards_the_last_week_and_today_each_in_its_own_year() -> None:
    due = birthdays_due(dt.date(2027, 1, 2))
    assert [(d.month, d.day, d.year) for d in due] == [
        (12, 26, 2026), (12, 27, 2026), (12, 28, 2026), (12, 29, 2026), (12, 30, 2026),
        (12, 31, 2026), (1, 1, 2027), (1, 2, 2027)]
    # 28 February of a common year is also the day of those born on the 29th.
    assert birthdays_due(dt.date(2027, 2, 28), look_back_days=0) == [
        BirthdayDay(2, 28, 2027, dt.date(2027, 2, 28)),
        BirthdayDay(2, 29, 2027, dt.date(2027, 2, 28))]
    assert birthdays_due(dt.date(2028, 2, 28), look_back_days=0) == [
        BirthdayDay(2, 28, 2028, dt.date(2028, 2, 28))]


# -- who, when -------------------------------------------------------------------------------


async def test_hand_computed_rewards(db: Connection) -> None:
    """At NOW, 10 March 2026 in Tokyo, the run rewards birthdays from 3 to 10 March.

    member  born        status     joined            rewarded
    ann     1990-03-10  active     2020              yes, today
    ben     1985-03-03  active     2020              yes, 7 days ago (the look-back's first day)
    cal     1985-03-02  active     2020              no: 8 days ago, past the look-back
    dee     1970-03-10  dormant    2020              yes (and stays dormant)
    eve     1990-03-10  suspended  2020              no
    fay     1990-03-10  merged     2020              no
    gus     1990-03-11  active     2020              no: tomorrow
    ivy     -           active     2020              no birth date
    jon     1990-03-08  active     9 March 2026      no: joined after his birthday
    kim     1990-03-10  active     00:10 today       yes: a member on her birthday
    4 members, 4 x 100 points, 4 coupons.
    """
    coupon = await template(db)
    people = {
        "ann": await member(db, dt.date(1990, 3, 10)),
        "ben": await member(db, dt.date(1985, 3, 3)),
        "cal": await member(db, dt.date(1985, 3, 2)),
        "dee": await member(db, dt.date(1970, 3, 10), status="dormant"),
        "eve": await member(db, dt.date(1990, 3, 10), status="suspended"),
        "fay": await member(db, dt.date(1990, 3, 10), status="merged"),
        "gus": await member(db, dt.date(1990, 3, 11)),
        "ivy": await member(db, None),
        "jon": await member(db, dt.date(1990, 3, 8), joined=tokyo(2026, 3, 9, 12)),
        "kim": await member(db, dt.date(1990, 3, 10), joined=tokyo(2026, 3, 10, 0, 10)),
    }
    names = {member_id: name for name, member_id in people.items()}

    assert await give(db, coupon_template_id=coupon) == {
        "members": 4, "points": 400, "coupons": 4}

    found = await rewards(db)
    assert {names[m]: [(r["year"], r["birthday"]) for r in rows]
            for m, rows in found.items()} == {
        "ann": [(2026, dt.date(2026, 3, 10))], "ben": [(2026, dt.date(2026, 3, 3))],
        "dee": [(2026, dt.date(2026, 3, 10))], "kim": [(2026, dt.date(2026, 3, 10))]}
    rows = [r for member_rows in found.values() for r in member_rows]
    assert {(r["rewarded_at"], r["points"]) for r in rows} == {(NOW, 100)}
    # Points: one earn entry each, spendable now, expiring per the earning rules in force.
    _, rules = await RuleBook().at(db, 1)
    entries = await db.fetch(
        """
        select e.member_id, e.entry_id, e.kind, e.amount, e.source, e.reason, e.created_at,
               l.points, l.available_at, l.released_at, l.expires_at
          from point_entries e join point_lots l using (member_id, entry_id)
        """)
    assert {names[e["member_id"]] for e in entries} == {"ann", "ben", "dee", "kim"}
    assert {tuple(e.values())[2:] for e in entries} == {
        ("earn", 100, "system", "birthday reward 2026", NOW, 100, NOW, NOW,
         expires_at(rules.expiry, NOW, TOKYO))}
    assert {(r["member_id"], r["entry_id"]) for r in rows} == {
        (e["member_id"], e["entry_id"]) for e in entries}
    balances = await db.fetch(
        "select member_id, available, lifetime_earned, version from point_balances"
        " where member_id = any($1::uuid[])", [people[n] for n in ("ann", "ben", "dee", "kim")])
    assert {tuple(b.values())[1:] for b in balances} == {(100, 100, 1)}
    check_invariants(await read_rows(db))
    # Coupons: one each, in the wallet under the year's issue, recorded on the reward.
    coupons = await db.fetch(
        "select member_id, coupon_id, source, issue_id, issued_at from member_coupons")
    assert {names[c["member_id"]] for c in coupons} == {"ann", "ben", "dee", "kim"}
    assert {(c["source"], c["issue_id"], c["issued_at"]) for c in coupons} == {
        ("birthday", birthday_issue_id(2026), NOW)}
    assert {(r["member_id"], r["coupon_id"]) for r in rows} == {
        (c["member_id"], c["coupon_id"]) for c in coupons}
    # A gift does not wake a dormant member: only their own purchase or action does.
    assert await db.fetchval("select status from members where member_id = $1",
                             people["dee"]) == "dormant"


async def test_the_birthday_is_the_business_day_in_the_programmes_time_zone(
    db: Connection,
) -> None:
    born = dt.date(1990, 3, 10)
    ann = await member(db, born)
    # 23:59 on 9 March in Tokyo: not yet.
    assert (await give(db, tokyo(2026, 3, 9, 23, 59)))["members"] == 0
    # Midnight in Tokyo, 15:00 on 9 March in UTC: her birthday.
    assert (await give(db, dt.datetime(2026, 3, 9, 15, 0, tzinfo=dt.UTC)))["members"] == 1
    assert await rewarded_years(db) == {ann: [(2026, born.replace(year=2026))]}
    # A programme in UTC would still be on 9 March at that moment.
    ben = await member(db, born)
    assert (await give(db, dt.datetime(2026, 3, 9, 15, 30, tzinfo=dt.UTC),
                       tz=ZoneInfo("UTC")))["members"] == 0
    assert ben not in await rewarded_years(db)


async def test_29_february_birthdays_come_on_28_february_in_common_years(
    db: Connection,
) -> None:
    leap = await member(db, dt.date(2000, 2, 29))
    feb28 = await member(db, dt.date(1999, 2, 28))
    mar1 = await member(db, dt.date(1999, 3, 1))
    assert (await give(db, tokyo(2027, 2, 27)))["members"] == 0
    assert (await give(db, tokyo(2027, 2, 28)))["members"] == 2
    assert (await give(db, tokyo(2027, 3, 1)))["members"] == 1
    # A leap year: 28 February is not the leap member's day, 29 February is.
    assert (await give(db, tokyo(2028, 2, 28)))["members"] == 1
    assert (await give(db, tokyo(2028, 2, 29)))["members"] == 1
    assert (await give(db, tokyo(2028, 3, 1)))["members"] == 1
    assert await rewarded_years(db) == {
        leap: [(2027, dt.date(2027, 2, 28)), (2028, dt.date(2028, 2, 29))],
        feb28: [(2027, dt.date(2027, 2, 28)), (2028, dt.date(2028, 2, 28))],
        mar1: [(2027, dt.date(2027, 3, 1)), (2028, dt.date(2028, 3, 1))],
    }


async def test_missed_days_are_caught_up_within_the_week_and_across_the_new_year(
    db: Connection,
) -> None:
    days = {day: await member(db, dt.date(1980, 12, day)) for day in (24, 25, 26, 31)}
    new_year = await member(db, dt.date(1980, 1, 1))
    # The job last ran on 24 December (rewarding that day), then not until 2 January: the
    # birthdays from 26 December on are caught up, for 2026; 25 December is past the week.
    assert (await give(db, tokyo(2026, 12, 24)))["members"] == 1
    assert (await give(db, tokyo(2027, 1, 2)))["members"] == 3
    assert await rewarded_years(db) == {
        days[24]: [(2026, dt.date(2026, 12, 24))],
        days[26]: [(2026, dt.date(2026, 12, 26))],
        days[31]: [(2026, dt.date(2026, 12, 31))],
        new_year: [(2027, dt.date(2027, 1, 1))],
    }


# -- once ------------------------------------------------------------------------------------


async def test_once_per_member_per_year_however_often_it_runs(db: Connection) -> None:
    coupon = await template(db)
    ann = await member(db, dt.date(1990, 3, 10))
    gus = await member(db, dt.date(1990, 3, 11))
    assert await give(db, coupon_template_id=coupon) == {"members": 1, "points": 100,
                                                         "coupons": 1}
    before = await read_rows(db)
    assert await give(db, coupon_template_id=coupon) == {"members": 0, "points": 0,
                                                         "coupons": 0}
    assert await read_rows(db) == before
    # The next day, and a week later with ann's birthday still inside the look-back: gus only.
    assert (await give(db, NOW + dt.timedelta(days=1), coupon_template_id=coupon))[
        "members"] == 1
    assert (await give(db, NOW + dt.timedelta(days=7), coupon_template_id=coupon))[
        "members"] == 0
    # The birth date changed after the gift gives no second one that year.
    await db.execute("update members set birth_date = '1990-03-20' where member_id = $1", ann)
    assert (await give(db, tokyo(2026, 3, 20), coupon_template_id=coupon))["members"] == 0
    # Next year, again.
    assert (await give(db, tokyo(2027, 3, 20), coupon_template_id=coupon))["members"] == 1
    assert await rewarded_years(db) == {
        ann: [(2026, dt.date(2026, 3, 10)), (2027, dt.date(2027, 3, 20))],
        gus: [(2026, dt.date(2026, 3, 11))]}
    assert await db.fetchval("select count(*) from member_coupons") == 3
    assert await db.fetchval("select sum(available) from point_balances") == 300
    check_invariants(await read_rows(db))


async def test_with_no_points_and_no_coupon_it_does_nothing(db: Connection) -> None:
    await member(db, dt.date(1990, 3, 10))
    assert await give(db, points=0) == {"members": 0, "points": 0, "coupons": 0}
    assert await rewards(db) == {}


async def test_a_coupon_alone_writes_nothing_to_the_ledger(db: Connection) -> None:
    coupon = await template(db)
    ann = await member(db, dt.date(1990, 3, 10))
    assert await give(db, points=0, coupon_template_id=coupon) == {
        "members": 1, "points": 0, "coupons": 1}
    (row,) = (await rewards(db))[ann]
    assert (row["points"], row["entry_id"]) == (0, None)
    assert row["coupon_id"] is not None
    assert await db.fetchval("select count(*) from point_entries") == 0
    assert await db.fetchval("select version from point_balances where member_id = $1", ann) == 0


async def test_a_deactivated_coupon_template_stops_the_run_before_anything_is_given(
    db: Connection,
) -> None:
    from loyalty.promotions.coupon_templates import update_template

    coupon = await template(db)
    await member(db, dt.date(1990, 3, 10))
    await update_template(db, coupon, CouponTemplateUpdate(active=False))
    with pytest.raises(Conflict):
        await give(db, coupon_template_id=coupon)
    assert await rewards(db) == {}
    assert await db.fetchval("select count(*) from point_entries") == 0


async def test_a_run_that_fails_part_way_is_finished_by_the_next(db: Connection) -> None:
    coupon = await template(db)
    members = sorted([await member(db, dt.date(1990, 3, 10)) for _ in range(6)])
    refused = members[3]
    await refuse_member(db, "birthday_rewards", refused)
    with pytest.raises(asyncpg.RaiseError, match="refused"):
        await give(db, coupon_template_id=coupon, batch_size=2)
    # The first batch committed whole (points, coupons); the failed one left nothing.
    assert sorted(await rewards(db)) == members[:2]
    assert await db.fetchval("select count(*) from member_coupons") == 2
    check_invariants(await read_rows(db))
    await allow_members(db, "birthday_rewards")
    assert await give(db, coupon_template_id=coupon, batch_size=2) == {
        "members": 4, "points": 400, "coupons": 4}
    assert sorted(await rewards(db)) == members
    assert await db.fetchval("select count(*) from point_entries") == 6
    assert await db.fetchval("select count(*) from member_coupons") == 6
    check_invariants(await read_rows(db))


@pytest.mark.parametrize(("options", "message"), [
    ({"points": -1}, "points"),
    ({"batch_size": 0}, "batch_size"),
])
async def test_bad_options_are_refused(db: Connection, options: dict[str, Any],
                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await give(db, **options)


# -- two runs at once, on connections of their own -------------------------------------------


async def test_two_runs_at_once_reward_each_member_once(
    connections: list[Connection],
) -> None:
    setup, first, second = connections
    coupon = await template(setup)
    members = [await member(setup, dt.date(1990, 3, 10 - i % 5)) for i in range(20)]
    await ensure_default_rules(setup)
    results = await asyncio.gather(
        give(first, coupon_template_id=coupon, batch_size=3),
        give(second, coupon_template_id=coupon, batch_size=3))
    assert sum(r["members"] for r in results) == 20
    assert sum(r["points"] for r in results) == 2_000
    assert sum(r["coupons"] for r in results) == 20
    assert sorted(await rewards(setup)) == sorted(members)
    assert await setup.fetchval("select count(*) from member_coupons") == 20
    check_invariants(await read_rows(setup))
