"""Earning rules as pure functions: what a purchase or an action earns, why, and until when."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import math
from fractions import Fraction
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.core.errors import InvalidInput
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.points import earning
from loyalty.points.earning import (
    LARGEST_AMOUNT,
    MAX_WORST_CASE_POINTS,
    ActionCounts,
    PurchaseFacts,
    allocate,
    available_at,
    check_points_in_range,
    expires_at,
    paid_amount,
    redeemable_points,
    worst_case_points,
)
from schemas.points import PurchaseLine
from schemas.rules import (
    WEEKDAYS,
    ActionRule,
    BaseRate,
    BirthdayMonth,
    BirthdayMonthBonus,
    CategoryIs,
    Condition,
    EarningRules,
    FirstPurchaseBonus,
    Multiplier,
    NoExpiry,
    PeriodEndExpiry,
    RollingExpiry,
    SkuIs,
    StoreIs,
    Tier,
    TierProgramme,
    TimeWindow,
    WeekdayIs,
)
from tests.factories import TOKYO, instant

# Monday 23:30 in UTC, but Tuesday 08:30 where the business is.
TUESDAY_MORNING = dt.datetime(2026, 1, 5, 23, 30, tzinfo=dt.UTC)
RULE_VERSION = 7
# The engine under a ceiling no test reaches but the ceiling's own, which give theirs.
CEILING = 10**9
purchase_points = functools.partial(earning.purchase_points, ceiling=CEILING)
action_points = functools.partial(earning.action_points, ceiling=CEILING)


def line(sku: str = "SKU-1", unit_price: int = 1_000, *, category: str = "food",
         quantity: int = 1) -> PurchaseLine:
    return PurchaseLine(sku=sku, unit_price=unit_price, category=category, quantity=quantity)


def purchase(*lines: PurchaseLine, total: int | None = None, **facts: Any) -> PurchaseFacts:
    """A purchase at store S1 on ``TUESDAY_MORNING`` whose total is its lines' sum."""
    lines = lines or (line(),)
    facts.setdefault("occurred_at", TUESDAY_MORNING)
    facts.setdefault("store_code", "S1")
    if total is None:
        total = sum(li.quantity * li.unit_price for li in lines)
    return PurchaseFacts(total=total, lines=lines, **facts)


def points(rules: EarningRules, facts: PurchaseFacts) -> int:
    return purchase_points(rules, RULE_VERSION, facts, TOKYO).points


def tokyo(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
          second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=TOKYO)


# -- the base rate ----------------------------------------------------------------------------


@pytest.mark.parametrize(("paid", "expected"), [(12_345, 123), (99, 0), (100, 1), (0, 0)])
def test_default_rules_earn_one_point_per_full_100_paid(paid: int, expected: int) -> None:
    assert points(EarningRules(), purchase(line(unit_price=paid))) == expected


def test_base_rate_counts_the_amount_paid_not_the_lines_list_price() -> None:
    facts = purchase(line(unit_price=10_000), line(unit_price=5_000), total=12_000)

    assert points(EarningRules(), facts) == 120


@pytest.mark.parametrize(
    ("rounding", "paid", "expected"),
    [
        ("floor", 199, 1),
        ("round", 149, 1),
        ("round", 150, 2),
        ("round", 250, 3),
        ("ceil", 101, 2),
        ("ceil", 100, 1),
        ("ceil", 0, 0),
    ],
)
def test_rounding_mode_is_applied_once_to_the_exact_points(
    rounding: Any, paid: int, expected: int
) -> None:
    rules = EarningRules(rounding=rounding)

    assert points(rules, purchase(line(unit_price=paid))) == expected


def test_round_is_half_up_on_the_sum_of_lines_not_per_line() -> None:
    # Three lines of 50 each round to 1 point alone, but 150 paid is 1.5 points: 2.
    rules = EarningRules(rounding="round")
    facts = purchase(line("A", 50), line("B", 50), line("C", 50))

    assert points(rules, facts) == 2


def test_base_rate_points_and_per_amount_come_from_the_rules() -> None:
    rules = EarningRules(base=BaseRate(points=3, per_amount=200))

    assert points(rules, purchase(line(unit_price=1_000))) == 15


# -- points paid with points ------------------------------------------------------------------


def test_points_spent_on_a_purchase_earn_nothing() -> None:
    facts = purchase(line(unit_price=10_000), redeem_points=3_000)

    assert points(EarningRules(), facts) == 70


def test_points_spent_are_valued_at_point_value() -> None:
    rules = EarningRules(point_value=2)
    facts = purchase(line(unit_price=10_000), redeem_points=3_000)

    assert paid_amount(rules, 10_000, 3_000) == 4_000
    assert points(rules, facts) == 40


def test_paying_more_than_the_bill_with_points_earns_zero_not_negative() -> None:
    facts = purchase(line(unit_price=1_000), redeem_points=5_000)

    assert paid_amount(EarningRules(), 1_000, 5_000) == 0
    assert points(EarningRules(), facts) == 0


