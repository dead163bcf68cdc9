"""The sales trend by day, week and month: buckets of business days in the programme's time
zone (Tokyo here), weeks from Monday, months from the first, the period's days only."""

from __future__ import annotations

import pytest

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.insights.kpis import sales_trend
from tests.loyalty.insights.test_kpis import NOW, TZ, Books, at, d


async def _books(db: Connection) -> None:
    books = await Books(db).open()
    ann = await books.member("ann", at("2024-12-01"))
    # Monday 2025-03-03 00:30 in Tokyo is still Sunday in UTC: it belongs to the week of 03-03.
    await books.buy(ann, at("2025-03-03", "00:30"), 100)
    # Sunday 2025-03-02 23:30 in Tokyo: the week before.
    await books.buy(ann, at("2025-03-02", "23:30"), 20)
    # 2025-04-01 00:10 Tokyo is 03-31 in UTC: April's.
    await books.buy(ann, at("2025-04-01", "00:10"), 3)
    await books.buy(ann, at("2025-03-31", "23:50"), 4000)


async def test_weeks_begin_on_monday_in_the_business_time_zone(db: Connection) -> None:
    await _books(db)
    weeks = await sales_trend(db, first=d("2025-02-26"), last=d("2025-03-12"), tz=TZ, now=NOW,
                              grain="week")
    # The first bucket is named by its Monday though only Wednesday on is counted.
    assert weeks == [(d("2025-02-24"), 1, 20), (d("2025-03-03"), 1, 100),
                     (d("2025-03-10"), 0, 0)]


async def test_months_begin_on_the_first_in_the_business_time_zone(db: Connection) -> None:
    await _books(db)
    months = await sales_trend(db, first=d("2025-03-01"), last=d("2025-05-31"), tz=TZ, now=NOW,
                               grain="month")
    assert months == [(d("2025-03-01"), 3, 4120), (d("2025-04-01"), 1, 3),
                      (d("2025-05-01"), 0, 0)]


async def test_every_grain_adds_up_to_the_same_orders_and_sales(db: Connection) -> None:
    await _books(db)
    totals = set()
    for grain in ("day", "week", "month"):
        buckets = await sales_trend(db, first=d("2025-03-02"), last=d("2025-04-01"), tz=TZ,
                                    now=NOW, grain=grain)
        totals.add((sum(o for _, o, _ in buckets), sum(s for _, _, s in buckets)))
    assert totals == {(4, 4123)}
    days = await sales_trend(db, first=d("2025-03-02"), last=d("2025-04-01"), tz=TZ, now=NOW)
    assert len(days) == 31


async def test_an_unknown_grain_or_a_bad_period_is_refused(db: Connection) -> None:
    with pytest.raises(InvalidInput, match="grain must be one of day, week, month"):
        await sales_trend(db, first=d("2025-03-01"), last=d("2025-03-02"), tz=TZ, now=NOW,
                          grain="year")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="from must be on or before to"):
        await sales_trend(db, first=d("2025-03-02"), last=d("2025-03-01"), tz=TZ, now=NOW,
                          grain="week")
