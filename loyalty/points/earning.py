"""How many points a purchase or an action earns, and when points expire: pure rules, no I/O.

Every result carries its trace, the steps a member or a marketer reads to see why. Arithmetic is
exact throughout: amounts in minor units, multipliers in percent, fractions (never floats) in
between, and one rounding at the end. What a purchase or an action earns never exceeds the
programme's ceiling (a setting), applied last and shown as a step of its own, so no rule set,
however large, can write more to the ledger than it holds.
"""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import get_args
from zoneinfo import ZoneInfo

from loyalty.core.errors import InvalidInput
from loyalty.core.programme import Programme
from schemas.points import Money, PurchaseLine, Simulation, SimulationResult
from schemas.rules import (
    WEEKDAYS,
    BirthdayMonth,
    BirthdayMonthBonus,
    CategoryIs,
    Condition,
    EarningRules,
    Expiry,
    FirstPurchaseBonus,
    Multiplier,
    NoExpiry,
    PeriodEndExpiry,
    RollingExpiry,
    SkuIs,
    StoreIs,
    Tier,
    TimeWindow,
    Trace,
    TraceLine,
    TraceStep,
    WeekdayIs,
)

# The largest amount a till may send: what the worst case of a rule set is reckoned on.
LARGEST_AMOUNT: int = get_args(Money)[1].le
# The most one purchase may earn under a rule set before the programme's ceiling. Far above
# anything a programme means to give (a rate of 1 point per 1 with ×1,000 in multipliers on the
# largest amount is 10^13), and far below bigint's 9.2 × 10^18 even when campaigns and coupons
# (×100 each at most) multiply it in the trace.
MAX_WORST_CASE_POINTS = 10**13


@dataclass(frozen=True)
class PurchaseFacts:
    """What the rules may look at: the purchase, and the little they need of the member."""

    occurred_at: dt.datetime
    store_code: str
    total: int
    lines: Sequence[PurchaseLine]
    redeem_points: int = 0
    first_purchase: bool = False
    birth_date: dt.date | None = None
    birthday_bonus_year: int | None = None
    # The member's tier before this purchase: a purchase that reaches a tier earns at the
    # tier it started in, the new tier's multiplier applies from the next purchase.
    tier: Tier | None = None
    # Points multipliers of this purchase besides the rules': coupons redeemed on it and
    # campaigns treating the member, as (rule, name, percent of the base).
    boosts: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class Earned:
    points: int
    trace: Trace
    birthday_bonus_year: int | None = None


@dataclass(frozen=True)
class ActionCounts:
    """Awards of this action already made: today, this month, for this target."""

    today: int = 0
    this_month: int = 0
    for_target: int = 0


@dataclass(frozen=True)
class ActionAward:
    points: int
    reason: str
    trace: Trace


def business_date(instant: dt.datetime, tz: ZoneInfo) -> dt.date:
    return instant.astimezone(tz).date()


def paid_amount(rules: EarningRules, total: int, redeem_points: int) -> int:
    """The part of ``total`` paid with money: points spent earn no points."""
    return max(0, total - redeem_points * rules.point_value)


