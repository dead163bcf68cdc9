"""The segment builder's estimate on a real PostgreSQL: a sample of the members table's pages,
scaled up, with the range the count probably lies in. The crowd is laid out the same way on
every run (a database of its own, every fourth member dormant by the order they were written),
and the sample's pages are chosen by a fixed seed, so each estimate here is the same on every
run: a range that holds the count 95 times in 100 is checked on one fixed draw, not left to
chance."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.core.db import Connection, init_connection
from loyalty.promotions.segments import (
    CountEstimate,
    _estimate,
    estimate_segment,
    member_rows,
    preview_segment,
)
from schemas.segments import AllOf, Condition, JoinedCondition, StatusCondition

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
CROWD = 6000
ACTIVE = StatusCondition(statuses=["active"])
DORMANT = StatusCondition(statuses=["dormant"])
SUSPENDED = StatusCondition(statuses=["suspended"])


@pytest.fixture
async def crowd(fresh_database: str) -> AsyncIterator[Connection]:
    """CROWD members, every fourth dormant, in a database of the test's own (so that they lie
    on the same pages every run: rows another test rolled back would move them), and the
    table's statistics brought up to date (the estimate sizes its sample by PostgreSQL's count
    of the table's rows)."""
    conn = await asyncpg.connect(fresh_database)
    try:
        await init_connection(conn)
        await conn.execute(
            """
            insert into members (name, name_key, status, joined_at)
            select 'Crowd ' || n, 'crowd' || n,
                   case when n % 4 = 0 then 'dormant' else 'active' end,
                   $2::timestamptz - make_interval(days => n % 400)
              from generate_series(1, $1) as n
            """, CROWD, NOW)
        await conn.execute("analyze members")
        yield conn
    finally:
        await conn.close()


async def estimated(conn: Connection, definition: Condition, *, sample_members: int
                    ) -> CountEstimate:
    """The estimate as the console asks for it, with the table's size PostgreSQL knows."""
    return await estimate_segment(conn, definition, rows=await member_rows(conn),
                                  sample_members=sample_members, now=NOW)


async def exact(conn: Connection, definition: object) -> int:
    preview = await preview_segment(conn, definition, sample_size=0, now=NOW)  # type: ignore[arg-type]
    return preview.count


async def test_an_estimate_reads_a_sample_and_brackets_the_count(crowd: Connection) -> None:
    assert await member_rows(crowd) >= CROWD
    # Join dates run in the order members were written, as they do in a real table: a page
    # holds all recent joiners or none, so that estimate is less sure, and says so.
    for definition, sure in ((ACTIVE, True), (DORMANT, True),
                             (JoinedCondition(within_days=100), False)):
        estimate = await estimated(crowd, definition, sample_members=1500)
        truth = await exact(crowd, definition)
        # A sample: far fewer members read than the table holds, and not none.
        assert 500 < estimate.sampled < 3000, estimate
        assert estimate.low <= truth <= estimate.high, (definition, estimate, truth)
        assert estimate.low <= estimate.count <= estimate.high
        width = (estimate.high - estimate.low) / truth
        if sure:
            assert width < 0.2, (definition, estimate, truth)
        else:
            assert 0.4 < width < 2, (definition, estimate, truth)


async def test_the_same_pages_every_time_so_a_narrower_segment_never_counts_more(
    crowd: Connection,
) -> None:
    wide = await estimated(crowd, ACTIVE, sample_members=1500)
    again = await estimated(crowd, ACTIVE, sample_members=1500)
    assert again == wide
    narrow = await estimated(
        crowd, AllOf(conditions=[ACTIVE, JoinedCondition(within_days=100)]),
        sample_members=1500)
    assert narrow.count < wide.count
    assert narrow.sampled == wide.sampled


async def test_no_member_sampled_matches_then_the_estimate_says_fewer_than(
    crowd: Connection,
) -> None:
    estimate = await estimated(crowd, SUSPENDED, sample_members=1500)
    assert (estimate.count, estimate.low) == (0, 0)
    # The rule of three over the pages not read: more than none could hide there.
    assert 0 < estimate.high < CROWD, estimate
    assert estimate.sampled > 0


