"""Analytics on a real PostgreSQL: every KPI on a small data set computed by hand (the numbers
are written out below, with their working), the daily snapshots (idempotent, and agreeing with
the live figures), empty periods (nulls, not errors), the RFM grid and distribution, and join
cohorts.

All times are Tokyo business time (UTC+9), the programme's default."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
import pytest

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.insights.cohorts import cohorts
from loyalty.insights.kpis import check_period, daily_sales, kpis, snapshot_kpis
from loyalty.insights.rfm import RFM_GRID, RFM_SEGMENTS, rfm_distribution, rfm_segment
from loyalty.points.rules import ensure_default_rules
from schemas.analytics import Kpis
from tests.factories import insert_member

TZ = ZoneInfo("Asia/Tokyo")
MARGIN = 0.4
POINT_VALUE = 0.25
_receipts = itertools.count()
_stores = itertools.count()


def at(day: str, time: str = "12:00") -> dt.datetime:
    """A moment of Tokyo business time."""
    return dt.datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=TZ)


def d(day: str) -> dt.date:
    return dt.date.fromisoformat(day)


# Well after everything in the data set: every day asked about is in the past.
NOW = at("2025-12-31")


class Books:
    """Rows written directly, as a factory would: members with their join date and status
    history, purchases and returns at one till, ledger entries with balances kept equal to
    their sum."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.store_id: UUID | None = None
        self.terminal_id: UUID | None = None

    async def open(self) -> Books:
        await ensure_default_rules(self.conn)
        n = next(_stores)
        self.store_id = await self.conn.fetchval(
            "insert into stores (code, name) values ($1, 'KPI') returning store_id", f"KPI-{n}")
        self.terminal_id = await self.conn.fetchval(
            """
            insert into terminals (store_id, name, key_prefix, key_hash)
            values ($1, 'till', $2, $3) returning terminal_id
            """, self.store_id, f"kpi-test-{n}", n.to_bytes(8, "big"))
        return self

    async def member(self, name: str, joined: dt.datetime, status: str = "active",
                     merged_into: UUID | None = None) -> UUID:
        """A member as they are now; their history is written with ``change``."""
        return await insert_member(self.conn, name, status=status, joined_at=joined,
                                   merged_into=merged_into)

    async def change(self, member_id: UUID, when: dt.datetime, from_status: str,
                     to_status: str) -> None:
        await self.conn.execute(
            """
            insert into member_status_changes (member_id, changed_at, from_status, to_status,
                                               reason)
            values ($1, $2, $3, $4, 'test')
            """, member_id, when, from_status, to_status)

    async def buy(self, member_id: UUID, when: dt.datetime, total: int) -> UUID:
        purchase_id: UUID = await self.conn.fetchval(
            """
            insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                                   occurred_at, currency, total, lines, points_earned,
                                   points_redeemed, rule_version, recorded_at)
            values ($1, uuid_v7(), $2, $3, $4, $5, 'JPY', $6, '[]', 0, 0, 1, $5)
            returning purchase_id
            """, member_id, self.store_id, self.terminal_id, f"K-{next(_receipts)}", when,
            total)
        return purchase_id

    async def give_back(self, member_id: UUID, purchase_id: UUID, when: dt.datetime,
                        amount: int) -> None:
        await self.conn.execute(
            """
            with r as (
                insert into purchase_returns (member_id, return_id, purchase_id, terminal_id,
                                              amount, lines, points_reversed, points_restored,
                                              points_shortfall, points_not_restored,
                                              recorded_at)
                values ($1, uuid_v7(), $2, $3, $4, '[]', 0, 0, 0, 0, $5)
            )
            update purchases set returned_amount = returned_amount + $4
             where member_id = $1 and purchase_id = $2
            """, member_id, purchase_id, self.terminal_id, amount, when)

    async def entry(self, member_id: UUID, when: dt.datetime, kind: str, amount: int,
                    source: str = "system") -> None:
        await self.conn.execute(
            """
            insert into point_entries (member_id, entry_id, kind, amount, reason, source,
                                       created_at)
            values ($1, uuid_v7(), $2, $3, 'test', $4, $5)
            """, member_id, kind, amount, source, when)
        # Balances hold the sum of each member's entries, as the ledger keeps them.
        await self.conn.execute(
            """
            update point_balances
               set available = (select sum(amount) from point_entries where member_id = $1)
             where member_id = $1
            """, member_id)


