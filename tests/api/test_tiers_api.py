"""Tiers: up at the purchase that crosses a threshold, down only at period end, exactly to what
the member qualifies for, on a calendar of leap years, month ends and the business time zone."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any, Literal

import asyncpg
import httpx
import pytest

from loyalty.core.db import init_connection
from loyalty.core.settings import Settings
from loyalty.points.rules import RuleBook
from loyalty.points.tiers import current_window_start, evaluate_tiers, previous_period, tier_for
from schemas.rules import Tier, TierProgramme
from tests.factories import TOKYO, Actors, SignedUp, bearer

Client = httpx.AsyncClient
_n = itertools.count()

LEVELS: list[dict[str, Any]] = [
    {"code": "SILVER", "name": "Silver", "threshold": 10_000, "multiplier_percent": 150},
    {"code": "GOLD", "name": "Gold", "threshold": 50_000, "multiplier_percent": 200},
]


def local(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=TOKYO)


# -- pure ------------------------------------------------------------------------------------


def tier_programme(
        period: Literal["rolling_12_months", "calendar_year"] = "rolling_12_months",
        measure: Literal["spend", "points"] = "spend") -> TierProgramme:
    return TierProgramme(measure=measure, period=period,
                         levels=[Tier(**level) for level in LEVELS])


@pytest.mark.parametrize(("today", "start"), [
    ("2026-11-23 10:00", "2025-11-24 00:00"),
    ("2028-02-29 12:00", "2027-03-01 00:00"),   # leap day: 12 months back is clamped
    ("2027-02-28 12:00", "2026-03-01 00:00"),
    ("2026-03-31 09:00", "2025-04-01 00:00"),   # month end
    ("2026-01-01 00:30", "2025-01-02 00:00"),
])
def test_rolling_window_starts_the_day_after_the_same_date_a_year_ago(today: str,
                                                                       start: str) -> None:
    assert current_window_start(tier_programme(), local(today), TOKYO) == local(start)


def test_calendar_year_follows_the_business_time_zone() -> None:
    calendar = tier_programme("calendar_year")
    # 15:30 UTC on 31 December is already 1 January in Tokyo.
    instant = dt.datetime(2026, 12, 31, 15, 30, tzinfo=dt.UTC)
    assert current_window_start(calendar, instant, TOKYO) == local("2027-01-01 00:00")
    assert previous_period(calendar, instant, TOKYO) == (local("2026-01-01 00:00"),
                                                        local("2027-01-01 00:00"))
    assert previous_period(tier_programme(), instant, TOKYO) is None


def test_tier_for_takes_the_highest_threshold_reached() -> None:
    levels = tier_programme()
    assert tier_for(levels, 9_999) is None
    tier = tier_for(levels, 10_000)
    assert tier is not None
    assert tier.code == "SILVER"
    top = tier_for(levels, 10**9)
    assert top is not None
    assert top.code == "GOLD"


def test_thresholds_must_increase() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="strictly increasing"):
        msgspec.json.decode(b'{"levels": [{"code": "A", "name": "A", "threshold": 5},'
                            b' {"code": "B", "name": "B", "threshold": 5}]}', type=TierProgramme)


# -- through the API -------------------------------------------------------------------------


async def set_tiers(client: Client, actors: Actors, **tiers: Any) -> None:
    marketer = bearer(await actors.staff("marketer"))
    response = await client.put("/v1/tiers", headers=marketer,
                                json={"levels": LEVELS, **tiers})
    assert response.status_code == 200, response.text


async def buy(client: Client, till: dict[str, str], member: SignedUp, total: int,
              when: dt.datetime | None = None) -> dict[str, Any]:
    response = await client.post("/v1/pos/purchases", headers={
        **till, "Idempotency-Key": f"t-{next(_n)}"}, json={
        "member": {"id": member.member_id}, "receipt_id": f"T-{next(_n)}",
        "occurred_at": (when or dt.datetime.now(dt.UTC)).isoformat(), "total": total,
        "currency": "JPY", "lines": [{"sku": "X", "unit_price": total}]})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
async def till(actors: Actors) -> dict[str, str]:
    key, _ = await actors.terminal("TIER-1")
    return bearer(key)


async def test_crossing_purchase_reaches_the_tier_and_the_next_one_earns_at_it(
    client: Client, actors: Actors, till: dict[str, str]
) -> None:
    await set_tiers(client, actors)
    member = await actors.member()
    first = await buy(client, till, member, 6_000)
    assert first["tier"] is None
    assert first["tier_reached"] is None
    crossing = await buy(client, till, member, 5_000)
    assert crossing["tier_reached"] == "SILVER"
    assert crossing["tier"] == "SILVER"
    # Policy: the crossing purchase earns at the tier it started in.
    assert crossing["points_earned"] == 50
    after = await buy(client, till, member, 1_000)
    assert after["points_earned"] == 15
    assert [s["rule"] for s in after["trace"]["steps"]] == ["base", "tier"]
    assert after["tier_reached"] is None

    tier = (await client.get("/v1/me/tier", headers=member.headers)).json()
    assert tier["tier"] == {"code": "SILVER", "name": "Silver", "multiplier_percent": 150}
    assert tier["measure"] == 12_000
    assert tier["next"] == {"code": "GOLD", "name": "Gold", "threshold": 50_000,
                            "remaining": 38_000}
    assert [(h["from_tier"], h["to_tier"]) for h in tier["history"]] == [(None, "SILVER")]
    lookup = await client.get("/v1/pos/members/lookup",
                              params={"number": member.member["member_number"]}, headers=till)
    assert lookup.json()["tier"] == "SILVER"


async def test_a_purchase_can_jump_two_tiers(client: Client, actors: Actors,
                                             till: dict[str, str]) -> None:
    await set_tiers(client, actors)
    member = await actors.member()
    assert (await buy(client, till, member, 60_000))["tier_reached"] == "GOLD"


async def test_points_measure_counts_points_earned(client: Client, actors: Actors,
                                                   till: dict[str, str]) -> None:
    marketer = bearer(await actors.staff("marketer"))
    await client.put("/v1/tiers", headers=marketer, json={"measure": "points", "levels": [
        {"code": "SILVER", "name": "Silver", "threshold": 100}]})
    member = await actors.member()
    assert (await buy(client, till, member, 9_900))["tier_reached"] is None
    assert (await buy(client, till, member, 100))["tier_reached"] == "SILVER"


async def test_granted_bonus_points_do_not_count_towards_a_points_tier(
    client: Client, actors: Actors, till: dict[str, str]
) -> None:
    marketer = bearer(await actors.staff("marketer"))
    await client.put("/v1/tiers", headers=marketer, json={"measure": "points", "levels": [
        {"code": "SILVER", "name": "Silver", "threshold": 100}]})
    member = await actors.member()
    granted = await client.post("/v1/points/grants", headers={
        **marketer, "Idempotency-Key": "bonus"}, json={
        "points": 5_000, "reason": "autumn bonus", "members": [member.member_id]})
    assert granted.status_code == 201, granted.text
    tier = await client.get("/v1/me/tier", headers=member.headers)
    assert (tier.json()["measure"], tier.json()["tier"]) == (0, None)
    # Points earned by buying do count: 99 is one short, the next purchase crosses.
    assert (await buy(client, till, member, 9_900))["tier_reached"] is None
    assert (await buy(client, till, member, 100))["tier_reached"] == "SILVER"


async def _evaluate(settings: Settings, now: dt.datetime) -> dict[str, int]:
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        return await evaluate_tiers(conn, rulebook=RuleBook(), now=now, tz=TOKYO, batch_size=2)
    finally:
        await conn.close()


async def _tier_of(settings: Settings, member: SignedUp) -> str | None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        tier: str | None = await conn.fetchval(
            "select tier from point_balances where member_id = $1", member.member_uuid)
        return tier
    finally:
        await conn.close()


async def test_calendar_year_evaluation_keeps_last_years_tier_then_drops_it(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    await set_tiers(client, actors, period="calendar_year")
    loyal = await actors.member()
    await buy(client, till, loyal, 12_000, local("2026-03-10 12:00"))
    assert await _tier_of(settings, loyal) == "SILVER"

    at_new_year = local("2027-01-01 00:05")
    assert (await _evaluate(settings, at_new_year))["changed"] == 0  # 2026 still qualifies
    assert await _tier_of(settings, loyal) == "SILVER"
    assert (await _evaluate(settings, at_new_year))["changed"] == 0
    # A year on, 2027 had no spending: down to no tier, never below what 2028 brings.
    result = await _evaluate(settings, local("2028-01-01 00:05"))
    assert result["changed"] == 1
    assert await _tier_of(settings, loyal) is None
    history = (await client.get("/v1/me/tier", headers=loyal.headers)).json()["history"]
    assert [(h["from_tier"], h["to_tier"], h["reason"]) for h in history] == [
        ("SILVER", None, "period-end evaluation"),
        (None, "SILVER", "purchase reached the threshold")]


async def test_business_day_decides_which_year_a_purchase_counts_for(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    await set_tiers(client, actors, period="calendar_year")
    member = await actors.member()
    # 2025-12-31 23:30 Tokyo counts for 2025; 2026-01-01 00:10 Tokyo (15:10 UTC the day
    # before) counts for 2026.
    await buy(client, till, member, 9_000, local("2025-12-31 23:30"))
    await buy(client, till, member, 2_000, local("2026-01-01 00:10"))
    # Evaluated in 2026: 2025 brought 9,000 and 2026 so far 2,000: neither reaches Silver.
    await _evaluate(settings, local("2026-06-01 00:00"))
    assert await _tier_of(settings, member) is None
    # Had the late purchase counted by UTC date it would be 2025's: 11,000, Silver.
    await buy(client, till, member, 8_000, local("2026-05-01 12:00"))
    await _evaluate(settings, local("2026-06-01 00:00"))
    assert await _tier_of(settings, member) == "SILVER"  # 2026 so far: 10,000


async def test_rolling_evaluation_on_a_leap_day(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    await set_tiers(client, actors)
    inside = await actors.member()
    outside = await actors.member()
    # Evaluated on 2024-02-29 the window starts on 2023-03-01 (12 months back, clamped to
    # 28 February, then the day after).
    await buy(client, till, inside, 10_000, local("2023-03-01 00:30"))
    await buy(client, till, outside, 10_000, local("2023-02-28 23:30"))
    await _evaluate(settings, local("2024-02-29 12:00"))
    assert await _tier_of(settings, inside) == "SILVER"
    assert await _tier_of(settings, outside) is None
    # Two days on, the purchase of 1 March 2023 has left the window: down again.
    assert (await _evaluate(settings, local("2024-03-02 12:00")))["changed"] == 1
    assert await _tier_of(settings, inside) is None
