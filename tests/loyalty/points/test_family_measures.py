"""What a member's purchase reads of the members merged into them: the tier measure counts their
purchases and points, coupon limits count their redemptions, each member's rows read by their
own member_id (docs/scaling.md, "Rehearsal: hash-partitioned by member_id")."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

import msgspec

from loyalty.core.db import Connection
from loyalty.core.ids import uuid7
from loyalty.points import purchases
from loyalty.points.tiers import measure_sql
from schemas.rules import Tier, TierProgramme
from tests.factories import Shop

NOW = dt.datetime(2026, 6, 1, 3, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
LEVELS = [Tier(code="silver", name="Silver", threshold=10_000)]


async def _measure(db: Connection, tiers: TierProgramme, member: UUID) -> int:
    return int(await db.fetchval("select " + measure_sql(tiers, "$1::uuid", "$2", "$3"),
                                 member, NOW - 365 * DAY, NOW))


async def test_the_tier_measure_counts_the_purchases_of_members_merged_into_the_member(
    db: Connection,
) -> None:
    shop = await Shop(db).open()
    survivor, merged, stranger = [await shop.member(n) for n in ("taro", "old taro", "jiro")]
    await shop.buy(survivor, NOW - 10 * DAY, 1_000)
    await shop.buy(merged, NOW - 20 * DAY, 2_000, returned=500)
    await shop.buy(merged, NOW - 400 * DAY, 4_000)  # before the window
    await shop.buy(stranger, NOW - 5 * DAY, 8_000)
    await shop.merge(merged, survivor)

    spend = TierProgramme(measure="spend", levels=LEVELS)
    assert await _measure(db, spend, survivor) == 1_000 + 1_500
    assert await _measure(db, spend, stranger) == 8_000
    assert await _measure(db, spend, await shop.member("nobody")) == 0


async def test_the_points_measure_counts_the_earnings_of_members_merged_into_the_member(
    db: Connection,
) -> None:
    shop = await Shop(db).open()
    survivor, merged = await shop.member("hanako"), await shop.member("old hanako")
    await db.execute(
        """
        insert into point_entries (member_id, entry_id, kind, amount, reason, source, created_at)
        select m, uuid_v7(), k, a, 'test', 'staff', $3
          from unnest($1::uuid[], $2::text[], $4::int8[]) as e(m, k, a)
        """,
        [survivor, merged, merged, survivor], ["earn", "earn", "reverse", "adjust"],
        NOW - DAY, [100, 40, -15, 1_000])
    await shop.merge(merged, survivor)

    points = TierProgramme(measure="points", levels=LEVELS)
    assert await _measure(db, points, survivor) == 100 + 40 - 15  # adjustments do not qualify


async def test_coupon_limits_count_the_redemptions_of_members_merged_into_the_member(
    db: Connection,
) -> None:
    shop = await Shop(db).open()
    survivor, merged = await shop.member("saburo"), await shop.member("old saburo")
    limited, other = [await db.fetchval(
        """
        insert into coupon_templates (name, discount) values ($1, '{"type": "fixed_amount",
        "amount": 100}') returning template_id
        """, name) for name in ("limited", "other")]
    reinstated = NOW - DAY
    for member, template, back in ((survivor, limited, None), (merged, limited, None),
                                   (merged, limited, reinstated), (merged, other, None)):
        await db.execute(
            """
            insert into coupon_redemptions (member_id, redemption_id, template_id, code,
                                            purchase_id, store_id, discount, redeemed_at,
                                            reinstated_at)
            values ($1, $2, $3, 'C', $4, $5, 100, $6, $7)
            """, member, uuid7(), template, uuid7(), shop.store_id, NOW - 2 * DAY, back)
    await shop.merge(merged, survivor)

    usage = purchases._USAGE
    counted = await db.fetchval(usage.text, *usage.args(
        {"member": survivor, "template_ids": [limited]}))

    assert msgspec.convert(counted, dict[UUID, int]) == {limited: 2}
