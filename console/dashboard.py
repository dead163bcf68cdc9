"""Dashboard: the KPIs of a period against the period of the same length before it, and the
period's sales day by day, through the functions behind GET /v1/analytics/kpis
(loyalty.insights.kpis). Aggregates only, so analysts see it as marketers do."""

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
from litestar.params import QueryParameter

from console.chart import trend_path
from console.pages import language_of, render, staff_session
from console.services import AnyRequest, services
from loyalty.access.roles import MARKETING_READERS
from loyalty.core.errors import InvalidInput
from loyalty.insights.kpis import daily_sales, kpis
from schemas.analytics import Kpis
from schemas.base import SINGLE_LINE

DEFAULT_DAYS = 30
CHART_WIDTH, CHART_HEIGHT = 800, 120
# A day as typed into the form, bounded as every text parameter is (one line, 100 characters);
# _day reads it, so a wrong day within those bounds is a page saying what to fix.
DayText = Annotated[str | None, QueryParameter(max_length=100, pattern=SINGLE_LINE)]
FromText = Annotated[str | None, QueryParameter(name="from", max_length=100,
                                                pattern=SINGLE_LINE)]
Kind = Literal["count", "money", "rate", "number"]


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
) -> Response[str]:
    """The KPI cards and the trend chart for ``from`` to ``to`` (default: the last 30 business
    days); a bad period is a 400 page that says what to fix, as the API's message says it."""
    svc = services(request)
    session = await staff_session(request, MARKETING_READERS)
    settings = svc.settings
    tz, currency = ZoneInfo(settings.timezone), settings.currency
    now = dt.datetime.now(dt.UTC)
    today = now.astimezone(tz).date()
    last = _day(to, "to", today)
    first = _day(from_, "from", last - dt.timedelta(days=DEFAULT_DAYS - 1))
    # As the API: a connection outside any transaction; each computation opens its own
    # repeatable-read view.
    async with svc.pool.acquire() as conn:
        current = await kpis(conn, first=first, last=last, tz=tz, now=now,
                             margin=settings.ltv_margin, point_value=settings.point_value)
        span = dt.timedelta(days=current.days)
        previous = await kpis(conn, first=first - span, last=last - span, tz=tz, now=now,
                              margin=settings.ltv_margin, point_value=settings.point_value)
        days = await daily_sales(conn, first=first, last=last, tz=tz, now=now)
    sales = [amount for _, _, amount in days]
    locale = language_of(request)
    scale = 10 ** get_currency_precision(currency)
    return render(
        request, "dashboard.html", session=session, first=first.isoformat(),
        last=last.isoformat(), current=current, previous=previous,
        cards=_cards(current, previous, currency=currency, locale=locale),
        path_d=trend_path(sales, width=CHART_WIDTH, height=CHART_HEIGHT),
        width=CHART_WIDTH, height=CHART_HEIGHT,
        top=format_currency(max(sales, default=0) / scale, currency, locale=locale),
        previous_first=(first - span).isoformat(), previous_last=(last - span).isoformat())