def redeemable_points(rules: EarningRules, total: int, available: int) -> int:
    """The most points a purchase of ``total`` can take: the balance, or the whole bill."""
    return max(0, min(available, total // rules.point_value))


def purchase_points(
    rules: EarningRules, version: int, facts: PurchaseFacts, tz: ZoneInfo, *, ceiling: int
) -> Earned:
    """Points for a purchase under ``rules``, at most ``ceiling``, with the trace of how they
    were reached."""
    local = facts.occurred_at.astimezone(tz)
    paid = paid_amount(rules, facts.total, facts.redeem_points)
    shares = allocate(paid, [line.quantity * line.unit_price for line in facts.lines])
    steps: list[TraceStep] = []
    trace_lines: list[TraceLine] = []
    units = Fraction(0)
    for index, (line, share) in enumerate(zip(facts.lines, shares, strict=True)):
        applied = [m for m in rules.multipliers
                   if _active(m, facts.occurred_at) and _matches(m.when, line, facts, local)]
        percent = _combine([m.percent for m in applied], rules.stacking)
        units += share * percent
        trace_lines.append(TraceLine(line=index, sku=line.sku, category=line.category,
                                     amount=share, percent=_decimal(percent),
                                     multipliers=[m.name for m in applied]))
    exact = units * rules.base.points / (rules.base.per_amount * 100)
    base_points = _round(exact, rules.rounding)
    detail = (f"{paid} paid" + (f" ({facts.redeem_points} points used do not earn)"
                                if facts.redeem_points else "")
              + f": {rules.base.points} per {rules.base.per_amount}")
    if any(line.percent != "100" for line in trace_lines):
        detail += ", multipliers per line"
    detail += f", rounded {rules.rounding}" if exact.denominator != 1 else ""
    steps.append(TraceStep(rule="base", detail=detail, points=base_points))
    points = base_points
    if facts.tier is not None and facts.tier.multiplier_percent != 100:
        with_tier = _round(exact * facts.tier.multiplier_percent / 100, rules.rounding)
        steps.append(TraceStep(
            rule="tier", detail=f"{facts.tier.name} tier: "
            f"{_decimal(Fraction(facts.tier.multiplier_percent))}% of the base",
            points=with_tier - base_points))
        points = with_tier
    for rule, name, boost in facts.boosts:
        extra = _round(exact * (boost - 100) / 100, rules.rounding)
        steps.append(TraceStep(rule=rule, detail=_boost_detail(name, boost), points=extra))
        points += extra
    birthday_year = None
    for bonus in rules.bonuses:
        match bonus:
            case FirstPurchaseBonus(points=bonus_points) if facts.first_purchase:
                steps.append(TraceStep(rule="first_purchase", detail="first purchase bonus",
                                       points=bonus_points))
                points += bonus_points
            case BirthdayMonthBonus(points=bonus_points) if (
                facts.birth_date is not None and facts.birth_date.month == local.month
                and facts.birthday_bonus_year != local.year
            ):
                steps.append(TraceStep(rule="birthday_month",
                                       detail=f"birthday month bonus {local.year}",
                                       points=bonus_points))
                points += bonus_points
                birthday_year = local.year
    if points > ceiling:
        steps.append(_ceiling_step(ceiling, points, "purchase"))
        points = ceiling
    return Earned(points, Trace(rule_version=version, steps=steps, lines=trace_lines),
                  birthday_year)


def purchase_earning(
    rules: EarningRules, version: int, facts: PurchaseFacts, tz: ZoneInfo, *, ceiling: int,
    recorded_at: dt.datetime,
) -> Earned:
    """What the till credits for a purchase recorded at ``recorded_at``: its
    ``purchase_points``, or none if they expired before it was recorded. The one evaluation
    of a purchase, for the till and for the backtest of a rule set."""
    earned = purchase_points(rules, version, facts, tz, ceiling=ceiling)
    expiry = expires_at(rules.expiry, facts.occurred_at, tz)
    if expiry is not None and expiry <= recorded_at:
        earned = expired_on_arrival(earned, expiry, tz)
    return earned


# Campaigns and coupons that multiply a purchase's points are not part of the rules: the trace
# says which did, and by how much, in a step of their own.
BOOST_RULES = ("campaign", "coupon")
_BOOST_DETAIL = re.compile(r"(?s)(.*): ([0-9]{1,9})% of the base")


def _boost_detail(name: str, boost: int) -> str:
    return f"{name}: {boost}% of the base"


def recorded_boosts(trace: Trace) -> tuple[tuple[str, str, int], ...]:
    """The campaign and coupon multipliers a purchase's trace records, as ``PurchaseFacts``
    takes them."""
    boosts = []
    for step in trace.steps:
        matched = _BOOST_DETAIL.fullmatch(step.detail) if step.rule in BOOST_RULES else None
        if matched is not None:
            boosts.append((step.rule, matched[1], int(matched[2])))
    return tuple(boosts)


def action_points(
    rules: EarningRules, version: int, action: str, target: str | None, counts: ActionCounts,
    *, ceiling: int,
) -> ActionAward:
    """Points for an engagement action (at most ``ceiling``), or 0 with the reason when a cap
    is reached."""
    rule = rules.actions.get(action)
    if rule is None:
        raise InvalidInput(f"no action {action!r} earns points in this programme",
                           field="type", code="unknown_action")
    if rule.requires_target and target is None:
        raise InvalidInput(f"{action} needs a target (what was shared or reviewed)",
                           field="target")
    caps = [
        (rule.per_day, counts.today, "a day"),
        (rule.per_month, counts.this_month, "a month"),
        (rule.per_target if target is not None else None, counts.for_target, "per target"),
    ]
    for cap, used, period in caps:
        if cap is not None and used >= cap:
            reason = f"{action}: limit of {cap} {period} reached"
            trace = Trace(rule_version=version,
                          steps=[TraceStep(rule=f"actions.{action}", detail=reason, points=0)])
            return ActionAward(0, reason, trace)
    reason = f"{action}" + (f" ({target})" if target else "")
    steps = [TraceStep(rule=f"actions.{action}", detail=f"{rule.points} points per {action}",
                       points=rule.points)]
    points = rule.points
    if points > ceiling:
        steps.append(_ceiling_step(ceiling, points, "action"))
        points = ceiling
    return ActionAward(points, reason, Trace(rule_version=version, steps=steps))


def simulate(rules: EarningRules, version: int, simulation: Simulation, programme: Programme,
             now: dt.datetime) -> SimulationResult:
    """Points and trace for the simulated purchase or action under ``rules`` (``version``),
    as the till or the action endpoint would reckon them at ``now``; nothing is written."""
    if (simulation.purchase is None) == (simulation.action is None):
        raise InvalidInput("simulate either a purchase or an action", field="purchase")
    if simulation.purchase is not None:
        p = simulation.purchase
        occurred_at = p.occurred_at or now
        facts = PurchaseFacts(
            occurred_at=occurred_at, store_code=p.store_code, total=p.total, lines=p.lines,
            redeem_points=p.redeem_points, first_purchase=p.first_purchase,
            birth_date=p.birth_date,
            birthday_bonus_year=occurred_at.astimezone(programme.timezone).year
            if p.birthday_bonus_given_this_year else None,
            tier=next((t for t in rules.tiers.levels if t.code == p.tier), None),
        )
        earned = purchase_points(rules, version, facts, programme.timezone,
                                 ceiling=programme.max_points_per_purchase)
        return SimulationResult(points=earned.points, trace=earned.trace)
    assert simulation.action is not None
    a = simulation.action
    award = action_points(rules, version, a.type, a.target,
                          ActionCounts(a.today, a.this_month, a.for_target),
                          ceiling=programme.max_points_per_action)
    return SimulationResult(points=award.points, trace=award.trace, reason=award.reason)


def worst_case_points(rules: EarningRules) -> int:
    """The most one purchase could earn under ``rules`` before the programme's ceiling: the
    largest amount a till may send, every multiplier above 100% on the same line, the highest
    tier and every bonus (campaigns and coupons are not part of the rules)."""
    return _worst_case(rules, multipliers=True, tiers=True)


def check_points_in_range(rules: EarningRules) -> None:
    """Refuse rules under which one purchase could earn more than ``MAX_WORST_CASE_POINTS``,
    naming the part of the rules to change."""
    worst = worst_case_points(rules)
    if worst <= MAX_WORST_CASE_POINTS:
        return
    if _worst_case(rules, multipliers=False, tiers=False) > MAX_WORST_CASE_POINTS:
        field, change = "base", "lower base.points or raise base.per_amount"
    elif _worst_case(rules, multipliers=True, tiers=False) > MAX_WORST_CASE_POINTS:
        field = "multipliers"
        change = ("lower the multipliers' percent, or use fewer, or stack them by "
                  '"highest"' if rules.stacking == "multiply"
                  else "lower the percent of the highest multiplier")
    else:
        field, change = "tiers", "lower the multiplier_percent of the top tier"
    raise InvalidInput(
        f"under these rules one purchase of {LARGEST_AMOUNT} could earn {_figure(worst)} "
        f"points, more than the {_figure(MAX_WORST_CASE_POINTS)} any rule set may allow: "
        f"{change}", field=field, code="points_out_of_range")


def expires_at(expiry: Expiry, earned_at: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    """When points earned at ``earned_at`` expire: always at a business-day boundary."""
    day = business_date(earned_at, tz)
    match expiry:
        case NoExpiry():
            return None
        case RollingExpiry(months=months):
            last_day = add_months(day, months)
            return midnight(last_day + dt.timedelta(days=1), tz)
        case PeriodEndExpiry(first_month=first_month, extra_periods=extra):
            start_year = day.year if day.month >= first_month else day.year - 1
            return midnight(dt.date(start_year + 1 + extra, first_month, 1), tz)
    raise AssertionError(f"unknown expiry {expiry!r}")


def available_at(rules: EarningRules, earned_at: dt.datetime) -> dt.datetime:
    """Points stay pending through the return window."""
    return earned_at + dt.timedelta(days=rules.pending_days)


# -- helpers ---------------------------------------------------------------------------------


def expired_on_arrival(earned: Earned, expired: dt.datetime, tz: ZoneInfo) -> Earned:
    """What a purchase recorded after its points' expiry earns: nothing, and the trace says why
    (a till's late upload, a backdated receipt). Crediting points already expired would show
    them as available until the next posting took them away."""
    if earned.points == 0:
        return earned
    step = TraceStep(rule="expired", points=-earned.points,
                     detail=f"points of this purchase expired on "
                            f"{business_date(expired, tz).isoformat()}, before it was recorded")
    trace = Trace(rule_version=earned.trace.rule_version, steps=[*earned.trace.steps, step],
                  lines=earned.trace.lines)
    return Earned(0, trace, earned.birthday_bonus_year)


def _ceiling_step(ceiling: int, reached: int, per: str) -> TraceStep:
    return TraceStep(rule="ceiling",
                     detail=f"at most {ceiling} points per {per} in this programme",
                     points=ceiling - reached)


def _worst_case(rules: EarningRules, *, multipliers: bool, tiers: bool) -> int:
    raising = [m.percent for m in rules.multipliers if m.percent > 100] if multipliers else []
    tier = max((level.multiplier_percent for level in rules.tiers.levels), default=100) \
        if tiers else 100
    exact = (LARGEST_AMOUNT * _combine(raising, rules.stacking) * rules.base.points * tier
             / (rules.base.per_amount * 100 * 100))
    return math.ceil(exact) + sum(bonus.points for bonus in rules.bonuses)


def _figure(points: int) -> str:
    """A count of points as a person reads it: exact up to 10^15, its power of ten beyond."""
    return str(points) if points < 10**15 else f"about 10^{math.floor(math.log10(points))}"


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` exactly (largest remainders)."""
    weight_sum = sum(weights)
    if weight_sum == 0:
        return [total] + [0] * (len(weights) - 1)
    shares = [total * w // weight_sum for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i))
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _combine(percents: list[int], stacking: str) -> Fraction:
    """The line's percent, exact: stacked multipliers are multiplied without rounding."""
    if not percents:
        return Fraction(100)
    if stacking == "highest":
        return Fraction(max(percents))
    combined = Fraction(100)
    for percent in percents:
        combined = combined * percent / 100
    return combined


def _round(value: Fraction, mode: str) -> int:
    if mode == "floor":
        return math.floor(value)
    if mode == "ceil":
        return math.ceil(value)
    return math.floor(value + Fraction(1, 2))


def _decimal(value: Fraction) -> str:
    """A percent for the trace, exact: products of whole percents always end (110.25)."""
    with decimal.localcontext() as context:
        context.prec = 400
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _active(multiplier: Multiplier, instant: dt.datetime) -> bool:
    if multiplier.valid_from is not None and instant < multiplier.valid_from:
        return False
    return multiplier.valid_until is None or instant < multiplier.valid_until


def _matches(conditions: list[Condition], line: PurchaseLine, facts: PurchaseFacts,
             local: dt.datetime) -> bool:
    return all(_holds(condition, line, facts, local) for condition in conditions)


def _holds(condition: Condition, line: PurchaseLine, facts: PurchaseFacts,
           local: dt.datetime) -> bool:
    match condition:
        case CategoryIs(categories=categories):
            return line.category in categories
        case SkuIs(skus=skus):
            return line.sku in skus
        case StoreIs(stores=stores):
            return facts.store_code in stores
        case WeekdayIs(days=days):
            return WEEKDAYS[local.weekday()] in days
        case TimeWindow(start=start, end=end):
            now = local.time().replace(tzinfo=None)
            return start <= now < end if start <= end else now >= start or now < end
        case BirthdayMonth():
            return facts.birth_date is not None and facts.birth_date.month == local.month
    raise AssertionError(f"unknown condition {condition!r}")


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` later (or earlier), the month's last day where it is shorter."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The moment ``day`` begins in the business time zone, in UTC."""
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)