async def hand_computed(conn: Connection) -> dict[str, UUID]:
    """The data set. P, the period, is 2025-01-01 to 2025-03-14: 73 days (31 + 28 + 14), so a
    year is exactly 5 periods. P starts at S = 01-01 00:00 and ends at E = 03-15 00:00.

    member  joined      history (status changes)                     now
    ann     2024-06-01  -                                            active
    ben     2024-07-01  02-01 active -> dormant                      dormant
    cal     2024-08-01  2024-12-01 active -> dormant, 02-15 back     active
    dee     2024-09-01  01-20 active -> dormant, 03-01 back          active
    eve     2025-01-05  -                                            active
    fay     2025-02-01  03-01 active -> suspended                    suspended
    gus     2024-05-01  03-14 23:00 -> dormant, 03-15 00:30 back     active
    hal     2024-04-01  02-10 active -> erased                       erased
    ivy     2025-03-15  (joined 01:00, after E)                      active
    jon     2024-10-01  01-25 merged into ann                        merged
    kim     2024-03-01  none: imported as dormant                    dormant
    lea     2024-02-01  04-01 dormant -> active (after P)            active

    Status at E: ann a, ben d, cal a, dee a, eve a, fay suspended, gus d (his change at 23:00
    on the last day is before E), hal erased, jon merged, kim d (no history: as now), lea d
    (no change before E: what her first change left). Ivy had not joined.
      total = active + dormant + suspended = 4 + 4 + 1 = 9; active 4; dormant 4.
    Status at S (joined by then; not eve, fay, ivy): ann a, ben a, cal d, dee a, gus a, hal a,
    jon a, kim d, lea d. Active at S: ann, ben, dee, gus, hal, jon; jon is merged by E, so the
    churn base is 5. Dormant at E among them: ben, gus -> churned 2; churn = 2 / 5 = 0.4.
      new = eve, fay = 2 (ivy after E). reactivated = cal 02-15, dee 03-01 = 2 (gus's return
      is after E).

    Purchases (total, and returns recorded):
    ann  01-10 10,000; 02-10 5,000; 03-10 3,000 (500 of it returned 03-13)
    jon  01-20 6,000 (counts for ann, whom jon was merged into)
    cal  02-15 8,000 (2,000 returned 02-20)
    dee  03-01 4,000 (1,000 returned 03-20, after E)
    eve  01-05 2,000; 01-06 2,000
    gus  2024-12-31 23:30 9,000 (before S; 1,000 returned 01-03, in P); 03-15 00:30 7,000
         (after E)
      orders = 4 (ann, with jon's) + 1 + 1 + 2 = 8; sales = 10,000 + 5,000 + 3,000 + 6,000 +
      8,000 + 4,000 + 2,000 + 2,000 = 40,000; returns recorded in P = 500 + 2,000 + 1,000 =
      3,500; revenue = 36,500; average order value = 36,500 / 8 = 4,562.5.
      purchasers = ann, cal, dee, eve = 4; with two or more: ann (4), eve (2) -> repeat rate
      2 / 4 = 0.5; frequency = 8 / 4 = 2 a period, 2 x 5 = 10 a year.
      LTV: annual churn = 1 - (1 - 0.4)^(365/73) = 1 - 0.6^5 = 1 - 0.07776 = 0.92224, lifetime
      = 1 / 0.92224 years; LTV = 4,562.5 x 0.4 (margin) x 10 x (1 / 0.92224) = 18,250 /
      0.92224 = 19,788.77...

    Points entries (before S: ben +25 on 2024-12-01, gus +90 on 2024-12-31 23:30: 115 owed at S)
    eve  01-05 earn +20; 01-06 earn +20, redeem -30
    ann  01-10 earn +100; 02-01 adjust +15; 02-10 earn +50; 03-10 earn +30; 03-12 redeem -70;
         03-13 reverse +20 (redeemed points given back on the return); 03-20 earn +500 (after)
    jon  01-20 earn +60; 01-25 transfer -60, and ann transfer +60 (the merge)
    ben  02-02 adjust -5
    gus  02-01 expire -90
    cal  02-15 earn +80; 02-20 reverse -20 (earned points taken back on the return)
    dee  03-01 earn +40, redeem -40
      issued = earns 20 + 20 + 100 + 50 + 30 + 60 + 80 + 40 = 400, + adjustments 15 - 5,
        + the reversal of earned points -20 = 390;
      redeemed = 30 + 70 + 40 = 140, less the 20 given back = 120; expired = 90;
      transfers are neither. Outstanding at E = 115 + 390 - 120 - 90 = 295, worth 295 x 0.25
      = 73.75 -> 74; breakage = 90 / (90 + 120) = 3 / 7.
    """
    books = await Books(conn).open()
    m: dict[str, UUID] = {}
    m["ann"] = await books.member("ann", at("2024-06-01"))
    m["ben"] = await books.member("ben", at("2024-07-01"), "dormant")
    m["cal"] = await books.member("cal", at("2024-08-01"))
    m["dee"] = await books.member("dee", at("2024-09-01"))
    m["eve"] = await books.member("eve", at("2025-01-05", "09:00"))
    m["fay"] = await books.member("fay", at("2025-02-01"), "suspended")
    m["gus"] = await books.member("gus", at("2024-05-01"))
    m["hal"] = await books.member("hal", at("2024-04-01"), "erased")
    m["ivy"] = await books.member("ivy", at("2025-03-15", "01:00"))
    m["jon"] = await books.member("jon", at("2024-10-01"), "merged", merged_into=m["ann"])
    m["kim"] = await books.member("kim", at("2024-03-01"), "dormant")
    m["lea"] = await books.member("lea", at("2024-02-01"))

    await books.change(m["ben"], at("2025-02-01"), "active", "dormant")
    await books.change(m["cal"], at("2024-12-01"), "active", "dormant")
    await books.change(m["cal"], at("2025-02-15"), "dormant", "active")
    await books.change(m["dee"], at("2025-01-20"), "active", "dormant")
    await books.change(m["dee"], at("2025-03-01", "10:00"), "dormant", "active")
    await books.change(m["fay"], at("2025-03-01", "15:00"), "active", "suspended")
    await books.change(m["gus"], at("2025-03-14", "23:00"), "active", "dormant")
    await books.change(m["gus"], at("2025-03-15", "00:30"), "dormant", "active")
    await books.change(m["hal"], at("2025-02-10"), "active", "erased")
    await books.change(m["jon"], at("2025-01-25"), "active", "merged")
    await books.change(m["lea"], at("2025-04-01"), "dormant", "active")

    await books.buy(m["ann"], at("2025-01-10"), 10_000)
    await books.buy(m["ann"], at("2025-02-10"), 5_000)
    ann_march = await books.buy(m["ann"], at("2025-03-10"), 3_000)
    await books.give_back(m["ann"], ann_march, at("2025-03-13"), 500)
    await books.buy(m["jon"], at("2025-01-20"), 6_000)
    cal_back = await books.buy(m["cal"], at("2025-02-15"), 8_000)
    await books.give_back(m["cal"], cal_back, at("2025-02-20"), 2_000)
    dee_back = await books.buy(m["dee"], at("2025-03-01", "10:00"), 4_000)
    await books.give_back(m["dee"], dee_back, at("2025-03-20"), 1_000)
    await books.buy(m["eve"], at("2025-01-05"), 2_000)
    await books.buy(m["eve"], at("2025-01-06"), 2_000)
    gus_december = await books.buy(m["gus"], at("2024-12-31", "23:30"), 9_000)
    await books.give_back(m["gus"], gus_december, at("2025-01-03"), 1_000)
    await books.buy(m["gus"], at("2025-03-15", "00:30"), 7_000)

    for name, day, kind, amount, source in [
        ("ben", "2024-12-01", "earn", 25, "action"),
        ("gus", "2024-12-31T23:30", "earn", 90, "purchase"),
        ("eve", "2025-01-05", "earn", 20, "purchase"),
        ("eve", "2025-01-06", "earn", 20, "purchase"),
        ("eve", "2025-01-06", "redeem", -30, "purchase"),
        ("ann", "2025-01-10", "earn", 100, "purchase"),
        ("jon", "2025-01-20", "earn", 60, "purchase"),
        ("jon", "2025-01-25", "transfer", -60, "merge"),
        ("ann", "2025-01-25", "transfer", 60, "merge"),
        ("ann", "2025-02-01", "adjust", 15, "staff"),
        ("ben", "2025-02-02", "adjust", -5, "staff"),
        ("gus", "2025-02-01", "expire", -90, "system"),
        ("ann", "2025-02-10", "earn", 50, "purchase"),
        ("cal", "2025-02-15", "earn", 80, "purchase"),
        ("cal", "2025-02-20", "reverse", -20, "return"),
        ("dee", "2025-03-01", "earn", 40, "purchase"),
        ("dee", "2025-03-01", "redeem", -40, "purchase"),
        ("ann", "2025-03-10", "earn", 30, "purchase"),
        ("ann", "2025-03-12", "redeem", -70, "purchase"),
        ("ann", "2025-03-13", "reverse", 20, "return"),
        ("ann", "2025-03-20", "earn", 500, "purchase"),
    ]:
        day, _, time = day.partition("T")
        await books.entry(m[name], at(day, time or "12:00"), kind, amount, source)
    return m