def test_trace_says_points_used_do_not_earn() -> None:
    facts = purchase(line(unit_price=10_000), redeem_points=3_000)

    base = purchase_points(EarningRules(), RULE_VERSION, facts, TOKYO).trace.steps[0]

    assert "7000 paid" in base.detail
    assert "3000 points used do not earn" in base.detail


@pytest.mark.parametrize(
    ("point_value", "total", "available", "expected"),
    [(1, 1_000, 300, 300), (1, 1_000, 5_000, 1_000), (3, 1_000, 5_000, 333), (1, 0, 50, 0)],
)
def test_redeemable_points_are_the_balance_or_the_whole_bill_whichever_is_less(
    point_value: int, total: int, available: int, expected: int
) -> None:
    rules = EarningRules(point_value=point_value)

    assert redeemable_points(rules, total, available) == expected


# -- splitting the amount paid across lines ---------------------------------------------------


@given(
    total=st.integers(min_value=0, max_value=10**9),
    weights=st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=30),
)
def test_allocate_splits_the_total_exactly_in_proportion(total: int, weights: list[int]) -> None:
    shares = allocate(total, weights)

    assert len(shares) == len(weights)
    assert sum(shares) == total
    assert all(share >= 0 for share in shares)
    if sum(weights):
        for share, weight in zip(shares, weights, strict=True):
            assert abs(share - Fraction(total * weight, sum(weights))) < 1


def test_allocate_gives_the_left_over_units_to_the_largest_remainders_first() -> None:
    assert allocate(100, [1, 2]) == [33, 67]
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]


def test_allocate_gives_nothing_to_zero_weight_lines() -> None:
    assert allocate(100, [0, 3, 0, 1]) == [0, 75, 0, 25]


def test_allocate_gives_the_whole_total_to_the_first_line_when_every_weight_is_zero() -> None:
    assert allocate(500, [0, 0, 0]) == [500, 0, 0]


# -- multipliers ------------------------------------------------------------------------------


def times(percent: int, *when: Condition, name: str | None = None, **window: Any) -> Multiplier:
    return Multiplier(name=name or f"x{percent}", percent=percent, when=list(when), **window)


def with_multipliers(*multipliers: Multiplier, **rules: Any) -> EarningRules:
    return EarningRules(multipliers=list(multipliers), **rules)


@pytest.mark.parametrize(("percent", "expected"), [
    pytest.param(200, 20 + 10, id="raising"),
    pytest.param(50, 5 + 10, id="below_100_reducing"),
])
def test_category_multiplier_applies_only_to_lines_of_that_category(
    percent: int, expected: int
) -> None:
    rules = with_multipliers(times(percent, CategoryIs(categories=["food"])))
    facts = purchase(line("A", 1_000, category="food"), line("B", 1_000, category="drink"))

    assert points(rules, facts) == expected


def test_sku_multiplier_applies_only_to_lines_of_that_sku() -> None:
    rules = with_multipliers(times(300, SkuIs(skus=["B"])))
    facts = purchase(line("A", 1_000), line("B", 1_000))

    assert points(rules, facts) == 10 + 30


@pytest.mark.parametrize(("store", "expected"), [("S1", 20), ("S2", 10)])
def test_store_multiplier_applies_only_at_those_stores(store: str, expected: int) -> None:
    rules = with_multipliers(times(200, StoreIs(stores=["S1"])))

    assert points(rules, purchase(store_code=store)) == expected


@pytest.mark.parametrize(("days", "expected"), [(["tue"], 20), (["mon"], 10), (["sat", "tue"], 20)])
def test_weekday_multiplier_uses_the_day_in_the_business_time_zone(
    days: Any, expected: int
) -> None:
    rules = with_multipliers(times(200, WeekdayIs(days=days)))

    assert points(rules, purchase()) == expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (dt.time(8), dt.time(9), 20),
        (dt.time(8, 30), dt.time(8, 31), 20),
        (dt.time(8), dt.time(8, 30), 10),
        (dt.time(23), dt.time(23, 59), 10),
    ],
)
def test_time_window_uses_the_local_time_start_inclusive_end_exclusive(
    start: dt.time, end: dt.time, expected: int
) -> None:
    rules = with_multipliers(times(200, TimeWindow(start=start, end=end)))

    assert points(rules, purchase()) == expected


@pytest.mark.parametrize(
    ("local_time", "inside"),
    [
        (dt.time(22), True),
        (dt.time(23, 59), True),
        (dt.time(0), True),
        (dt.time(1, 59), True),
        (dt.time(2), False),
        (dt.time(12), False),
        (dt.time(21, 59), False),
    ],
)
def test_time_window_may_cross_midnight(local_time: dt.time, inside: bool) -> None:
    rules = with_multipliers(times(200, TimeWindow(start=dt.time(22), end=dt.time(2))))
    at = dt.datetime.combine(dt.date(2026, 1, 6), local_time, tzinfo=TOKYO)

    assert points(rules, purchase(occurred_at=at)) == (20 if inside else 10)


