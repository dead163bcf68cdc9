"""Analytics for the staff who steer the programme (admin, marketer, analyst): KPIs over a
period, the RFM distribution, join cohorts and the forecast of the points liability.
Aggregates only, so analysts may read them: no member is named or counted out singly."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import Provide
from litestar.params import QueryParameter

from api.auth import staff_with
from api.deps import Db, Svc, provide_ledger_conn, provide_services, utc_now
from api.params import BusinessDay
from loyalty.access.roles import MARKETING_READERS
from loyalty.insights.cohorts import cohorts, parse_month
from loyalty.insights.kpis import kpis
from loyalty.insights.liability import DEFAULT_MONTHS, MAX_MONTHS, liability_forecast
from loyalty.insights.rfm import rfm_distribution
from schemas.analytics import Cohorts, Kpis, LiabilityForecast, RfmDistribution
from schemas.base import Day, whole

MONTH = whole(r"[1-9][0-9]{3}-(0[1-9]|1[0-2])")
Month = Annotated[str, QueryParameter(pattern=MONTH, max_length=7, description="A month, YYYY-MM")]


class AnalyticsController(Controller):
    path = "/v1/analytics"
    tags = ["analytics"]
    guards = [staff_with(*MARKETING_READERS)]
    # A connection outside any transaction: each computation opens one repeatable-read
    # transaction of its own, so all its statements see the same moment.
    dependencies = {"services": Provide(provide_services), "conn": Provide(provide_ledger_conn)}

    @get("/kpis", operation_id="getKpis")
    async def kpis(self, conn: Db, services: Svc,
                   from_: Annotated[Day, QueryParameter(
                       name="from", description="The first business day, YYYY-MM-DD")],
                   to: BusinessDay) -> Kpis:
        """Members, repeat rate, churn, order value, frequency, LTV and points of the business
        days ``from`` to ``to`` (inclusive, at most three years, not after today)."""
        settings = services.settings
        return await kpis(conn, first=from_, last=to, tz=services.programme.timezone,
                          now=utc_now(), margin=settings.ltv_margin,
                          point_value=settings.point_value)

    @get("/rfm", operation_id="getRfmDistribution")
    async def rfm(self, conn: Db) -> RfmDistribution:
        """Scored members by (R, F, M) score and by named segment, as of the last RFM refresh."""
        return await rfm_distribution(conn)

    @get("/cohorts", operation_id="getCohorts")
    async def cohorts(self, conn: Db, services: Svc,
                      from_: Annotated[str, QueryParameter(
                          name="from", pattern=MONTH, max_length=7,
                          description="The first join month, YYYY-MM")],
                      to: Month) -> Cohorts:
        """Monthly join cohorts ``from`` to ``to`` (at most 120): each one's size and the share
        of it active at the end of each month since joining, up to the current month."""
        return await cohorts(conn, first=parse_month(from_, "from"),
                             last=parse_month(to, "to"),
                             tz=services.programme.timezone, now=utc_now())

    @get("/liability", operation_id="getLiabilityForecast")
    async def liability(self, conn: Db, services: Svc,
                        months: Annotated[int, QueryParameter(
                            ge=1, le=MAX_MONTHS,
                            description="Forecast months to list, 1 to 60")] = DEFAULT_MONTHS,
                        ) -> LiabilityForecast:
        """Expected redemption and breakage of the points outstanding now, for each of the
        coming ``months`` and in all, in points and in the currency, from what became of the
        programme's past lots at each age (the curve, also returned)."""
        return await liability_forecast(conn, now=utc_now(), tz=services.programme.timezone,
                                        point_value=services.settings.point_value,
                                        months=months)