async def period(conn: Connection, first: str, last: str, now: dt.datetime = NOW) -> Kpis:
    return await kpis(conn, first=d(first), last=d(last), tz=TZ, now=now, margin=MARGIN,
                      point_value=POINT_VALUE)


def figures(result: Kpis) -> dict[str, Any]:
    """Everything but where the figures were read from."""
    data = msgspec.to_builtins(result)
    for key in ("snapshot_days", "live_days", "as_of"):
        data.pop(key)
    return dict(data)


# -- KPIs ------------------------------------------------------------------------------------


async def test_every_kpi_of_the_hand_computed_period(db: Connection) -> None:
    await hand_computed(db)
    result = await period(db, "2025-01-01", "2025-03-14")
    assert (result.days, result.snapshot_days, result.live_days) == (73, 0, 73)
    # Worked out in hand_computed's docstring.
    assert msgspec.to_builtins(result.members) == {
        "total": 9, "new": 2, "active": 4, "dormant": 4, "reactivated": 2,
        "active_at_start": 5, "churned": 2, "churn_rate": 0.4,
    }
    assert msgspec.to_builtins(result.purchases) == {
        "orders": 8, "purchasers": 4, "repeat_purchasers": 2, "repeat_rate": 0.5,
        "sales": 40_000, "returns": 3_500, "revenue": 36_500, "average_order_value": 4_562.5,
        "purchase_frequency": 2.0,
    }
    annual_churn = 1 - 0.6 ** 5  # 0.92224
    assert result.ltv.margin == MARGIN
    assert result.ltv.purchases_per_year == pytest.approx(10.0)
    assert result.ltv.annual_churn_rate == pytest.approx(0.92224)
    assert result.ltv.expected_lifetime_years == pytest.approx(1 / annual_churn)
    assert result.ltv.value == pytest.approx(4_562.5 * 0.4 * 10 / 0.92224)
    assert result.ltv.value == pytest.approx(19_788.77, abs=0.01)
    points = result.points
    assert (points.issued, points.redeemed, points.expired) == (390, 120, 90)
    assert (points.outstanding, points.liability_value) == (295, 74)
    assert points.breakage_rate == pytest.approx(3 / 7)