VALID_FROM = dt.datetime(2026, 1, 5, 23, 0, tzinfo=dt.UTC)
VALID_UNTIL = dt.datetime(2026, 1, 6, 1, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("at", "applies"),
    [
        (VALID_FROM - dt.timedelta(seconds=1), False),
        (VALID_FROM, True),
        (VALID_UNTIL - dt.timedelta(seconds=1), True),
        (VALID_UNTIL, False),
    ],
)
def test_multiplier_applies_from_valid_from_until_before_valid_until(
    at: dt.datetime, applies: bool
) -> None:
    rules = with_multipliers(times(200, valid_from=VALID_FROM, valid_until=VALID_UNTIL))

    assert points(rules, purchase(occurred_at=at)) == (20 if applies else 10)


def test_multiplier_with_only_valid_from_is_open_ended() -> None:
    rules = with_multipliers(times(200, valid_from=VALID_FROM))

    assert points(rules, purchase(occurred_at=VALID_FROM + dt.timedelta(days=3650))) == 20


@pytest.mark.parametrize(
    ("category", "store", "applies"),
    [("food", "S1", True), ("food", "S2", False), ("drink", "S1", False)],
)
def test_multiplier_applies_only_when_every_condition_holds(
    category: str, store: str, applies: bool
) -> None:
    rules = with_multipliers(
        times(200, CategoryIs(categories=["food"]), StoreIs(stores=["S1"]), WeekdayIs(days=["tue"]))
    )
    facts = purchase(line(category=category), store_code=store)

    assert points(rules, facts) == (20 if applies else 10)


def test_multiplier_without_conditions_applies_to_every_line() -> None:
    rules = with_multipliers(times(150))
    facts = purchase(line("A", 1_000, category="food"), line("B", 1_000, category="drink"))

    assert points(rules, facts) == 30


def test_birthday_month_condition_uses_the_local_month() -> None:
    # 15:30 UTC on 31 January is already 1 February in Tokyo.
    rules = with_multipliers(times(200, BirthdayMonth()))
    at = dt.datetime(2026, 1, 31, 15, 30, tzinfo=dt.UTC)

    assert points(rules, purchase(occurred_at=at, birth_date=dt.date(1990, 2, 14))) == 20
    assert points(rules, purchase(occurred_at=at, birth_date=dt.date(1990, 1, 14))) == 10
    assert points(rules, purchase(occurred_at=at)) == 10


@pytest.mark.parametrize(("stacking", "expected"), [("highest", 20), ("multiply", 30)])
def test_overlapping_multipliers_stack_by_the_rules_stacking(stacking: Any, expected: int) -> None:
    rules = with_multipliers(times(200), times(150, StoreIs(stores=["S1"])), stacking=stacking)

    assert points(rules, purchase()) == expected


def test_zero_percent_multiplier_earns_nothing_on_its_lines() -> None:
    rules = with_multipliers(times(0, CategoryIs(categories=["tobacco"])))
    facts = purchase(line("A", 1_000, category="tobacco"))

    assert points(rules, facts) == 0


@pytest.mark.parametrize(("stacking", "expected"), [("highest", 20), ("multiply", 10)])
def test_a_reducing_and_a_raising_multiplier_stack_by_the_rules_stacking(
    stacking: Any, expected: int
) -> None:
    rules = with_multipliers(times(50), times(200), stacking=stacking)

    assert points(rules, purchase()) == expected


# -- fixed bonuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "expected"), [(True, 110), (False, 10)])
def test_first_purchase_bonus_is_given_only_on_the_first_purchase(
    first: bool, expected: int
) -> None:
    rules = EarningRules(bonuses=[FirstPurchaseBonus(points=100)])

    assert points(rules, purchase(first_purchase=first)) == expected


