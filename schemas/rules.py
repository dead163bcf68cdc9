"""Earning rules as data: what staff edit, what each ledger entry's trace points back to.

A rule set is one versioned document. Amounts are integers in the currency's minor units;
multipliers are integer percentages (150 = ×1.5), so point arithmetic never touches a float.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from schemas.base import Code, Day, Input, Instant, Output, ShortText, whole

# Bounds no real programme comes near, that keep every figure a purchase can reach far from
# what the ledger's bigint columns hold. Each number is bounded here; how they combine (a rate
# times stacked multipliers times a tier) is bounded by
# loyalty.points.earning.check_points_in_range.
# A multiplier, in percent: from 0 (the line earns nothing) to 10,000 (×100).
Percent = Annotated[int, Meta(ge=0, le=10_000)]
# A tier's multiplier: at least ×1, at most ×100 like any multiplier.
TierPercent = Annotated[int, Meta(ge=100, le=10_000)]
# Points of a fixed bonus or of one engagement action.
PointCount = Annotated[int, Meta(ge=0, le=1_000_000)]
# Base rate: points for every full ``per_amount`` of the amount paid (minor units).
RatePoints = Annotated[int, Meta(ge=0, le=10_000)]
RateAmount = Annotated[int, Meta(ge=1, le=100_000_000)]
# How many times an action may be awarded in its period or per target, and has been.
Cap = Annotated[int, Meta(ge=1, le=1_000_000)]
AwardCount = Annotated[int, Meta(ge=0, le=1_000_000)]
# Multipliers in one rule set; with ``stacking: multiply`` all that apply to a line multiply.
MAX_MULTIPLIERS = 200
ActionName = Annotated[str, Meta(min_length=1, max_length=40, pattern=whole(r"[a-z][a-z0-9_]*"))]
Sku = Annotated[str, Meta(min_length=1, max_length=64, pattern=whole(r"[^\x00-\x1f\x7f]+"))]
Category = Annotated[str, Meta(min_length=1, max_length=64, pattern=whole(r"[^\x00-\x1f\x7f]+"))]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BaseRate(Input):
    """``points`` for every full ``per_amount`` of the amount paid."""

    points: RatePoints = 1
    per_amount: RateAmount = 100


# -- multiplier conditions: every condition of a multiplier must hold for a line -------------


class CategoryIs(Input, tag="category"):
    categories: Annotated[list[Category], Meta(min_length=1, max_length=500)]


class SkuIs(Input, tag="sku"):
    skus: Annotated[list[Sku], Meta(min_length=1, max_length=5_000)]


class StoreIs(Input, tag="store"):
    stores: Annotated[list[Code], Meta(min_length=1, max_length=5_000)]


class WeekdayIs(Input, tag="weekday"):
    """Days of the week in the programme's business time zone."""

    days: Annotated[list[Weekday], Meta(min_length=1, max_length=7)]


class TimeWindow(Input, tag="time_window"):
    """Local business time from ``start`` (inclusive) to ``end`` (exclusive); may cross
    midnight (22:00 to 02:00)."""

    start: dt.time
    end: dt.time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("a time window needs start and end to differ")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("time window times are local business time, without an offset")


class BirthdayMonth(Input, tag="birthday_month"):
    """The member's birth month, in the business time zone."""


Condition = CategoryIs | SkuIs | StoreIs | WeekdayIs | TimeWindow | BirthdayMonth


class Multiplier(Input):
    name: ShortText
    percent: Percent
    when: Annotated[list[Condition], Meta(max_length=20)] = msgspec.field(default_factory=list)
    valid_from: Instant | None = None
    valid_until: Instant | None = None


# -- fixed bonuses ---------------------------------------------------------------------------


class FirstPurchaseBonus(Input, tag="first_purchase"):
    points: PointCount


class BirthdayMonthBonus(Input, tag="birthday_month"):
    """Once a year, on the member's first purchase in their birth month."""

    points: PointCount