async def test_daily_sales_add_up_to_the_periods_orders_and_sales(db: Connection) -> None:
    await hand_computed(db)
    days = await daily_sales(db, first=d("2025-01-01"), last=d("2025-03-14"), tz=TZ, now=NOW)
    # Every day of the period, in order, quiet days as zeros.
    assert [day for day, _, _ in days] == [
        d("2025-01-01") + dt.timedelta(days=n) for n in range(73)]
    result = await period(db, "2025-01-01", "2025-03-14")
    assert sum(orders for _, orders, _ in days) == result.purchases.orders
    assert sum(sales for _, _, sales in days) == result.purchases.sales
    assert sum(1 for _, orders, _ in days if orders) > 1
    with pytest.raises(InvalidInput):
        await daily_sales(db, first=d("2025-03-14"), last=d("2025-01-01"), tz=TZ, now=NOW)


async def test_outstanding_points_move_by_issued_less_redeemed_less_expired(
    db: Connection,
) -> None:
    await hand_computed(db)
    # Owed at the end of 2024-12-31: ben's 25 and gus's 90 (earned at 23:30 that day).
    before = await period(db, "2024-12-31", "2024-12-31")
    assert before.points.outstanding == 115
    during = await period(db, "2025-01-01", "2025-03-14")
    assert during.points.outstanding == before.points.outstanding + during.points.issued \
        - during.points.redeemed - during.points.expired == 295