BIRTHDAY_RULES = EarningRules(bonuses=[BirthdayMonthBonus(points=500)])
IN_FEBRUARY_IN_TOKYO = dt.datetime(2026, 1, 31, 15, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(("bonus_year", "given"), [(None, True), (2025, True), (2026, False)])
def test_birthday_bonus_is_given_once_a_local_year_in_the_birth_month(
    bonus_year: int | None, given: bool
) -> None:
    facts = purchase(occurred_at=IN_FEBRUARY_IN_TOKYO, birth_date=dt.date(1990, 2, 20),
                     birthday_bonus_year=bonus_year)

    earned = purchase_points(BIRTHDAY_RULES, RULE_VERSION, facts, TOKYO)

    assert earned.points == (510 if given else 10)
    assert earned.birthday_bonus_year == (2026 if given else None)
    assert ("birthday_month" in [s.rule for s in earned.trace.steps]) is given


def test_birthday_bonus_uses_the_local_year_at_new_year() -> None:
    # 16:00 UTC on 31 December 2025 is 1 January 2026 in Tokyo: the 2025 bonus does not count.
    at = dt.datetime(2025, 12, 31, 16, 0, tzinfo=dt.UTC)
    facts = purchase(occurred_at=at, birth_date=dt.date(1990, 1, 9), birthday_bonus_year=2025)

    earned = purchase_points(BIRTHDAY_RULES, RULE_VERSION, facts, TOKYO)

    assert (earned.points, earned.birthday_bonus_year) == (510, 2026)


@pytest.mark.parametrize("birth_date", [dt.date(1990, 1, 20), None])
def test_birthday_bonus_is_not_given_outside_the_birth_month(birth_date: dt.date | None) -> None:
    facts = purchase(occurred_at=IN_FEBRUARY_IN_TOKYO, birth_date=birth_date)

    earned = purchase_points(BIRTHDAY_RULES, RULE_VERSION, facts, TOKYO)

    assert (earned.points, earned.birthday_bonus_year) == (10, None)


# -- the trace --------------------------------------------------------------------------------


def test_trace_steps_name_each_rule_applied_with_its_points() -> None:
    rules = EarningRules(bonuses=[FirstPurchaseBonus(points=100), BirthdayMonthBonus(points=500)])
    facts = purchase(line(unit_price=2_000), occurred_at=IN_FEBRUARY_IN_TOKYO,
                     first_purchase=True, birth_date=dt.date(1990, 2, 1))

    earned = purchase_points(rules, RULE_VERSION, facts, TOKYO)

    assert [(s.rule, s.points) for s in earned.trace.steps] == [
        ("base", 20), ("first_purchase", 100), ("birthday_month", 500)]
    assert earned.trace.rule_version == RULE_VERSION
    assert earned.points == 620


def test_trace_lines_carry_each_lines_share_percent_and_multiplier_names() -> None:
    rules = with_multipliers(
        times(200, CategoryIs(categories=["food"]), name="Food x2"),
        times(150, StoreIs(stores=["S1"]), name="Store S1"),
    )
    facts = purchase(line("A", 3_000, category="food"), line("B", 1_000, category="drink"),
                     total=2_000)

    trace = purchase_points(rules, RULE_VERSION, facts, TOKYO).trace

    assert [(tl.line, tl.sku, tl.category, tl.amount, tl.percent, tl.multipliers)
            for tl in trace.lines] == [
        (0, "A", "food", 1_500, "200", ["Food x2", "Store S1"]),
        (1, "B", "drink", 500, "150", ["Store S1"]),
    ]
    assert trace.steps[0].points == 37  # 15 x 2 + 5 x 1.5 = 37.5, floored
    assert "multipliers per line" in trace.steps[0].detail


def test_trace_names_the_rounding_only_when_it_changed_the_points() -> None:
    exact = purchase_points(EarningRules(), RULE_VERSION, purchase(line(unit_price=1_200)), TOKYO)
    rounded = purchase_points(EarningRules(), RULE_VERSION, purchase(line(unit_price=1_250)),
                              TOKYO)

    assert "rounded" not in exact.trace.steps[0].detail
    assert "rounded floor" in rounded.trace.steps[0].detail


CATEGORIES = ["food", "drink", "tobacco"]
SKUS = ["A", "B", "C"]
STORES = ["S1", "S2"]

conditions = st.one_of(
    st.builds(CategoryIs, categories=st.lists(st.sampled_from(CATEGORIES), min_size=1)),
    st.builds(SkuIs, skus=st.lists(st.sampled_from(SKUS), min_size=1)),
    st.builds(StoreIs, stores=st.lists(st.sampled_from(STORES), min_size=1)),
    st.builds(WeekdayIs, days=st.lists(st.sampled_from(WEEKDAYS), min_size=1)),
    st.tuples(st.times(), st.times()).filter(lambda t: t[0] != t[1]).map(
        lambda t: TimeWindow(start=t[0], end=t[1])),
    st.just(BirthdayMonth()),
)
instants = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1),
                        timezones=st.just(dt.UTC)).map(instant)


@st.composite
def earning_rules(draw: st.DrawFn) -> EarningRules:
    multipliers = [
        Multiplier(name=f"m{i}", percent=draw(st.integers(0, 1_000)),
                   when=draw(st.lists(conditions, max_size=3)),
                   valid_from=draw(st.none() | instants), valid_until=draw(st.none() | instants))
        for i in range(draw(st.integers(0, 5)))
    ]
    bonuses = draw(st.lists(st.one_of(
        st.builds(FirstPurchaseBonus, points=st.integers(0, 1_000)),
        st.builds(BirthdayMonthBonus, points=st.integers(0, 1_000)),
    ), max_size=2))
    return EarningRules(
        base=BaseRate(points=draw(st.integers(0, 10)), per_amount=draw(st.integers(1, 1_000))),
        rounding=draw(st.sampled_from(["floor", "round", "ceil"])),
        stacking=draw(st.sampled_from(["highest", "multiply"])),
        multipliers=multipliers, bonuses=bonuses, point_value=draw(st.integers(1, 5)))


purchase_lines = st.builds(
    PurchaseLine, sku=st.sampled_from(SKUS), category=st.sampled_from(CATEGORIES),
    unit_price=st.integers(0, 100_000), quantity=st.integers(1, 10))
purchases = st.builds(
    PurchaseFacts, occurred_at=instants, store_code=st.sampled_from(STORES),
    total=st.integers(0, 1_000_000), lines=st.lists(purchase_lines, min_size=1, max_size=8),
    redeem_points=st.integers(0, 100_000), first_purchase=st.booleans(),
    birth_date=st.none() | st.dates(), birthday_bonus_year=st.none() | st.integers(2019, 2036))


