"""Stored rule versions are read as they were saved, and a change's effect on recent purchases
is told in numbers a marketer can act on."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import msgspec
import pytest

from loyalty.points.rules import RuleChangeEffect, stored_rules
from schemas.rules import EarningRules, Multiplier, TimeWindow

# What the service accepted before each number had its bound: the rule set, and a
# tier, a window and a bonus, so that every kind of field is read back.
SAVED_BEFORE_THE_BOUNDS: dict[str, Any] = {
    "base": {"points": 1_000_000, "per_amount": 1},
    "stacking": "multiply",
    "multipliers": [
        {"name": f"x1000 {i}", "percent": 100_000,
         "when": [{"type": "time_window", "start": "22:00:00", "end": "02:00:00"}],
         "valid_from": "2026-01-01T00:00:00+00:00"}
        for i in range(3)],
    "bonuses": [{"type": "first_purchase", "points": 100_000_000}],
    "tiers": {"measure": "points", "levels": [
        {"code": "gold", "name": "Gold", "threshold": 0, "multiplier_percent": 200,
         "coupon_template_id": "0192f000-0000-7000-8000-000000000001"}]},
}


def test_a_version_saved_before_the_bounds_is_read_as_it_was_saved() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(SAVED_BEFORE_THE_BOUNDS, EarningRules)

    rules = stored_rules(SAVED_BEFORE_THE_BOUNDS)

    assert rules.base.points == 1_000_000
    assert rules.stacking == "multiply"
    assert [m.percent for m in rules.multipliers] == [100_000] * 3
    assert isinstance(rules.multipliers[0], Multiplier)
    assert rules.multipliers[0].when == [TimeWindow(start=dt.time(22), end=dt.time(2))]
    assert rules.multipliers[0].valid_from == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert rules.bonuses[0].points == 100_000_000
    assert rules.tiers.levels[0].coupon_template_id == UUID(
        "0192f000-0000-7000-8000-000000000001")
    assert rules.actions == EarningRules().actions  # omitted fields keep their defaults
    assert msgspec.to_builtins(rules)["base"] == SAVED_BEFORE_THE_BOUNDS["base"]


def test_a_version_within_the_bounds_is_read_by_msgspec_as_ever() -> None:
    saved = msgspec.to_builtins(EarningRules(multipliers=[Multiplier(name="x2", percent=200)]))

    assert stored_rules(saved) == msgspec.convert(saved, EarningRules)


def test_a_stored_version_of_the_wrong_shape_is_still_an_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="lunar"):
        stored_rules({**SAVED_BEFORE_THE_BOUNDS, "expiry": {"type": "lunar"}})


@pytest.mark.parametrize(
    ("effect", "factor", "needs"),
    [
        (RuleChangeEffect(purchases=100, before=1_000, after=10_000), 10, False),
        (RuleChangeEffect(purchases=100, before=1_000, after=10_001), 10, True),
        (RuleChangeEffect(purchases=100, before=1_000, after=1_600), 1.5, True),
        (RuleChangeEffect(purchases=100, before=1_000, after=10), 10, False),
        (RuleChangeEffect(purchases=3, before=0, after=1), 10, True),
        (RuleChangeEffect(purchases=0, before=0, after=0), 10, False),
    ],
)
def test_a_change_needs_a_confirmation_when_it_multiplies_the_samples_points_beyond_the_factor(
    effect: RuleChangeEffect, factor: float, needs: bool
) -> None:
    assert effect.multiplies_by_more_than(factor) is needs


def test_the_confirmation_asked_for_says_how_much_points_would_change_and_how_to_confirm() -> None:
    effect = RuleChangeEffect(purchases=100, before=1_234, after=1_234_000)

    assert effect.explain(10) == (
        "the last 100 purchases earned 1234 points and would earn 1234000 under these rules "
        "(×1,000), more than the ×10 a change may make without a confirmation: check the "
        'rules, then send them again with "confirm": true to apply them')
    assert "earned no points and would earn 50 under these rules" in RuleChangeEffect(
        purchases=2, before=0, after=50).explain(10)
