"""Dashboard: the KPIs of a period against the period of the same length before it, the
period's sales by day, week or month (loyalty.insights.kpis, as GET /v1/analytics/kpis), the
retention of join cohorts as a heatmap (loyalty.insights.cohorts, as GET /v1/analytics/cohorts)
the named RFM segments with their counts (loyalty.insights.rfm, as GET /v1/analytics/rfm), and
the forecast of the points liability (loyalty.insights.liability, as GET
/v1/analytics/liability) beside the churn model's predicted value of the next twelve months.
Aggregates only, so analysts see it as marketers do; a segment's members are listed, to the
roles that may read profiles, on /console/rfm/{segment}."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from babel.numbers import (
    format_currency,
    format_decimal,
    format_percent,
    get_currency_precision,
)
from litestar import Response, get
from litestar.params import FromPath, QueryParameter

from console.chart import heat_level, trend_path
from console.pages import language_of, render, staff_session
from console.services import AnyRequest, services
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_READERS, PROFILE_READERS
from loyalty.core.db import transaction
from loyalty.core.errors import InvalidInput, NotFound
from loyalty.insights.dashboard import (
    COHORT_MONTHS,
    FRESH_SECONDS,
    default_first,
    kept_dashboard_figures,
)
from loyalty.insights.kpis import GRAINS, Grain
from loyalty.insights.rfm import (
    RFM_SEGMENTS,
    rfm_segment_members,
    segment_named,
)
from schemas.analytics import Cohorts, Kpis, LiabilityForecast, PredictedLtv
from schemas.base import SINGLE_LINE, whole

CHART_WIDTH, CHART_HEIGHT = 800, 120
# A day as typed into the form, bounded as every text parameter is (one line, 100 characters);
# _day reads it, so a wrong day within those bounds is a page saying what to fix.
DayText = Annotated[str | None, QueryParameter(max_length=100, pattern=SINGLE_LINE)]
FromText = Annotated[str | None, QueryParameter(name="from", max_length=100,
                                                pattern=SINGLE_LINE)]
GrainText = Annotated[str | None, QueryParameter(max_length=10, pattern=SINGLE_LINE)]
Kind = Literal["count", "money", "rate", "number"]
# ``refresh=now`` computes the figures again instead of showing those kept.
Refresh = Annotated[Literal["now"] | None, QueryParameter()]
RFM_PAGE_SIZE = 25
Cursor = Annotated[str | None, QueryParameter(max_length=200,
                                              pattern=whole(r"[A-Za-z0-9_-]*"))]


# The cards, in order; the template translates each label through the catalogue.
CARD_LABELS = (
    "Members",
    "Active",
    "Dormant",
    "New members",
    "Repeat rate",
    "Churn rate",
    "Revenue",
    "Average order value",
    "Purchase frequency",
    "Lifetime value",
    "Points issued",
    "Points redeemed",
    "Points expired",
    "Points liability",
    "Breakage rate",
)


@dataclass(frozen=True, slots=True)
class Card:
    label: str
    value: str
    previous: str
    change: str


def _day(text: str | None, field: str, default: dt.date) -> dt.date:
    """A YYYY-MM-DD day, as the API's Day parameters take it, else InvalidInput naming it."""
    if not text:
        return default
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field} must be a day written YYYY-MM-DD, not {text[:20]!r}",
                           field=field) from None


def _grain(text: str | None) -> Grain:
    for grain in GRAINS:
        if (text or "day") == grain:
            return grain
    raise InvalidInput(f"grain must be one of {', '.join(GRAINS)}, not {text[:20]!r}"
                       if text else "grain is required", field="grain")


@dataclass(frozen=True, slots=True)
class HeatCell:
    text: str
    level: int | None


@dataclass(frozen=True, slots=True)
class HeatRow:
    month: str
    members: int
    cells: list[HeatCell]


def _heatmap(table: Cohorts, *, locale: str) -> list[HeatRow]:
    """One row per join cohort, one cell per month since joining: the share active, written
    as a percentage and shaded by it; an empty cell where the month has not come yet."""
    rows = []
    for cohort in table.cohorts:
        cells = [HeatCell("—" if month.share_active is None else
                          format_percent(month.share_active, "#,##0%", locale=locale),
                          heat_level(month.share_active))
                 for month in cohort.retention[:COHORT_MONTHS]]
        rows.append(HeatRow(cohort.month, cohort.members, cells))
    return rows