def exactly_rounded(value: Fraction, mode: str) -> int:
    """``value`` rounded as ``mode`` says (a half rounds up), in whole-number arithmetic on its
    numerator and denominator: an oracle worked out apart from the module's own rounding."""
    n, d = value.numerator, value.denominator  # a Fraction's denominator is positive
    return {"floor": n // d, "ceil": -(-n // d), "round": (2 * n + d) // (2 * d)}[mode]


@given(rules=earning_rules(), facts=purchases)
def test_trace_explains_every_point_of_any_purchase(
    rules: EarningRules, facts: PurchaseFacts
) -> None:
    earned = purchase_points(rules, RULE_VERSION, facts, TOKYO)
    trace = earned.trace

    assert sum(step.points for step in trace.steps) == earned.points
    assert trace.steps[0].rule == "base"
    assert [tl.line for tl in trace.lines] == list(range(len(facts.lines)))
    assert sum(tl.amount for tl in trace.lines) == paid_amount(
        rules, facts.total, facts.redeem_points)
    exact = (sum((tl.amount * Fraction(tl.percent) for tl in trace.lines), Fraction(0))
             * rules.base.points
             / (rules.base.per_amount * 100))
    assert trace.steps[0].points == exactly_rounded(exact, rules.rounding)
    percent_of = {m.name: m.percent for m in rules.multipliers}
    for tl in trace.lines:
        applied = [percent_of[name] for name in tl.multipliers]
        if not applied:
            assert tl.percent == "100"
        elif rules.stacking == "highest":
            assert tl.percent == str(max(applied))
        else:
            # Stacked multipliers are multiplied exactly; the trace shows the exact percent.
            product = Fraction(math.prod(applied), 100 ** (len(applied) - 1))
            assert Fraction(tl.percent) == product


# -- engagement actions -----------------------------------------------------------------------


def test_site_visit_earns_one_point_once_a_day_by_default() -> None:
    first = action_points(EarningRules(), RULE_VERSION, "site_visit", None, ActionCounts())
    second = action_points(EarningRules(), RULE_VERSION, "site_visit", None,
                           ActionCounts(today=1, this_month=1))

    assert first.points == 1
    assert [(s.rule, s.points) for s in first.trace.steps] == [("actions.site_visit", 1)]
    assert second.points == 0
    assert second.reason == "site_visit: limit of 1 a day reached"


def test_sns_share_earns_five_points_up_to_three_a_day() -> None:
    url = "https://example.com/post/1"

    third = action_points(EarningRules(), RULE_VERSION, "sns_share", url, ActionCounts(today=2))
    fourth = action_points(EarningRules(), RULE_VERSION, "sns_share", url, ActionCounts(today=3))

    assert third.points == 5
    assert url in third.reason
    assert fourth.points == 0
    assert "limit of 3 a day" in fourth.reason


def test_sns_share_earns_once_per_target() -> None:
    award = action_points(EarningRules(), RULE_VERSION, "sns_share", "https://example.com/a",
                          ActionCounts(today=1, this_month=1, for_target=1))

    assert award.points == 0
    assert award.reason == "sns_share: limit of 1 per target reached"
    assert [(s.rule, s.points) for s in award.trace.steps] == [("actions.sns_share", 0)]


def test_sns_share_without_a_target_is_refused() -> None:
    with pytest.raises(InvalidInput) as raised:
        action_points(EarningRules(), RULE_VERSION, "sns_share", None, ActionCounts())

    assert raised.value.field == "target"


def test_monthly_cap_stops_awards_for_the_rest_of_the_month() -> None:
    rules = EarningRules(actions={"review": ActionRule(points=10, per_month=5)})

    fifth = action_points(rules, RULE_VERSION, "review", None, ActionCounts(this_month=4))
    sixth = action_points(rules, RULE_VERSION, "review", None, ActionCounts(this_month=5))

    assert fifth.points == 10
    assert (sixth.points, sixth.reason) == (0, "review: limit of 5 a month reached")


def test_uncapped_action_earns_every_time() -> None:
    rules = EarningRules(actions={"event_attendance": ActionRule(points=50)})

    award = action_points(rules, RULE_VERSION, "event_attendance", None,
                          ActionCounts(today=1_000, this_month=1_000, for_target=1_000))

    assert award.points == 50


def test_unknown_action_is_refused_with_unknown_action() -> None:
    with pytest.raises(InvalidInput) as raised:
        action_points(EarningRules(), RULE_VERSION, "moon_landing", None, ActionCounts())

    assert raised.value.code == "unknown_action"


# -- expiry and the return window -------------------------------------------------------------


@pytest.mark.parametrize(
    "earned_at",
    [tokyo(2026, 1, 31, 10, 0), tokyo(2026, 1, 31, 0, 0), tokyo(2026, 1, 31, 23, 59, 59),
     dt.datetime(2026, 1, 30, 15, 0, tzinfo=dt.UTC)],
)
def test_rolling_expiry_ends_at_the_start_of_the_day_after_the_same_date_a_year_later(
    earned_at: dt.datetime
) -> None:
    assert expires_at(RollingExpiry(), earned_at, TOKYO) == tokyo(2027, 2, 1)


@pytest.mark.parametrize(
    ("earned", "months", "expires"),
    [
        ((2026, 1, 31), 1, (2026, 3, 1)),
        ((2027, 1, 31), 13, (2028, 3, 1)),
        ((2028, 1, 30), 1, (2028, 3, 1)),
        ((2028, 2, 29), 12, (2029, 3, 1)),
        ((2026, 3, 31), 1, (2026, 5, 1)),
        ((2026, 12, 15), 1, (2027, 1, 16)),
        ((2026, 6, 10), 30, (2028, 12, 11)),
    ],
)
def test_rolling_expiry_clamps_to_the_end_of_a_shorter_month(
    earned: tuple[int, int, int], months: int, expires: tuple[int, int, int]
) -> None:
    earned_at = tokyo(*earned, 12, 0)

    assert expires_at(RollingExpiry(months=months), earned_at, TOKYO) == tokyo(*expires)


@pytest.mark.parametrize(
    ("earned_at", "extra_periods", "expires"),
    [
        (tokyo(2026, 5, 10, 12, 0), 1, tokyo(2028, 4, 1)),
        (tokyo(2026, 3, 10, 12, 0), 1, tokyo(2027, 4, 1)),
        (tokyo(2026, 4, 1, 0, 0), 1, tokyo(2028, 4, 1)),
        (tokyo(2026, 3, 31, 23, 59), 1, tokyo(2027, 4, 1)),
        (dt.datetime(2026, 3, 31, 15, 30, tzinfo=dt.UTC), 1, tokyo(2028, 4, 1)),
        (tokyo(2026, 5, 10, 12, 0), 0, tokyo(2027, 4, 1)),
        (tokyo(2027, 1, 10, 12, 0), 0, tokyo(2027, 4, 1)),
    ],
)
def test_period_end_expiry_ends_when_the_period_after_the_extra_ones_begins(
    earned_at: dt.datetime, extra_periods: int, expires: dt.datetime
) -> None:
    expiry = PeriodEndExpiry(first_month=4, extra_periods=extra_periods)

    assert expires_at(expiry, earned_at, TOKYO) == expires


def test_period_end_expiry_with_calendar_years() -> None:
    expiry = PeriodEndExpiry(first_month=1, extra_periods=1)

    assert expires_at(expiry, tokyo(2026, 12, 31, 23, 0), TOKYO) == tokyo(2028, 1, 1)


def test_no_expiry_means_points_never_expire() -> None:
    assert expires_at(NoExpiry(), TUESDAY_MORNING, TOKYO) is None


@given(earned_at=instants, months=st.integers(1, 120))
def test_rolling_expiry_is_always_a_local_midnight_after_the_earning(
    earned_at: dt.datetime, months: int
) -> None:
    expires = expires_at(RollingExpiry(months=months), earned_at, TOKYO)

    assert expires is not None
    assert expires > earned_at
    assert expires.astimezone(TOKYO).time() == dt.time(0)


@pytest.mark.parametrize(("pending_days", "available"), [(0, TUESDAY_MORNING),
                                                          (14, TUESDAY_MORNING + dt.timedelta(14))])
def test_points_become_available_after_the_pending_days(
    pending_days: int, available: dt.datetime
) -> None:
    rules = EarningRules(pending_days=pending_days)

    assert available_at(rules, TUESDAY_MORNING) == available


def test_stacked_multipliers_multiply_exactly_and_round_once() -> None:
    rules = with_multipliers(times(105, name="a"), times(105, name="b"), stacking="multiply")
    earned = purchase_points(rules, RULE_VERSION, purchase(line("A", 1_000_000),
                                                         total=1_000_000), TOKYO)
    assert earned.trace.lines[0].percent == "110.25"
    assert earned.points == 11_025


def test_a_time_window_that_starts_where_it_ends_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="start and end to differ"):
        msgspec.json.decode(b'{"type": "time_window", "start": "10:00:00", "end": "10:00:00"}',
                            type=TimeWindow)