async def test_the_members_it_names_are_the_first_it_selects_among_the_sample(
    crowd: Connection,
) -> None:
    """Named from the pages the estimate read, not looked for in the whole table: for a
    condition few members meet, the first ten of the table took seconds to find at 1,000,000
    members (a read of all of it when none matched)."""
    rows = await member_rows(crowd)
    dormant = {r["member_id"] for r in await crowd.fetch(
        "select member_id from members where status = 'dormant'")}
    estimate = await estimate_segment(crowd, DORMANT, rows=rows, sample_members=1500, now=NOW,
                                      examples=10)
    named = [m.member_id for m in estimate.members]
    assert len(named) == 10
    assert named == sorted(named)
    assert set(named) <= dormant
    # Among the sampled: past the first ten dormant members of the whole table.
    assert named != sorted(dormant)[:10]
    numbers = {r["member_id"]: r["member_number"] for r in await crowd.fetch(
        "select member_id, member_number from members where member_id = any($1)", named)}
    assert [m.member_number for m in estimate.members] == [numbers[i] for i in named]
    # The same members every time; none asked for, none named; none selected, none named.
    assert (await estimate_segment(crowd, DORMANT, rows=rows, sample_members=1500, now=NOW,
                                   examples=10)).members == estimate.members
    assert (await estimate_segment(crowd, DORMANT, rows=rows, sample_members=1500,
                                   now=NOW)).members == []
    assert (await estimate_segment(crowd, SUSPENDED, rows=rows, sample_members=1500, now=NOW,
                                   examples=10)).members == []


async def test_a_sample_as_large_as_the_table_is_an_exact_count(crowd: Connection) -> None:
    for definition in (ACTIVE, DORMANT, SUSPENDED):
        estimate = await estimated(crowd, definition, sample_members=1_000_000)
        truth = await exact(crowd, definition)
        assert (estimate.count, estimate.low, estimate.high) == (truth, truth, truth)


async def test_a_table_never_analysed_is_counted_whole(fresh_database: str) -> None:
    """Before the first ANALYZE PostgreSQL does not know the table's size: the estimate reads
    every page rather than guess at a sample of none."""
    conn = await asyncpg.connect(fresh_database)
    try:
        await init_connection(conn)
        await conn.execute(
            """
            insert into members (name, name_key, status)
            select 'Crowd ' || n, 'crowd' || n, case when n % 3 = 0 then 'dormant' else 'active' end
              from generate_series(1, 300) as n
            """)
        assert await member_rows(conn) == 0
        estimate = await estimated(conn, ACTIVE, sample_members=100)
        assert (estimate.count, estimate.low, estimate.high, estimate.sampled) == (
            200, 200, 200, 300)
    finally:
        await conn.close()


# -- the arithmetic ------------------------------------------------------------------------


@given(pages=st.integers(2, 10_000_000), sampled=st.integers(1, 5000),
       per_page=st.floats(0.01, 200), spread=st.floats(0, 400))
def test_the_count_lies_in_its_range_and_never_below_what_was_seen(
    pages: int, sampled: int, per_page: float, spread: float,
) -> None:
    sampled = min(sampled, pages - 1)
    hits = round(per_page * sampled)
    estimate = _estimate(pages=pages, sampled_pages=sampled, seen=hits * 2, hits=hits,
                         variance=spread)
    assert 0 <= estimate.low <= estimate.count <= estimate.high
    assert estimate.low >= hits
    assert estimate.sampled == hits * 2
    if hits:
        # Never claimed closer than about ±1 %, however alike the sampled pages were.
        scaled = pages * hits / sampled
        assert estimate.high - estimate.low >= min(0.0195 * scaled, scaled - hits)


def test_pages_that_all_look_alike_still_leave_a_range() -> None:
    """Every sampled page held 41 matches: their variance is nought, but the pages not read
    may differ (the first and last are half full), so the range stays about ±1 %."""
    estimate = _estimate(pages=99, sampled_pages=22, seen=902, hits=902, variance=0.0)
    assert (estimate.count, estimate.low, estimate.high) == (4060, 4010, 4100)


def test_the_count_is_rounded_to_what_the_sample_can_tell() -> None:
    # 21,000 pages, 420 read, 33.3 matches a page give or take 3: about 700,000, give or take
    # a few thousand; shown to the thousand, never to the member.
    estimate = _estimate(pages=21_000, sampled_pages=420, seen=19_740, hits=13_986,
                         variance=9.0)
    assert estimate.count == 699_000
    assert estimate.count % 1000 == estimate.low % 1000 == estimate.high % 1000 == 0
    assert estimate.low < 699_300 < estimate.high
    assert estimate.high - estimate.low < 20_000
