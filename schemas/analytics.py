"""Analytics on the wire: KPIs over a period of business days, the RFM distribution with its
named segments, and join cohorts' retention. Aggregates only: no member is named.

A ratio is null where its denominator is zero (nobody purchased, nobody was active at the
start): "cannot be measured", never a made-up 0. Definitions: docs/analytics.md."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from schemas.base import Output

# The named RFM segments, best first (the grid: loyalty/insights/kpis.py).
RfmSegmentName = Literal[
    "champions", "loyal", "potential_loyalists", "new", "promising", "need_attention",
    "about_to_sleep", "at_risk", "cannot_lose_them", "hibernating", "lost",
]


class MemberKpis(Output):
    """``total``, ``active`` and ``dormant`` at the period's end (total: active, dormant or
    suspended); ``new`` joined in the period; ``reactivated``: dormant members who came back in
    the period (each return counted). Churn: of the ``active_at_start``, those ``churned``
    (dormant at the end); ``churn_rate`` = churned / active_at_start."""

    total: int
    new: int
    active: int
    dormant: int
    reactivated: int
    active_at_start: int
    churned: int
    churn_rate: float | None


class PurchaseKpis(Output):
    """Purchases that occurred in the period. ``revenue`` = ``sales`` less ``returns`` recorded
    in the period; ``average_order_value`` = revenue / orders; ``purchase_frequency`` = orders /
    purchasers; ``repeat_rate`` = repeat_purchasers (two or more orders) / purchasers."""

    orders: int
    purchasers: int
    repeat_purchasers: int
    repeat_rate: float | None
    sales: int
    returns: int
    revenue: int
    average_order_value: float | None
    purchase_frequency: float | None


class LtvKpis(Output):
    """``value`` = average order value × ``margin`` × ``purchases_per_year`` ×
    ``expected_lifetime_years``. Purchases per year scale the period's frequency to 365 days;
    the annual churn rate is 1 - (1 - period churn)^(365 / days), and the expected lifetime its
    inverse (null when nobody churned: no finite lifetime can be read from the period)."""

    value: float | None
    margin: float
    purchases_per_year: float | None
    annual_churn_rate: float | None
    expected_lifetime_years: float | None


class PointKpis(Output):
    """``issued``, ``redeemed`` and ``expired`` in the period (issued and redeemed net of
    corrections and returns); ``outstanding`` at the end (available and pending) and its
    ``liability_value`` in minor units of the currency; ``breakage_rate`` = expired /
    (expired + redeemed)."""

    issued: int
    redeemed: int
    expired: int
    outstanding: int
    liability_value: int
    breakage_rate: float | None


class PredictedLtv(Output):
    """Predicted value over the next ``horizon_days`` from the churn model's latest scores
    (loyalty/insights/churn_model.py: expected purchases × expected spend per purchase ×
    margin): ``total`` and ``average`` of the predicted 12-month value over the ``members``
    the model scored, that is members (not merged, not erased) with at least one purchase,
    scored when the weekly fit converged. The ``unscored`` members are left to the cadence rule
    (no purchase yet, or a fit that did not converge) and not counted. The scores are as of
    ``scored_at`` (the last run of the churn_model job), whatever the period; all null and 0
    before the first run."""

    members: int
    unscored: int
    total: float | None
    average: float | None
    scored_at: dt.datetime | None
    horizon_days: int


class Kpis(Output):
    """The figures of ``from`` to ``to``, business days inclusive. ``snapshot_days`` of them were
    read from daily snapshots, ``live_days`` computed now (today, and past days without one)."""

    from_: dt.date = msgspec.field(name="from")
    to: dt.date
    days: int
    as_of: dt.datetime
    snapshot_days: int
    live_days: int
    members: MemberKpis
    purchases: PurchaseKpis
    ltv: LtvKpis
    predicted_ltv: PredictedLtv
    points: PointKpis


class RfmCell(Output):
    recency_score: int
    frequency_score: int
    monetary_score: int
    members: int


class RfmSegment(Output):
    """The members whose (recency, frequency) scores fall in ``cells`` of the RFM grid."""

    name: RfmSegmentName
    members: int
    share: float | None
    cells: list[tuple[int, int]]


class RfmDistribution(Output):
    """Scored members by (R, F, M) score, only the combinations present, and by named segment
    (every segment, empty or not), as of the last RFM refresh (``computed_at``)."""

    members: int
    computed_at: dt.datetime | None
    window_days: int | None
    cells: list[RfmCell]
    segments: list[RfmSegment]


class CohortMonth(Output):
    """``active``: members of the cohort active at the end of the month ``months_since_join``
    after the join month (for the current month: now)."""

    months_since_join: int
    active: int
    share_active: float | None


class Cohort(Output):
    month: str
    members: int
    retention: list[CohortMonth]


class Cohorts(Output):
    """Monthly join cohorts from ``from`` to ``to`` (``YYYY-MM``, business time zone)."""

    from_: str = msgspec.field(name="from")
    to: str
    as_of: dt.datetime
    cohorts: list[Cohort]


class LiabilityAge(Output):
    """Month ``age_months`` of a lot's life, measured on the lots that have lived all of it:
    ``exposure`` points were still in them at its start, ``redeemed`` and ``expired`` of them
    went during it; the rates are those over the exposure (null: no exposure at that age). The
    shares are of the points issued, at the month's end, chained from the rates:
    redeemed + expired + outstanding = 1."""

    age_months: int
    exposure: int
    redeemed: int
    expired: int
    redemption_rate: float | None
    expiry_rate: float | None
    redeemed_share: float
    expired_share: float
    outstanding_share: float


class LiabilityMonth(Output):
    """Forecast month ``month`` (1: the month from now), beginning on business day ``starts``:
    expected points redeemed and expired unredeemed (breakage), their value in minor units of
    the currency, and the points expected still outstanding at its end."""

    month: int
    starts: dt.date
    redeemed_points: int
    breakage_points: int
    redeemed_value: int
    breakage_value: int
    outstanding_points: int


class LiabilityOutcome(Output):
    """What becomes of the outstanding points in the end (followed up to ten years): expected
    redeemed and broken, their value, the points without an expiry still unresolved after ten
    years, and ``breakage_rate`` = breakage / (redeemed + breakage)."""

    redeemed_points: int
    breakage_points: int
    unresolved_points: int
    redeemed_value: int
    breakage_value: int
    breakage_rate: float | None


class LiabilityForecast(Output):
    """Expected redemption and breakage of the points outstanding ``as_of`` (available and
    pending, in ``outstanding_lots`` lots), from the ``curve`` of what became of the
    programme's past lots at each age (``history_months`` ages measured), each point worth
    ``point_value`` minor units. With no lot a full month old yet there is no curve to read:
    ``months`` is empty and ``ultimate`` null. Method and limits: docs/analytics.md."""

    as_of: dt.datetime
    point_value: float
    outstanding_points: int
    outstanding_value: int
    outstanding_lots: int
    history_months: int
    curve: list[LiabilityAge]
    months: list[LiabilityMonth]
    ultimate: LiabilityOutcome | None