# -- bounds and the programme's ceiling --------------------------------------------------------

INT64_MAX = 2**63 - 1


def largest_purchase(**facts: Any) -> PurchaseFacts:
    return purchase(line("A", LARGEST_AMOUNT), total=LARGEST_AMOUNT, **facts)


def test_a_purchase_earns_at_most_the_ceiling_and_the_trace_shows_it_applied() -> None:
    rules = EarningRules(base=BaseRate(points=1, per_amount=1))

    earned = earning.purchase_points(rules, RULE_VERSION, purchase(line(unit_price=5_000_000)),
                                     TOKYO, ceiling=1_000_000)

    assert earned.points == 1_000_000
    assert [(s.rule, s.points) for s in earned.trace.steps] == [
        ("base", 5_000_000), ("ceiling", -4_000_000)]
    assert earned.trace.steps[-1].detail == "at most 1000000 points per purchase in this programme"


def test_a_purchase_at_or_under_the_ceiling_has_no_ceiling_step() -> None:
    rules = EarningRules(base=BaseRate(points=1, per_amount=1))

    earned = earning.purchase_points(rules, RULE_VERSION, purchase(line(unit_price=1_000_000)),
                                     TOKYO, ceiling=1_000_000)

    assert earned.points == 1_000_000
    assert [s.rule for s in earned.trace.steps] == ["base"]


