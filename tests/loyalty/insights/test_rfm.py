"""RFM scores on a real PostgreSQL: a small data set scored by hand, ties, idempotency, members who
stop qualifying, the ``rfm`` segment condition, and ``loyalty rfm refresh``."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from cli import main as cli
from loyalty.core.db import Connection
from loyalty.insights.rfm import refresh_rfm
from loyalty.promotions.segments import compile_definition
from schemas.segments import AllOf, Not, RfmCondition, StatusCondition
from tests.factories import Shop

NOW = dt.datetime(2026, 6, 1, 0, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
async def scores(conn: Connection) -> dict[UUID, tuple[int, int, int, int, int, int]]:
    rows = await conn.fetch(
        """select member_id, recency_days, frequency, monetary, recency_score, frequency_score,
                  monetary_score from member_rfm""")
    return {r["member_id"]: tuple(r.values())[1:] for r in rows}


async def rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch("select * from member_rfm order by member_id")]


async def hand_scored(conn: Connection) -> dict[str, UUID]:
    """Six members qualify as of NOW over 365 days: five bought in the window, eve only
    before it. The worked example of docs/analytics.md.

    member  last purchase  in the window                      R days  F  M
    ann     1 day ago      3,000 + 2,000 + 5,000                   1  3  10,000
    ben     1.5 days ago   10,000 less 4,000 returned              1  1   6,000
    cal     30 days ago    1,000 + 1,000 (31 days ago)            30  2   2,000
    dee     200 days ago   20,000 (and 50,000 400 days ago)      200  1  20,000
    eve     500 days ago   nothing                               500  0       0
    gus     5 days ago     1,000 (60 days ago) + fay's 8,000       5  2   9,000

    The five buyers' thresholds: the values at the 20th, 40th, 60th and 80th percentiles,
    distinct, below the best value; a member above c of d thresholds scores 1 + round(4c/d).
    Recency (days, fewer is better): 200, 30, 5, 1, 1 -> thresholds 200, 30, 5 (1 is the
        best) -> dee 1, cal 2 (c = 1: 1 + round(1.33)), gus 4 (1 + round(2.67)), ann = ben 5
    Frequency: 1, 1, 2, 2, 3 -> percentiles 1, 1, 2, 2 -> thresholds 1, 2 -> ben = dee 1,
        cal = gus 3, ann 5
    Monetary: 2,000, 6,000, 9,000, 10,000, 20,000 -> thresholds 2,000 .. 10,000 -> cal 1,
        ben 2, gus 3, ann 4, dee 5
    eve, no purchase in the window: F 1, M 1, and R 2 (her last purchase is within two
        windows; R 1 beyond).

    Never scored: fay (merged into gus: her purchase is his), hal (erased), ivy (no purchase),
    jon (his only purchase is after NOW), kim (suspended).
    """
    shop = await Shop(conn).open()
    people = {name: await shop.member(name) for name in
              ("ann", "ben", "cal", "dee", "eve", "fay", "gus", "ivy", "jon")}
    people["hal"] = await shop.member("hal", "erased")
    people["kim"] = await shop.member("kim", "suspended")
    await shop.buy(people["ann"], NOW - 1 * DAY, 3_000)
    await shop.buy(people["ann"], NOW - 10 * DAY, 2_000)
    await shop.buy(people["ann"], NOW - 100 * DAY, 5_000)
    await shop.buy(people["ben"], NOW - 1.5 * DAY, 10_000, returned=4_000)
    await shop.buy(people["cal"], NOW - 30 * DAY, 1_000)
    await shop.buy(people["cal"], NOW - 31 * DAY, 1_000)
    await shop.buy(people["dee"], NOW - 200 * DAY, 20_000)
    await shop.buy(people["dee"], NOW - 400 * DAY, 50_000)
    await shop.buy(people["eve"], NOW - 500 * DAY, 7_000)
    await shop.buy(people["gus"], NOW - 60 * DAY, 1_000)
    await shop.buy(people["fay"], NOW - 5 * DAY, 8_000)
    await shop.merge(people["fay"], people["gus"])
    await shop.buy(people["hal"], NOW - 2 * DAY, 4_000)
    await shop.buy(people["jon"], NOW + 1 * DAY, 4_000)
    await shop.buy(people["kim"], NOW - 2 * DAY, 4_000)
    return people


async def test_hand_computed_scores_with_ties_scored_equal(db: Connection) -> None:
    people = await hand_scored(db)
    result = await refresh_rfm(db, now=NOW, window_days=365)
    assert result == {"members": 6, "changed": 6, "removed": 0}
    by_name = {name: score for name, member_id in people.items()
               if (score := (await scores(db)).get(member_id)) is not None}
    assert by_name == {
        #       R days  F  M       R  F  M scores
        "ann": (1, 3, 10_000, 5, 5, 4),
        "ben": (1, 1, 6_000, 5, 1, 2),
        "cal": (30, 2, 2_000, 2, 3, 1),
        "dee": (200, 1, 20_000, 1, 1, 5),
        "eve": (500, 0, 0, 2, 1, 1),
        "gus": (5, 2, 9_000, 4, 3, 3),
    }
    row = await db.fetchrow("select * from member_rfm where member_id = $1", people["gus"])
    assert row is not None
    assert (row["last_purchase_at"], row["window_days"], row["computed_at"]) == (
        NOW - 5 * DAY, 365, NOW)


async def test_refreshing_twice_at_one_moment_changes_nothing(db: Connection) -> None:
    await hand_scored(db)
    await refresh_rfm(db, now=NOW, window_days=365)
    first = await rows(db)
    assert await refresh_rfm(db, now=NOW, window_days=365) == {
        "members": 6, "changed": 0, "removed": 0}
    assert await rows(db) == first


async def test_members_who_stop_qualifying_lose_their_row_and_the_rest_are_rescored(
    db: Connection,
) -> None:
    people = await hand_scored(db)
    await refresh_rfm(db, now=NOW, window_days=365)
    await db.execute("update members set status = 'suspended' where member_id = $1",
                     people["ann"])
    result = await refresh_rfm(db, now=NOW, window_days=365)
    assert (result["members"], result["removed"]) == (5, 1)
    after = await scores(db)
    assert people["ann"] not in after
    # Four buyers left: recency thresholds 200, 30 and 5 days (1, ben's, is the best) score
    # dee 1, cal 2, gus 4, ben 5; eve, who bought before the window only, stays at 2.
    assert [after[people[n]][3] for n in ("eve", "dee", "cal", "gus", "ben")] == [2, 1, 2, 4, 5]


async def test_a_later_refresh_ages_recency_and_moves_the_window(db: Connection) -> None:
    people = await hand_scored(db)
    await refresh_rfm(db, now=NOW, window_days=365)
    later = NOW + 40 * DAY
    await refresh_rfm(db, now=later, window_days=30)
    after = await scores(db)
    # 40 days on, with a 30-day window, no purchase is in the window any more.
    assert after[people["ann"]][:3] == (41, 0, 0)
    assert after[people["gus"]][:3] == (45, 0, 0)
    assert {s[1:3] for s in after.values()} == {(0, 0)}
    assert {s[4:] for s in after.values()} == {(1, 1)}
    # jon's purchase is no longer in the future, so now he has a score too.
    assert after[people["jon"]][:3] == (39, 0, 0)


async def test_equal_measures_always_score_equal_and_better_never_scores_lower(
    db: Connection,
) -> None:
    shop = await Shop(db).open()
    # 203 members whose measures repeat (many ties) in a pattern that does not divide by 5.
    await db.execute(
        """
        with made as (
            insert into members (name, name_key)
            select 'm' || i, 'm' || i from generate_series(1, 203) i returning member_id
        ), balances as (
            insert into point_balances (member_id) select member_id from made
        ), numbered as (
            select member_id, row_number() over (order by member_id) as i from made
        )
        insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                               occurred_at, currency, total, lines, points_earned,
                               points_redeemed, rule_version, recorded_at)
        select n.member_id, uuid_v7(), $1, $2, 'T-' || n.i || '-' || k,
               $3::timestamptz - (n.i % 7) * interval '1 day' - k * interval '1 hour', 'JPY',
               (n.i % 11) * 1000, '[]', 0, 0, 1, $3
          from numbered n cross join generate_series(0, (n.i % 4)) k
        """, shop.store_id, shop.terminal_id, NOW)
    assert (await refresh_rfm(db, now=NOW, window_days=365))["members"] == 203
    measured = list((await scores(db)).values())
    for measure, score in ((0, 3), (1, 4), (2, 5)):
        # Worse first: more days since the last purchase, fewer purchases, less spent.
        def worth(s: tuple[int, ...], measure: int = measure) -> int:
            return -s[measure] if measure == 0 else s[measure]

        values = sorted(worth(s) for s in measured)
        cuts = sorted({t for t in _percentiles(values) if t < values[-1]}) \
            or ([values[0]] if values[0] < values[-1] else [])
        for s in measured:
            above = sum(1 for t in cuts if t < worth(s))
            expected = 1 + (8 * above + len(cuts)) // (2 * len(cuts)) if cuts else 1
            assert s[score] == expected, (measure, s)
        ordered = [s[score] for s in sorted(measured, key=worth)]
        assert ordered == sorted(ordered)
        assert (ordered[0], ordered[-1]) == (1, 5)
        # Each threshold separates two groups that score differently: as many scores as
        # groups, however many members share a value.
        assert len(set(ordered)) == len(cuts) + 1, (measure, cuts, sorted(set(ordered)))


def _percentiles(values: list[int]) -> list[int]:
    """percentile_disc at 0.2 .. 0.8 of sorted ``values``: the first value at or past each."""
    return [values[max(0, math.ceil(p * len(values)) - 1)] for p in (0.2, 0.4, 0.6, 0.8)]


async def test_the_rfm_condition_selects_members_by_their_stored_scores(db: Connection) -> None:
    people = await hand_scored(db)
    await refresh_rfm(db, now=NOW, window_days=365)
    names = {member_id: name for name, member_id in people.items()}

    async def selected(definition: Any) -> set[str]:
        member_filter = compile_definition(definition, now=NOW)
        found = await db.fetch(
            f"select m.member_id from members m where {member_filter.render(1)}",  # noqa: S608 - a MemberFilter rendered with $n slots
            *member_filter.params)
        return {names[r["member_id"]] for r in found}

    assert await selected(RfmCondition(recency=[5], frequency=[1])) == {"ben"}
    assert await selected(RfmCondition(monetary=[5])) == {"dee"}
    assert await selected(RfmCondition(recency=[1, 2], monetary=[1, 5])) == {"cal", "dee", "eve"}
    assert await selected(RfmCondition(frequency=[3])) == {"cal", "gus"}
    assert await selected(RfmCondition(frequency=[2])) == set()
    assert await selected(RfmCondition()) == {"ann", "ben", "cal", "dee", "eve", "gus"}
    # Members never scored are outside every rfm condition, and inside its negation.
    assert await selected(Not(condition=RfmCondition())) == {"ivy", "jon", "kim"}
    assert await selected(AllOf(conditions=[
        Not(condition=RfmCondition(recency=[5])), StatusCondition(statuses=["active"]),
    ])) == {"cal", "dee", "eve", "gus", "ivy", "jon"}


# -- the command -----------------------------------------------------------------------------


def _on(dsn: str, work: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_rfm_refresh_command_scores_as_of_the_moment_given(
    cli_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def seed(conn: Connection) -> dict[str, UUID]:
        from loyalty.core.db import init_connection

        await init_connection(conn)
        return await hand_scored(conn)

    people = _on(cli_env, seed)
    cli.main(["rfm", "refresh", "--now", NOW.isoformat(), "--window-days", "365"])
    assert capsys.readouterr().out.strip() == (
        "6 members scored over 365 days, 6 rows changed, 0 removed")
    cli.main(["rfm", "refresh", "--now", NOW.isoformat(), "--window-days", "365"])
    assert "0 rows changed" in capsys.readouterr().out
    # The window comes from LOYALTY_RFM_WINDOW_DAYS unless given.
    monkeypatch.setenv("LOYALTY_RFM_WINDOW_DAYS", "7")
    cli.main(["rfm", "refresh", "--now", NOW.isoformat()])
    assert "scored over 7 days" in capsys.readouterr().out
    ann = _on(cli_env, lambda conn: conn.fetchrow(
        "select frequency, monetary, window_days from member_rfm where member_id = $1",
        people["ann"]))
    assert tuple(ann) == (1, 3_000, 7)


@pytest.mark.parametrize(("argv", "message"), [
    (["--now", "2026-06-01T00:00:00"], "time zone offset"),
    (["--window-days", "0"], "between 1 and 3650"),
])
def test_rfm_refresh_command_refuses_bad_arguments(cli_env: str, argv: list[str],
                                                   message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        cli.main(["rfm", "refresh", *argv])