Bonus = FirstPurchaseBonus | BirthdayMonthBonus


# -- engagement actions ----------------------------------------------------------------------


class ActionRule(Input):
    """Points for an engagement action, with caps per business day, per calendar month (in the
    business time zone) and per target (one share per URL)."""

    points: PointCount
    per_day: Cap | None = None
    per_month: Cap | None = None
    per_target: Cap | None = None
    requires_target: bool = False


# -- expiry ----------------------------------------------------------------------------------


class RollingExpiry(Input, tag="rolling"):
    """Points expire ``months`` after the business day they were earned, at its end."""

    months: Annotated[int, Meta(ge=1, le=120)] = 12


class PeriodEndExpiry(Input, tag="period_end"):
    """Points expire at the end of the year-long period they were earned in, plus
    ``extra_periods`` more; periods start on day 1 of ``first_month`` (4 = April)."""

    first_month: Annotated[int, Meta(ge=1, le=12)] = 1
    extra_periods: Annotated[int, Meta(ge=0, le=10)] = 1


class NoExpiry(Input, tag="never"):
    pass


Expiry = RollingExpiry | PeriodEndExpiry | NoExpiry


# -- tiers -----------------------------------------------------------------------------------


class Tier(Input):
    """A level members reach when their qualifying measure reaches ``threshold``."""

    code: Code
    name: ShortText
    threshold: Annotated[int, Meta(ge=0, le=10**13)]
    multiplier_percent: TierPercent = 100
    # A coupon template issued into the wallet of a member who reaches this tier.
    coupon_template_id: UUID | None = None


class TierProgramme(Input):
    """Levels in ascending order of threshold. ``spend`` is what was paid (less returns);
    ``points`` is points earned (less reversals). The rolling window is the last 12 months up
    to today; a calendar year runs from 1 January in the business time zone."""

    measure: Literal["spend", "points"] = "spend"
    period: Literal["rolling_12_months", "calendar_year"] = "rolling_12_months"
    levels: Annotated[list[Tier], Meta(max_length=20)] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        thresholds = [level.threshold for level in self.levels]
        if thresholds != sorted(set(thresholds)) or len(thresholds) != len(set(thresholds)):
            raise ValueError("tier thresholds must be strictly increasing")
        codes = [level.code for level in self.levels]
        if len(codes) != len(set(codes)):
            raise ValueError("tier codes must be unique")


def _default_actions() -> dict[str, ActionRule]:
    return {
        "site_visit": ActionRule(points=1, per_day=1),
        "sns_share": ActionRule(points=5, per_day=3, per_target=1, requires_target=True),
        "app_checkin": ActionRule(points=1, per_day=1),
        "review": ActionRule(points=10, per_month=5, per_target=1, requires_target=True),
    }


class EarningRules(Input):
    """The programme's earning rules. Omitted fields take the defaults of a fresh install."""

    base: BaseRate = msgspec.field(default_factory=BaseRate)
    rounding: Literal["floor", "round", "ceil"] = "floor"
    stacking: Literal["highest", "multiply"] = "highest"
    multipliers: Annotated[list[Multiplier], Meta(max_length=MAX_MULTIPLIERS)] = msgspec.field(
        default_factory=list)
    bonuses: Annotated[list[Bonus], Meta(max_length=20)] = msgspec.field(default_factory=list)
    actions: Annotated[dict[ActionName, ActionRule], Meta(max_length=100)] = msgspec.field(
        default_factory=_default_actions)
    expiry: Expiry = msgspec.field(default_factory=RollingExpiry)
    pending_days: Annotated[int, Meta(ge=0, le=365)] = 0
    point_value: Annotated[int, Meta(ge=1, le=1_000_000)] = 1
    tiers: TierProgramme = msgspec.field(default_factory=TierProgramme)


class EarningRulesChange(EarningRules):
    """New earning rules. A change that multiplies what recent purchases earn by more than
    the programme allows unconfirmed is refused (422 ``rule_change_needs_confirmation``) until
    it is sent again with ``confirm: true``."""

    confirm: bool = False

    def rules(self) -> EarningRules:
        return EarningRules(**{name: getattr(self, name)
                               for name in EarningRules.__struct_fields__})