def test_the_ceiling_caps_bonuses_tiers_and_boosts_too() -> None:
    rules = EarningRules(bonuses=[FirstPurchaseBonus(points=900)])
    gold = Tier(code="gold", name="Gold", threshold=0, multiplier_percent=300)
    facts = purchase(line(unit_price=10_000), first_purchase=True, tier=gold,
                     boosts=(("campaign", "double", 200),))

    earned = earning.purchase_points(rules, RULE_VERSION, facts, TOKYO, ceiling=1_000)

    assert [(s.rule, s.points) for s in earned.trace.steps] == [
        ("base", 100), ("tier", 200), ("campaign", 100), ("first_purchase", 900),
        ("ceiling", -300)]
    assert earned.points == 1_000


def test_an_action_earns_at_most_the_ceiling_and_the_trace_shows_it_applied() -> None:
    rules = EarningRules(actions={"review": ActionRule(points=50_000)})

    award = earning.action_points(rules, RULE_VERSION, "review", None, ActionCounts(),
                                  ceiling=10_000)

    assert award.points == 10_000
    assert [(s.rule, s.points) for s in award.trace.steps] == [
        ("actions.review", 50_000), ("ceiling", -40_000)]
    assert award.trace.steps[-1].detail == "at most 10000 points per action in this programme"


def test_the_default_rules_are_far_inside_the_range() -> None:
    assert worst_case_points(EarningRules()) == LARGEST_AMOUNT // 100
    check_points_in_range(EarningRules())


@pytest.mark.parametrize(
    ("rules", "field", "change"),
    [
        # The rule set, brought within each number's bounds: still 10^20 in the worst case.
        (EarningRules(base=BaseRate(points=10_000, per_amount=1), stacking="multiply",
                      multipliers=[Multiplier(name=f"m{i}", percent=10_000) for i in range(3)]),
         "base", "lower base.points or raise base.per_amount"),
        (EarningRules(base=BaseRate(points=1, per_amount=1), stacking="multiply",
                      multipliers=[Multiplier(name=f"m{i}", percent=200) for i in range(200)]),
         "multipliers", 'stack them by "highest"'),
        (EarningRules(base=BaseRate(points=10, per_amount=1),
                      multipliers=[Multiplier(name="x10", percent=1_000)],
                      tiers=TierProgramme(levels=[Tier(code="top", name="Top", threshold=0,
                                                     multiplier_percent=10_000)])),
         "tiers", "lower the multiplier_percent of the top tier"),
    ],
)
def test_rules_a_purchase_could_earn_out_of_range_under_are_refused_naming_what_to_change(
    rules: EarningRules, field: str, change: str
) -> None:
    assert worst_case_points(rules) > MAX_WORST_CASE_POINTS

    with pytest.raises(InvalidInput) as raised:
        check_points_in_range(rules)

    assert (raised.value.code, raised.value.field) == ("points_out_of_range", field)
    assert f"one purchase of {LARGEST_AMOUNT} could earn" in raised.value.detail
    assert raised.value.detail.endswith(change)


def test_rules_at_the_edge_of_the_range_are_accepted() -> None:
    rules = EarningRules(base=BaseRate(points=1_000, per_amount=1))

    assert worst_case_points(rules) == MAX_WORST_CASE_POINTS
    check_points_in_range(rules)


def test_a_multiplier_beyond_x100_or_a_rate_beyond_10000_points_is_refused_by_the_schema() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"<= 10000 - at `\$\.multipliers\[0\]"):
        msgspec.convert({"multipliers": [{"name": "x1000", "percent": 100_000}]}, EarningRules)
    with pytest.raises(msgspec.ValidationError, match=r"<= 10000 - at `\$\.base\.points`"):
        msgspec.convert({"base": {"points": 1_000_000, "per_amount": 1}}, EarningRules)
    with pytest.raises(msgspec.ValidationError, match=r"<= 1000000 - at `\$\.bonuses\[0\]"):
        msgspec.convert({"bonuses": [{"type": "first_purchase", "points": 10**8}]},
                        EarningRules)


def test_the_programme_ceilings_default_to_the_settings_defaults() -> None:
    defaults = Settings()
    programme = Programme(currency="JPY", timezone=TOKYO)

    assert programme == Programme.from_settings(defaults)
    assert Programme.from_settings(Settings(max_points_per_purchase=5, max_points_per_action=2)
                                   ).max_points_per_purchase == 5


# Rule sets anywhere within the bounds of schemas/rules.py, big numbers made likely.
def bounded(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(low, high), st.sampled_from([low, high]))


