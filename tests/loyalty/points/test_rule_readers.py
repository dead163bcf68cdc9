"""Reads the console's rules and tiers pages need: who made each rules version, how many
members hold each tier, and the simulation the API and the console share."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from loyalty.access.staff import create_staff
from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.core.programme import Programme
from loyalty.points.rules import rule_version_authors, save_rules, simulate_earning
from loyalty.points.tiers import members_per_tier
from schemas.points import PurchaseLine, SimulatedAction, SimulatedPurchase, Simulation
from schemas.rules import BaseRate, EarningRules, Tier, TierProgramme
from tests.factories import insert_member

PROGRAMME = Programme(currency="JPY", timezone=ZoneInfo("Asia/Tokyo"))
NOW = dt.datetime(2026, 6, 1, 3, tzinfo=dt.UTC)


async def test_each_version_names_the_staff_member_who_made_it(db: Connection) -> None:
    staff = await create_staff(db, email="maker@staff.example", password_hash="x",
                               role="marketer", display_name="maker")
    saved = await save_rules(db, EarningRules(base=BaseRate(points=2)), staff_id=staff.staff_id)

    authors = await rule_version_authors(db)

    assert [a.version for a in authors] == sorted((a.version for a in authors), reverse=True)
    newest = authors[0]
    assert (newest.version, newest.created_by) == (saved.version, "maker@staff.example")
    assert authors[-1].version == 1
    assert authors[-1].created_by is None  # the defaults


async def test_members_are_counted_in_the_tier_they_hold(db: Connection) -> None:
    before = await members_per_tier(db)
    gold = [await insert_member(db, f"gold {n}") for n in range(3)]
    survivor = await insert_member(db, "no tier")
    await insert_member(db, "merged", status="merged", merged_into=survivor)
    erased = await insert_member(db, "erased", status="erased")
    await db.execute("update point_balances set tier = 'gold' where member_id = any($1::uuid[])",
                     [*gold, erased])

    after = await members_per_tier(db)

    assert after.get("gold", 0) - before.get("gold", 0) == 3  # the erased one is not counted
    assert after.get(None, 0) - before.get(None, 0) == 1  # nor the merged one


async def test_the_simulation_traces_a_purchase_at_the_members_tier(db: Connection) -> None:
    rules = EarningRules(tiers=TierProgramme(levels=[
        Tier(code="gold", name="Gold", threshold=0, multiplier_percent=200)]))
    result = await simulate_earning(db, Simulation(rules=rules, purchase=SimulatedPurchase(
        total=1_000, tier="gold", lines=[PurchaseLine(sku="A", unit_price=1_000)])),
        PROGRAMME, NOW)

    assert result.points == 20
    assert [step.rule for step in result.trace.steps] == ["base", "tier"]
    assert result.trace.rule_version == 0  # rules given, not a saved version


async def test_the_simulation_of_an_action_says_when_a_cap_is_reached(db: Connection) -> None:
    result = await simulate_earning(db, Simulation(action=SimulatedAction(
        type="site_visit", today=1)), PROGRAMME, NOW)

    assert result.points == 0
    assert "limit of 1 a day" in result.reason
    assert result.trace.rule_version >= 1  # the rules in force


async def test_a_simulation_is_of_a_purchase_or_an_action(db: Connection) -> None:
    with pytest.raises(InvalidInput, match="either a purchase or an action"):
        await simulate_earning(db, Simulation(), PROGRAMME, NOW)