class TierProgrammeChange(TierProgramme):
    """A new tier programme; ``confirm`` as for earning rules: a change of tier multipliers
    that multiplies what recent purchases earn by more than allowed needs it."""

    confirm: bool = False

    def programme(self) -> TierProgramme:
        return TierProgramme(**{name: getattr(self, name)
                              for name in TierProgramme.__struct_fields__})


class RuleSet(Output):
    version: int
    rules: EarningRules
    created_at: dt.datetime


# -- simulation ------------------------------------------------------------------------------


class TraceLine(Output):
    """A line's share of the amount paid and the percent it earns at (exact, as a decimal
    string: stacked multipliers of 105 and 105 give "110.25")."""

    line: int
    sku: str
    category: str
    amount: int
    percent: str
    multipliers: list[str]


class TraceStep(Output):
    rule: str
    detail: str
    points: int


class Trace(Output):
    """Why an entry has the points it has, step by step, under ``rule_version``."""

    rule_version: int
    steps: list[TraceStep]
    lines: list[TraceLine] = msgspec.field(default_factory=list)


class TierView(Output):
    code: str
    name: str
    multiplier_percent: int


class NextTier(Output):
    code: str
    name: str
    threshold: int
    remaining: int


class TierChange(Output):
    from_tier: str | None
    to_tier: str | None
    reason: str
    measure: int
    changed_at: dt.datetime


class MemberTier(Output):
    """Where a member stands: the tier, what it was measured on so far, what is left to the
    next, and how it got here."""

    tier: TierView | None
    since: dt.datetime | None
    measure: int
    measure_kind: Literal["spend", "points"]
    period: Literal["rolling_12_months", "calendar_year"]
    window_start: dt.datetime
    next: NextTier | None
    history: list[TierChange]


class TierProgrammeSet(Output):
    """The tier programme in force and the earning-rules version that holds it."""

    version: int
    tiers: TierProgramme


# -- backtest --------------------------------------------------------------------------------


class BacktestRequest(Input):
    """Re-earn the purchases that occurred from business day ``from`` to ``to`` (inclusive,
    in the programme's time zone) under ``rules``, against what they earned."""

    rules: EarningRules
    from_: Day = msgspec.field(name="from")
    to: Day


class BacktestFigures(Output):
    """Purchases re-earned, the points they earned (``actual``), would have earned under the
    proposed rules (``proposed``), and ``difference`` = proposed - actual."""

    purchases: int
    actual: int
    proposed: int
    difference: int


class BacktestTier(BacktestFigures):
    """Purchases by the tier the member was in when they bought (null: no tier)."""

    tier: str | None


class BacktestStore(BacktestFigures):
    store: str


class BacktestLiability(Output):
    """What the change would add to the points outstanding (``points``, negative when it
    lowers them) and its worth (``value``, in minor units of ``currency`` at the programme's
    point value), before any of those points would be redeemed or expire."""

    points: int
    value: int
    currency: str


class BacktestResult(Output):
    """The comparison. ``skipped`` purchases have no lines to earn on (imported history, or
    recorded under older bounds): left out of every figure, with the points they earned."""

    totals: BacktestFigures
    by_tier: list[BacktestTier]
    by_store: list[BacktestStore]
    liability: BacktestLiability
    skipped: int
    skipped_points: int


class Backtest(Output):
    """A backtest and how far it has got: ``done`` of ``total`` purchases read; ``result``
    once ``state`` is ``done``; ``error`` if it ``failed``."""

    backtest_id: UUID
    state: Literal["running", "done", "failed"]
    from_: dt.date = msgspec.field(name="from")
    to: dt.date
    total: int
    done: int
    created_at: dt.datetime
    finished_at: dt.datetime | None = None
    result: BacktestResult | None = None
    error: str | None = None