@st.composite
def rules_within_bounds(draw: st.DrawFn) -> EarningRules:
    multipliers = [
        Multiplier(name=f"m{i}", percent=draw(bounded(0, 10_000)),
                   when=draw(st.lists(conditions, max_size=2)))
        for i in range(draw(st.integers(0, 12)))
    ]
    levels = [Tier(code=f"t{i}", name=f"T{i}", threshold=i * 1_000,
                   multiplier_percent=draw(bounded(100, 10_000)))
              for i in range(draw(st.integers(0, 3)))]
    return EarningRules(
        base=BaseRate(points=draw(bounded(0, 10_000)), per_amount=draw(bounded(1, 100_000_000))),
        rounding=draw(st.sampled_from(["floor", "round", "ceil"])),
        stacking=draw(st.sampled_from(["highest", "multiply"])),
        multipliers=multipliers,
        bonuses=draw(st.lists(st.builds(FirstPurchaseBonus, points=bounded(0, 1_000_000)),
                              max_size=20)),
        tiers=TierProgramme(levels=levels))


@st.composite
def any_purchase(draw: st.DrawFn, rules: EarningRules) -> PurchaseFacts:
    """Up to the largest amount a till may send, at any tier, with up to 20 coupons' and 20
    campaigns' multipliers at the most they may be."""
    lines = draw(st.lists(purchase_lines, min_size=1, max_size=5))
    boosts = tuple(draw(st.lists(st.tuples(st.sampled_from(["campaign", "coupon"]),
                                           st.just("boost"), bounded(101, 10_000)),
                                 max_size=40)))
    return PurchaseFacts(
        occurred_at=draw(instants), store_code=draw(st.sampled_from(STORES)),
        total=draw(bounded(0, LARGEST_AMOUNT)), lines=lines, first_purchase=True,
        tier=draw(st.none() | (st.sampled_from(rules.tiers.levels) if rules.tiers.levels
                               else st.none())), boosts=boosts)


@given(data=st.data(), ceiling=bounded(1, 1_000_000_000))
def test_no_rule_set_within_bounds_earns_beyond_the_ceiling_or_out_of_int64(
    data: st.DataObject, ceiling: int
) -> None:
    rules = data.draw(rules_within_bounds())
    facts = data.draw(any_purchase(rules))

    earned = earning.purchase_points(rules, RULE_VERSION, facts, TOKYO, ceiling=ceiling)

    assert 0 <= earned.points <= ceiling
    assert sum(step.points for step in earned.trace.steps) == earned.points
    try:
        check_points_in_range(rules)
    except InvalidInput:
        return  # refused when saved or simulated; what it earns is still capped (above)
    assert all(abs(step.points) <= INT64_MAX for step in earned.trace.steps)


@given(data=st.data())
def test_the_worst_case_bounds_what_any_purchase_earns_before_the_ceiling(
    data: st.DataObject
) -> None:
    rules = data.draw(rules_within_bounds())
    facts = dataclasses.replace(data.draw(any_purchase(rules)), boosts=())

    earned = earning.purchase_points(rules, RULE_VERSION, facts, TOKYO, ceiling=10**100)

    assert earned.points <= worst_case_points(rules)


def test_the_worst_case_purchase_under_the_most_generous_rules_earns_the_ceiling() -> None:
    # At the edge of the range: 10^13 before campaigns, and 40 multipliers of ×100 on top.
    rules = EarningRules(base=BaseRate(points=1_000, per_amount=1), rounding="ceil",
                         bonuses=[FirstPurchaseBonus(points=0)])
    check_points_in_range(rules)
    boosts = tuple(("campaign", f"c{i}", 10_000) for i in range(40))

    earned = earning.purchase_points(rules, RULE_VERSION,
                                     largest_purchase(first_purchase=True, boosts=boosts),
                                     TOKYO, ceiling=1_000_000_000)

    assert earned.points == 1_000_000_000
    assert max(abs(step.points) for step in earned.trace.steps) < INT64_MAX // 200


@given(data=st.data(), names=st.lists(st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), max_size=30), min_size=1, max_size=5))
def test_the_trace_gives_back_the_campaign_and_coupon_multipliers_a_purchase_had(
    data: st.DataObject, names: list[str]
) -> None:
    """What the backtest reads from a recorded purchase (loyalty/insights/backtest.py): every
    multiplier besides the rules' that changed its points, whatever its name (colons and
    percent signs included), so the same rules re-earn exactly what the trace says."""
    rules = data.draw(rules_within_bounds())
    facts = data.draw(any_purchase(rules))
    boosts = tuple((rule, name, percent) for (rule, _, percent), name
                   in zip(facts.boosts, itertools.cycle(names)))
    facts = dataclasses.replace(facts, boosts=boosts)
    earned = earning.purchase_points(rules, RULE_VERSION, facts, TOKYO, ceiling=10**18)

    recorded = earning.recorded_boosts(earned.trace)

    assert recorded == boosts
    again = dataclasses.replace(facts, boosts=recorded)
    assert earning.purchase_points(rules, RULE_VERSION, again, TOKYO,
                                   ceiling=10**18).points == earned.points