async def test_no_churn_in_a_period_leaves_the_lifetime_and_ltv_null(db: Connection) -> None:
    await hand_computed(db)
    # 03-01 to 03-10 (10 days). Active at 03-01 00:00: ann, cal (back 02-15), eve, fay (her
    # suspension is at 15:00 that day), gus = 5; none is dormant at 03-11 00:00 (gus goes on
    # 03-14), so churn is 0: no finite lifetime. Purchases: dee 03-01 4,000 (her return of the
    # 03-20 is later), ann 03-10 3,000 -> 2 orders, 2 purchasers, none twice: repeat rate 0,
    # average 3,500, frequency 1, a year 1 x 365 / 10 = 36.5. Reactivated: dee. Points: dee
    # redeem -40 and earn +40, ann earn +30 -> issued 70, redeemed 40, expired 0, breakage 0.
    # Outstanding at 03-11 00:00: 295 at E, less ann's redeem -70 and reverse +20 in between,
    # = 345, worth 86.25 -> 86.
    result = await period(db, "2025-03-01", "2025-03-10")
    assert msgspec.to_builtins(result.members) == {
        "total": 9, "new": 0, "active": 5, "dormant": 3, "reactivated": 1,
        "active_at_start": 5, "churned": 0, "churn_rate": 0.0,
    }
    assert msgspec.to_builtins(result.purchases) == {
        "orders": 2, "purchasers": 2, "repeat_purchasers": 0, "repeat_rate": 0.0,
        "sales": 7_000, "returns": 0, "revenue": 7_000, "average_order_value": 3_500.0,
        "purchase_frequency": 1.0,
    }
    assert msgspec.to_builtins(result.ltv) == {
        "value": None, "margin": MARGIN, "purchases_per_year": 36.5, "annual_churn_rate": 0.0,
        "expected_lifetime_years": None,
    }
    assert msgspec.to_builtins(result.points) == {
        "issued": 70, "redeemed": 40, "expired": 0, "outstanding": 345,
        "liability_value": 86, "breakage_rate": 0.0,
    }


async def test_a_period_with_nothing_in_it_has_nulls_not_errors(db: Connection) -> None:
    # Nothing at all: every count 0, every ratio null.
    empty = await period(db, "2024-01-01", "2024-01-31")
    # With the data set too: the first member (lea) joined on 2024-02-01.
    await hand_computed(db)
    before_anyone = await period(db, "2024-01-01", "2024-01-31")
    for result in (empty, before_anyone):
        assert msgspec.to_builtins(result.members) == {
            "total": 0, "new": 0, "active": 0, "dormant": 0, "reactivated": 0,
            "active_at_start": 0, "churned": 0, "churn_rate": None,
        }
        assert msgspec.to_builtins(result.purchases) == {
            "orders": 0, "purchasers": 0, "repeat_purchasers": 0, "repeat_rate": None,
            "sales": 0, "returns": 0, "revenue": 0, "average_order_value": None,
            "purchase_frequency": None,
        }
        assert msgspec.to_builtins(result.ltv) == {
            "value": None, "margin": MARGIN, "purchases_per_year": None,
            "annual_churn_rate": None, "expected_lifetime_years": None,
        }
        assert msgspec.to_builtins(result.points) == {
            "issued": 0, "redeemed": 0, "expired": 0, "outstanding": 0, "liability_value": 0,
            "breakage_rate": None,
        }


async def test_a_period_ending_today_is_counted_up_to_now(db: Connection) -> None:
    books = await Books(db).open()
    amy = await books.member("amy", at("2025-05-01", "08:00"))
    await books.buy(amy, at("2025-05-01", "09:00"), 1_000)
    # Recorded by a clock ahead of the one asked: not there yet at 10:00.
    await books.buy(amy, at("2025-05-01", "11:00"), 5_000)
    result = await period(db, "2025-05-01", "2025-05-01", now=at("2025-05-01", "10:00"))
    assert (result.live_days, result.members.new, result.members.active) == (1, 1, 1)
    assert (result.purchases.orders, result.purchases.sales) == (1, 1_000)