@dataclass(frozen=True, slots=True)
class ForecastRow:
    starts: str
    redeemed: str
    breakage: str
    redeemed_value: str
    breakage_value: str
    outstanding: str


@dataclass(frozen=True, slots=True)
class ForecastSummary:
    """The forecast as the section writes it: the outstanding points and their value, the
    months measured, the rows of the coming months and the outcome in the end (empty strings
    where there is no history to forecast from)."""

    points: str
    value: str
    history_months: int
    rows: list[ForecastRow]
    redeemed: str
    breakage: str
    breakage_rate: str
    unresolved: str


def _forecast(forecast: LiabilityForecast, *, currency: str, locale: str) -> ForecastSummary:
    scale = 10 ** get_currency_precision(currency)

    def count(value: int) -> str:
        return format_decimal(value, locale=locale)

    def money(value: int) -> str:
        return format_currency(value / scale, currency, locale=locale)

    rows = [ForecastRow(month.starts.isoformat(), count(month.redeemed_points),
                        count(month.breakage_points), money(month.redeemed_value),
                        money(month.breakage_value), count(month.outstanding_points))
            for month in forecast.months]
    end = forecast.ultimate
    return ForecastSummary(
        points=count(forecast.outstanding_points), value=money(forecast.outstanding_value),
        history_months=forecast.history_months, rows=rows,
        redeemed=count(end.redeemed_points) if end else "",
        breakage=count(end.breakage_points) if end else "",
        breakage_rate="—" if end is None or end.breakage_rate is None else
        format_percent(end.breakage_rate, "#,##0.0%", locale=locale),
        unresolved=count(end.unresolved_points) if end and end.unresolved_points else "")


def _predicted(predicted: PredictedLtv, *, currency: str, locale: str) -> dict[str, str]:
    """The churn model's predicted 12-month value, total and per scored member, as written."""
    scale = 10 ** get_currency_precision(currency)

    def money(value: float | None) -> str:
        return "—" if value is None else format_currency(value / scale, currency, locale=locale)

    return {"total": money(predicted.total), "average": money(predicted.average),
            "members": format_decimal(predicted.members, locale=locale),
            "unscored": format_decimal(predicted.unscored, locale=locale)}


def _cards(now: Kpis, before: Kpis, *, currency: str, locale: str) -> list[Card]:
    scale = 10 ** get_currency_precision(currency)

    def show(value: float | None, kind: Kind, signed: bool = False) -> str:
        if value is None:
            return "—"
        sign = "+" if signed and value > 0 else ""
        if kind == "money":
            return sign + format_currency(value / scale, currency, locale=locale)
        if kind == "rate":
            return sign + format_percent(value, "#,##0.0%", locale=locale)
        if kind == "number":
            return sign + format_decimal(value, "#,##0.00", locale=locale)
        return sign + format_decimal(value, locale=locale)

    figures: list[tuple[float | None, float | None, Kind]] = [
        (now.members.total, before.members.total, "count"),
        (now.members.active, before.members.active, "count"),
        (now.members.dormant, before.members.dormant, "count"),
        (now.members.new, before.members.new, "count"),
        (now.purchases.repeat_rate, before.purchases.repeat_rate, "rate"),
        (now.members.churn_rate, before.members.churn_rate, "rate"),
        (now.purchases.revenue, before.purchases.revenue, "money"),
        (now.purchases.average_order_value, before.purchases.average_order_value, "money"),
        (now.purchases.purchase_frequency, before.purchases.purchase_frequency, "number"),
        (now.ltv.value, before.ltv.value, "money"),
        (now.points.issued, before.points.issued, "count"),
        (now.points.redeemed, before.points.redeemed, "count"),
        (now.points.expired, before.points.expired, "count"),
        (now.points.liability_value, before.points.liability_value, "money"),
        (now.points.breakage_rate, before.points.breakage_rate, "rate"),
    ]
    return [
        Card(label, show(value, kind), show(previous, kind),
             show(None if value is None or previous is None else value - previous, kind,
                  signed=True))
        for label, (value, previous, kind) in zip(CARD_LABELS, figures, strict=True)]


