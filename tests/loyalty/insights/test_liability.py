"""The liability forecast on a real PostgreSQL: lot histories written by hand with answers worked
out below (the curve, and the forecast of young lots it gives), reversals and merges in the
history, an empty programme and one too young to have a history (an answer, not an error); and
the pure carry-forward rule. Times are Tokyo business time, the programme's default."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import msgspec
import pytest

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.insights.liability import (
    LIMIT_MONTHS,
    OutstandingLots,
    liability_forecast,
    project,
)
from schemas.analytics import LiabilityAge
from tests.factories import insert_lot, insert_member

TZ = ZoneInfo("Asia/Tokyo")
POINT_VALUE = 0.5


def at(day: str) -> dt.datetime:
    """Noon of a Tokyo business day."""
    return dt.datetime.fromisoformat(f"{day}T12:00").replace(tzinfo=TZ)


NOW = at("2026-06-15")


async def forecast_now(conn: Connection, months: int = 12) -> dict:  # type: ignore[type-arg]
    result = await liability_forecast(conn, now=NOW, tz=TZ, point_value=POINT_VALUE,
                                      months=months)
    return msgspec.to_builtins(result)  # type: ignore[no-any-return]


async def test_young_lots_are_forecast_to_go_the_way_old_lots_went(db: Connection) -> None:
    """History: four lots of 100 earned 2024-06-15, 24 months ago, expiring after 12 months.
    Each had 30 redeemed at age 1 (2024-07-20), 20 at age 3 (2024-09-20), and its last 50
    expired at age 12 (2025-06-15): half redeemed, half broken.

    The curve (ages 0 to 23 measured; the young lots below are under a month old or, for the
    one of age 1, only watched through age 0):
      age 0: exposure 400 + 200 (the young lot has lived all of its month 0) = 600, nothing out
      age 1: exposure 400, 120 redeemed: rate 0.3
      age 2: exposure 280; age 3: 280, 80 redeemed: rate 2/7
      ages 4-11: exposure 200, nothing out; age 12: 200 expired: expiry rate 1
      ages 13-23: no exposure, rates null.
      Shares at age 12's end: redeemed 0.3 + 0.7 x 2/7 = 0.5, expired 0.5, outstanding 0.

    Outstanding now: 200 earned 2026-05-15 (age 1), expiring 2027-05-15, in forecast month 12;
    10 earned 2026-06-05 without expiry (age 0: ten days old, half a month on still under one).
      the 200: month 1 at age 1, 0.3 -> 60; month 3 at age 3, 2/7 of 140 -> 40; 100 left
        breaks in month 12.
      the 10: month 2 at age 1 -> 3; month 4 at age 3, 2/7 of 7 -> 2; ages 12 on (the last
        measured rate, 0, carried on) redeem nothing: 5 unresolved after ten years.
      ultimate: redeemed 105, breakage 100, unresolved 5; breakage rate 100 / 205.
      Value at 0.5 a point: 60 -> 30, 40 -> 20, 100 -> 50, 105 -> 52.5 -> 52 (half to even).
    """
    old = await insert_member(db, "old")
    for _ in range(4):
        await insert_lot(db, old, at("2024-06-15"), 100, expires=at("2025-06-15"), outcomes=(
            (at("2024-07-20"), "redeem", 30), (at("2024-09-20"), "redeem", 20),
            (at("2025-06-15"), "expire", 50)))
    young = await insert_member(db, "young")
    await insert_lot(db, young, at("2026-05-15"), 200, expires=at("2027-05-15"))
    await insert_lot(db, young, at("2026-06-05"), 10)

    result = await forecast_now(db)

    assert (result["outstanding_points"], result["outstanding_value"],
            result["outstanding_lots"]) == (210, 105, 2)
    assert result["history_months"] == 24
    curve = {age["age_months"]: age for age in result["curve"]}
    assert [curve[k]["exposure"] for k in range(14)] == [600, 400, 280, 280, *[200] * 9, 0]
    assert curve[1]["redemption_rate"] == pytest.approx(0.3)
    assert curve[3]["redemption_rate"] == pytest.approx(2 / 7)
    assert curve[12]["expiry_rate"] == pytest.approx(1.0)
    assert curve[12]["redemption_rate"] == 0.0
    assert curve[13]["redemption_rate"] is None
    assert (curve[3]["redeemed_share"], curve[3]["outstanding_share"]) == \
        (pytest.approx(0.5), pytest.approx(0.5))
    assert (curve[12]["redeemed_share"], curve[12]["expired_share"],
            curve[12]["outstanding_share"]) == \
        (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.0))

    months = result["months"]
    assert [m["month"] for m in months] == list(range(1, 13))
    assert months[0]["starts"] == "2026-06-15"
    assert months[11]["starts"] == "2027-05-15"
    assert [m["redeemed_points"] for m in months] == [60, 3, 40, 2, *[0] * 8]
    assert [m["breakage_points"] for m in months] == [*[0] * 11, 100]
    assert [m["outstanding_points"] for m in months] == [150, 147, 107, 105, *[105] * 7, 5]
    assert (months[0]["redeemed_value"], months[2]["redeemed_value"],
            months[11]["breakage_value"]) == (30, 20, 50)
    assert result["ultimate"] == {
        "redeemed_points": 105, "breakage_points": 100, "unresolved_points": 5,
        "redeemed_value": 52, "breakage_value": 50,
        "breakage_rate": pytest.approx(100 / 205)}
    # The forecast accounts for every point outstanding.
    ultimate = result["ultimate"]
    assert ultimate["redeemed_points"] + ultimate["breakage_points"] + \
        ultimate["unresolved_points"] == result["outstanding_points"]


async def test_points_taken_back_leave_the_curve_and_a_merge_keeps_a_lot_at_its_age(
    db: Connection,
) -> None:
    """A lot of 100 earned 2026-03-15 (elapsed 3 months): 20 reversed on a return at age 0,
    40 redeemed at age 1, then its last 40 moved by a merge at age 2 to the survivor's lot
    (same earning date, origin the first lot), of which 10 were redeemed at age 2.
      age 0: exposure 100, nothing redeemed (the 20 reversed only leave)
      age 1: exposure 80, 40 redeemed: 0.5
      age 2: exposure 40 (the moved lot is not issued again; the transfer is no outcome),
             10 redeemed: 0.25
      shares: redeemed 0.5, then 0.5 + 0.5 x 0.25 = 0.625; outstanding 0.375.
    """
    merged, survivor = await insert_member(db, "merged"), await insert_member(db, "survivor")
    first = await insert_lot(db, merged, at("2026-03-15"), 100, outcomes=(
        (at("2026-03-20"), "reverse", 20), (at("2026-04-20"), "redeem", 40),
        (at("2026-05-16"), "transfer", 40)))
    await insert_lot(db, survivor, at("2026-03-15"), 40, origin_lot_id=first,
              outcomes=((at("2026-05-20"), "redeem", 10),))

    result = await forecast_now(db)

    assert result["history_months"] == 3
    assert [(age["exposure"], age["redeemed"]) for age in result["curve"]] == \
        [(100, 0), (80, 40), (40, 10)]
    assert [age["redemption_rate"] for age in result["curve"]] == \
        [0.0, pytest.approx(0.5), pytest.approx(0.25)]
    assert [age["redeemed_share"] for age in result["curve"]] == \
        [0.0, pytest.approx(0.5), pytest.approx(0.625)]
    assert result["curve"][-1]["outstanding_share"] == pytest.approx(0.375)
    # The 30 left on the survivor (age 3, no expiry) take age 2's rate on, a quarter a month.
    assert result["outstanding_points"] == 30
    assert result["months"][0]["redeemed_points"] == round(30 * 0.25)


async def test_an_empty_programme_has_an_answer(db: Connection) -> None:
    result = await forecast_now(db)
    assert result == {
        "as_of": NOW.isoformat(),
        "point_value": POINT_VALUE, "outstanding_points": 0, "outstanding_value": 0,
        "outstanding_lots": 0, "history_months": 0, "curve": [], "months": [],
        "ultimate": None}


async def test_points_younger_than_a_month_are_outstanding_without_a_forecast(
    db: Connection,
) -> None:
    member = await insert_member(db, "new")
    await insert_lot(db, member, at("2026-06-01"), 80, expires=at("2027-06-01"),
              outcomes=((at("2026-06-10"), "redeem", 30),))
    result = await forecast_now(db)
    assert (result["outstanding_points"], result["history_months"]) == (50, 0)
    assert (result["curve"], result["months"], result["ultimate"]) == ([], [], None)


async def test_months_out_of_range_are_refused(db: Connection) -> None:
    for months in (0, 61):
        with pytest.raises(InvalidInput) as refused:
            await forecast_now(db, months=months)
        assert refused.value.field == "months"


def _curve(*rates: float) -> list[LiabilityAge]:
    return [LiabilityAge(age_months=k, exposure=100, redeemed=0, expired=0,
                         redemption_rate=rate, expiry_rate=0.0, redeemed_share=0.0,
                         expired_share=0.0, outstanding_share=1.0)
            for k, rate in enumerate(rates)]


def test_points_past_their_expiry_break_in_the_first_month() -> None:
    projection = project([OutstandingLots(age=14, expires_in=0, points=7, lots=1)],
                         _curve(0.5, 0.5))
    assert projection.breakage[0] == 7
    assert projection.redeemed.sum() == 0
    assert projection.unresolved == 0


def test_a_lot_expiring_this_month_is_redeemed_at_its_rate_first_then_breaks() -> None:
    projection = project([OutstandingLots(age=0, expires_in=1, points=100, lots=1)],
                         _curve(0.25))
    assert (projection.redeemed[0], projection.breakage[0]) == (25, 75)
    assert projection.outstanding[0] == 0


def test_points_without_expiry_are_redeemed_at_the_last_rate_for_ten_years() -> None:
    projection = project([OutstandingLots(age=5, expires_in=None, points=1000, lots=3)],
                         _curve(0.1, 0.1))
    assert len(projection.redeemed) == LIMIT_MONTHS
    assert projection.unresolved == pytest.approx(1000 * 0.9 ** LIMIT_MONTHS)
    assert projection.redeemed.sum() + projection.unresolved == pytest.approx(1000)
    assert projection.breakage.sum() == 0