@pytest.mark.parametrize(("first", "last", "message"), [
    ("2025-02-01", "2025-01-31", "from must be on or before to"),
    ("2025-12-01", "2026-01-01", r"to must not be after today \(2025-12-31\)"),
    ("2022-12-31", "2025-12-31", "at most 1096 days"),
    ("0001-01-01", "0001-01-01", "from must not be before 1900-01-01"),
])
def test_a_period_out_of_bounds_is_refused(first: str, last: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_period(d(first), d(last), today=d("2025-12-31"))
    # Three years with a leap day is the longest.
    assert check_period(d("2023-01-01"), d("2025-12-31"), today=d("2025-12-31")) == 1096


# -- daily snapshots -------------------------------------------------------------------------


async def snapshot(conn: Connection, day: str) -> dict[str, int]:
    return await snapshot_kpis(conn, day=d(day), tz=TZ, point_value=POINT_VALUE)


async def stored(conn: Connection, day: str) -> dict[str, Any]:
    rows = await conn.fetch("select ctid, * from kpi_daily where day = $1", d(day))
    assert len(rows) == 1
    return dict(rows[0])


async def test_snapshot_of_a_hand_computed_day(db: Connection) -> None:
    await hand_computed(db)
    # 2025-01-06. At its end (01-07 00:00) ten members had joined (not fay, ivy): active ann,
    # ben, dee, eve, gus, hal, jon (the changes of ben, dee, gus, hal and jon are later) = 7;
    # dormant cal (since 2024-12-01), kim, lea = 3. That day: eve's second purchase (2,000),
    # her earn +20 and redeem -30; nobody joined (eve joined on the 5th). Owed at its end: 115
    # + eve's 20 + 20 - 30 = 125, worth 31.25 -> 31.
    assert await snapshot(db, "2025-01-06") == {
        "members_total": 10, "members_active": 7, "members_dormant": 3, "members_new": 0,
        "reactivations": 0, "orders": 1, "purchasers": 1, "sales": 2_000, "returns": 0,
        "points_issued": 20, "points_redeemed": 30, "points_expired": 0,
        "points_outstanding": 125, "liability_value": 31, "changed": 1,
    }
    row = await stored(db, "2025-01-06")
    assert (row["orders"], row["points_outstanding"]) == (1, 125)


async def test_snapshotting_a_day_twice_changes_nothing_more(db: Connection) -> None:
    people = await hand_computed(db)
    first = await snapshot(db, "2025-01-06")
    row = await stored(db, "2025-01-06")
    again = await snapshot(db, "2025-01-06")
    assert again == {**first, "changed": 0}
    # The same row version: not even rewritten with the same values.
    assert await stored(db, "2025-01-06") == row
    # A purchase recorded late for that day: the next run brings the row up to date, in place.
    books = await Books(db).open()
    await books.buy(people["eve"], at("2025-01-06", "20:00"), 1_000)
    late = await snapshot(db, "2025-01-06")
    assert (late["changed"], late["orders"], late["sales"], late["purchasers"]) == (
        1, 2, 3_000, 1)
    assert await db.fetchval("select count(*) from kpi_daily") == 1


async def test_snapshots_and_live_figures_agree(db: Connection) -> None:
    await hand_computed(db)
    live = await period(db, "2025-01-01", "2025-03-14")
    days = [d("2025-01-01") + dt.timedelta(days=n) for n in range(73)]
    for day in days:
        await snapshot_kpis(db, day=day, tz=TZ, point_value=POINT_VALUE)
    from_snapshots = await period(db, "2025-01-01", "2025-03-14")
    assert (from_snapshots.snapshot_days, from_snapshots.live_days) == (73, 0)
    assert figures(from_snapshots) == figures(live)
    # And day by day, for a day with a little of everything (02-15: cal back, buys, earns).
    for text in ("2025-01-06", "2025-02-15", "2025-03-14"):
        read = await period(db, text, text)
        assert read.snapshot_days == 1
        await db.execute("delete from kpi_daily where day = $1", d(text))
        computed = await period(db, text, text)
        assert computed.live_days == 1
        assert figures(read) == figures(computed)


async def test_past_days_are_read_from_their_snapshot_and_missing_ones_computed(
    db: Connection,
) -> None:
    people = await hand_computed(db)
    await snapshot(db, "2025-01-05")
    await snapshot(db, "2025-01-06")
    # A purchase recorded after the 6th was snapshotted is not in the figures of the 6th (the
    # snapshot is the record of that day) until the job runs for the day again; the 7th has no
    # snapshot and is computed live: eve's 2,000 on the 5th, 2,000 on the 6th, and 700 on the
    # 7th.
    books = await Books(db).open()
    await books.buy(people["eve"], at("2025-01-06", "20:00"), 1_000)
    await books.buy(people["eve"], at("2025-01-07"), 700)
    result = await period(db, "2025-01-05", "2025-01-07")
    assert (result.snapshot_days, result.live_days) == (2, 1)
    assert (result.purchases.orders, result.purchases.sales) == (3, 4_700)
    # Purchasers are never summed from days: eve, counted once, with 4 orders (the late one
    # included, since distinct purchasers are always computed from history).
    assert (result.purchases.purchasers, result.purchases.repeat_purchasers) == (1, 1)
    assert result.members.new == 1


async def test_a_snapshot_taken_before_its_day_ended_is_not_used(db: Connection) -> None:
    await hand_computed(db)
    columns = ", ".join(
        ["members_total", "members_active", "members_dormant", "members_new", "reactivations",
         "orders", "purchasers", "sales", "returns", "points_issued", "points_redeemed",
         "points_expired", "points_outstanding", "liability_value"])
    await db.execute(
        f"insert into kpi_daily (day, computed_at, {columns})"  # noqa: S608 - column names from the test's own constant list
        " values ($1, $2, 1, 1, 0, 0, 0, 999, 1, 999, 0, 0, 0, 0, 0, 0)",
        d("2025-01-06"), at("2025-01-06", "18:00"))
    result = await period(db, "2025-01-06", "2025-01-06")
    assert (result.snapshot_days, result.live_days) == (0, 1)
    assert (result.purchases.orders, result.members.total) == (1, 10)


# -- RFM -------------------------------------------------------------------------------------

# The usual grid, written the other way round: each segment as the rectangle of (R, F) scores
# that marketing literature gives it.
TEXTBOOK_SEGMENTS = {
    "champions": ((5,), (4, 5)),
    "loyal": ((3, 4), (4, 5)),
    "potential_loyalists": ((4, 5), (2, 3)),
    "new": ((5,), (1,)),
    "promising": ((4,), (1,)),
    "need_attention": ((3,), (3,)),
    "about_to_sleep": ((3,), (1, 2)),
    "at_risk": ((1, 2), (3, 4)),
    "cannot_lose_them": ((1, 2), (5,)),
    "hibernating": ((2,), (1, 2)),
    "lost": ((1,), (1, 2)),
}


def test_the_rfm_grid_names_each_of_the_25_cells_exactly_once() -> None:
    cells = [(r, f) for name, (rs, fs) in TEXTBOOK_SEGMENTS.items() for r in rs for f in fs]
    # The rectangles do not overlap and leave no gap: 25 cells, each once.
    assert len(cells) == len(set(cells)) == 25
    assert set(cells) == {(r, f) for r in range(1, 6) for f in range(1, 6)}
    assert set(RFM_GRID) == set(cells)
    for name, (rs, fs) in TEXTBOOK_SEGMENTS.items():
        for r in rs:
            for f in fs:
                assert rfm_segment(r, f) == RFM_GRID[(r, f)] == name, (r, f)
    assert set(RFM_SEGMENTS) == set(TEXTBOOK_SEGMENTS)
    with pytest.raises(ValueError, match="1 to 5"):
        rfm_segment(0, 3)


async def test_rfm_distribution_counts_cells_and_named_segments(db: Connection) -> None:
    empty = await rfm_distribution(db)
    assert (empty.members, empty.computed_at, empty.window_days, empty.cells) == (
        0, None, None, [])
    assert [(s.name, s.members, s.share) for s in empty.segments] == [
        (name, 0, None) for name in RFM_SEGMENTS]

    books = await Books(db).open()
    computed_at = at("2025-06-01")
    # Five scored members: two champions (5,5,5) and (5,4,5), two lost in one cell (1,1,2),
    # one needing attention (3,3,1).
    for name, scores in [("a", (5, 5, 5)), ("b", (5, 4, 5)), ("c", (1, 1, 2)),
                         ("d", (1, 1, 2)), ("e", (3, 3, 1))]:
        member_id = await books.member(name, at("2024-01-01"))
        await db.execute(
            """
            insert into member_rfm (member_id, last_purchase_at, recency_days, frequency,
                                    monetary, recency_score, frequency_score, monetary_score,
                                    window_days, computed_at)
            values ($1, $2, 1, 1, 1, $3, $4, $5, 365, $2)
            """, member_id, computed_at, *scores)
    result = await rfm_distribution(db)
    assert (result.members, result.computed_at, result.window_days) == (5, computed_at, 365)
    assert [(c.recency_score, c.frequency_score, c.monetary_score, c.members)
            for c in result.cells] == [(1, 1, 2, 2), (3, 3, 1, 1), (5, 4, 5, 1), (5, 5, 5, 1)]
    by_name = {s.name: (s.members, s.share) for s in result.segments}
    assert by_name == {name: (0, 0.0) for name in RFM_SEGMENTS} | {
        "champions": (2, 0.4), "lost": (2, 0.4), "need_attention": (1, 0.2)}
    assert [s.name for s in result.segments] == list(RFM_SEGMENTS)
    champions = next(s for s in result.segments if s.name == "champions")
    assert champions.cells == [(5, 4), (5, 5)]


# -- cohorts ---------------------------------------------------------------------------------


async def test_join_cohorts_share_active_by_month_since_joining(db: Connection) -> None:
    """Now is 2025-04-10 12:00, so the current month is April, counted as of now.

    2025-01 cohort (5; a5 merged away is left out, a0 joined on 2024-12-31 23:00 is December's):
      a1  joined 01-03, never changed                       active Jan Feb Mar Apr
      a2  joined 01-10, dormant 02-20, back 03-05           active Jan  -  Mar Apr
      a3  joined 01-15, dormant at 02-01 00:00 exactly      active Jan (the change is not before
                                                            the end of January)
      a4  joined 01-20, erased 01-25                        never active at a month's end
      a6  joined 01-28, imported dormant, no history        never active
      -> month 0: 3 / 5 = 0.6; 1: a1 = 1 / 5; 2: a1, a2 = 2 / 5; 3 (April): 2 / 5.
    2025-02 cohort (3):
      b0  joined 02-01 00:30 (01-31 in UTC: cohorts are by business time)  active throughout
      b1  joined 02-10, dormant 03-31 23:59                 active Feb
      b2  joined 02-14, first change 04-20 dormant -> active, later than now: dormant until then
      -> month 0: 2 / 3; 1: 1 / 3; 2 (April): 1 / 3.
    2025-03 cohort: nobody (c1 joined in April, outside the months asked) -> shares null.
    """
    books = await Books(db).open()
    now = at("2025-04-10")
    joined = {"a0": at("2024-12-31", "23:00"), "a1": at("2025-01-03"), "a2": at("2025-01-10"),
              "a3": at("2025-01-15"), "a4": at("2025-01-20"), "a5": at("2025-01-22"),
              "a6": at("2025-01-28"), "b0": at("2025-02-01", "00:30"),
              "b1": at("2025-02-10"), "b2": at("2025-02-14"), "c1": at("2025-04-05")}
    now_status = {"a3": "dormant", "a4": "erased", "a5": "merged", "a6": "dormant",
                  "b1": "dormant"}
    m = {name: await books.member(name, when, now_status.get(name, "active"))
         for name, when in joined.items()}
    await books.change(m["a2"], at("2025-02-20"), "active", "dormant")
    await books.change(m["a2"], at("2025-03-05"), "dormant", "active")
    await books.change(m["a3"], at("2025-02-01", "00:00"), "active", "dormant")
    await books.change(m["a4"], at("2025-01-25"), "active", "erased")
    await books.change(m["a5"], at("2025-03-01"), "active", "merged")
    await books.change(m["b1"], at("2025-03-31", "23:59"), "active", "dormant")
    await books.change(m["b2"], at("2025-04-20"), "dormant", "active")

    result = await cohorts(db, first=d("2025-01-01"), last=d("2025-03-01"), tz=TZ, now=now)
    assert (result.from_, result.to, result.as_of) == ("2025-01", "2025-03", now)
    table = {c.month: (c.members, [(r.months_since_join, r.active, r.share_active)
                                   for r in c.retention]) for c in result.cohorts}
    assert table == {
        "2025-01": (5, [(0, 3, 0.6), (1, 1, 0.2), (2, 2, 0.4), (3, 2, 0.4)]),
        "2025-02": (3, [(0, 2, pytest.approx(2 / 3)), (1, 1, pytest.approx(1 / 3)),
                        (2, 1, pytest.approx(1 / 3))]),
        "2025-03": (0, [(0, 0, None), (1, 0, None)]),
    }


@pytest.mark.parametrize(("first", "last", "message"), [
    ("2025-03-01", "2025-01-01", "from must be on or before to"),
    ("2025-04-01", "2025-05-01", "after the current month"),
    ("2015-04-01", "2025-04-01", "at most 120 cohorts"),
])
async def test_cohort_months_out_of_bounds_are_refused(db: Connection, first: str, last: str,
                                                       message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        await cohorts(db, first=d(first), last=d(last), tz=TZ, now=at("2025-04-10"))