@get("/dashboard")
async def dashboard_page(
    request: AnyRequest,
    from_: FromText = None,
    to: DayText = None,
    grain: GrainText = None,
    refresh: Refresh = None,
) -> Response[str]:
    """The KPI cards, the trend chart by ``grain`` (day, week or month) for ``from`` to ``to``
    (default: 30 days, 12 weeks or 12 months to today), the cohort heatmap and the RFM grid; a
    bad period or grain is a 400 page that says what to fix, as the API's message says it."""
    svc = services(request)
    session = await staff_session(request, MARKETING_READERS)
    settings = svc.settings
    tz, currency = ZoneInfo(settings.timezone), settings.currency
    now = dt.datetime.now(dt.UTC)
    today = now.astimezone(tz).date()
    chosen = _grain(grain)
    last = _day(to, "to", today)
    first = _day(from_, "from", default_first(last, chosen))
    # Kept a few minutes (loyalty/insights/dashboard.py): at 1,000,000 members they take
    # seconds to compute, and the page says as of when they are. The default views of the day
    # are computed ahead by the dashboard_figures job.
    kept = await kept_dashboard_figures(
        svc.redis, svc.pool, first=first, last=last, grain=chosen, tz=tz,
        margin=settings.ltv_margin, point_value=settings.point_value,
        refresh=refresh == "now")
    figures = kept.value
    current, previous, buckets = figures.current, figures.previous, figures.trend
    retention, rfm = figures.cohorts, figures.rfm
    span = dt.timedelta(days=current.days)
    sales = [amount for _, _, amount in buckets]
    locale = language_of(request)
    heatmap = _heatmap(retention, locale=locale)
    scale = 10 ** get_currency_precision(currency)
    return render(
        request, "dashboard.html", session=session, first=first.isoformat(),
        last=last.isoformat(), current=current, previous=previous, grain=chosen,
        grains=GRAINS,
        cards=_cards(current, previous, currency=currency, locale=locale),
        path_d=trend_path(sales, width=CHART_WIDTH, height=CHART_HEIGHT),
        width=CHART_WIDTH, height=CHART_HEIGHT, buckets=len(buckets),
        top=format_currency(max(sales, default=0) / scale, currency, locale=locale),
        previous_first=(first - span).isoformat(), previous_last=(last - span).isoformat(),
        computed_at=kept.computed_at, fresh_minutes=FRESH_SECONDS // 60,
        heatmap=heatmap, heat_columns=max((len(row.cells) for row in heatmap), default=0),
        rfm=rfm, rfm_links=session.role in PROFILE_READERS,
        forecast=_forecast(figures.liability, currency=currency, locale=locale),
        predicted=current.predicted_ltv,
        predicted_text=_predicted(current.predicted_ltv, currency=currency, locale=locale),
        shares={segment.name: "—" if segment.share is None else
                format_percent(segment.share, "#,##0%", locale=locale)
                for segment in rfm.segments})


@get("/rfm/{segment:str}")
async def rfm_members_page(
    request: AnyRequest, segment: FromPath[str], cursor: Cursor = None,
) -> Response[str]:
    """The members of a named RFM segment, a page at a time, to the roles that read profiles
    (analysts see the counts only); an unknown name is a 404 page listing the names."""
    svc = services(request)
    session = await staff_session(request, PROFILE_READERS)
    try:
        name = segment_named(segment)
    except NotFound:
        return render(request, "rfm_members.html", session=session, status_code=404,
                      unknown=segment[:40], segments=RFM_SEGMENTS, segment=None, page=None)
    async with transaction(svc.pool) as conn:
        page = await rfm_segment_members(conn, name, limit=RFM_PAGE_SIZE, cursor=cursor or None)
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="members.rfm_segment", subject_kind="member", subject_id=None,
                           details={"segment": name, "results": len(page.items),
                                    "via": "console"})
    return render(request, "rfm_members.html", session=session, segment=name, page=page,
                  unknown=None, segments=RFM_SEGMENTS)
