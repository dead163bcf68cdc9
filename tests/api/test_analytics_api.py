"""The analytics routes over HTTP: today's figures from what the till recorded, a past day read
from its snapshot, RFM and cohorts, who may read them, and bad periods refused with a clear
problem+json (never a 500)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from loyalty.core.settings import Settings
from loyalty.insights.rfm import refresh_rfm
from tests.factories import Actors, SignedUp, bearer

Client = httpx.AsyncClient
TZ = ZoneInfo("Asia/Tokyo")  # the default LOYALTY_TIMEZONE the test app runs with
_keys = itertools.count()


def today() -> dt.date:
    return dt.datetime.now(TZ).date()


def month(day: dt.date) -> str:
    return f"{day:%Y-%m}"


async def buy(client: Client, key: str, member: SignedUp, total: int) -> int:
    """A purchase at the till now; returns the points it earned."""
    response = await client.post("/v1/pos/purchases", headers={
        **bearer(key), "Idempotency-Key": f"kpi-{next(_keys)}"}, json={
        "member": {"id": member.member_id}, "receipt_id": f"KPI-{next(_keys)}",
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(), "total": total, "currency": "JPY",
        "lines": [{"sku": "S", "unit_price": total}]})
    assert response.status_code == 201, response.text
    return int(response.json()["points_earned"])


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].startswith("urn:loyalty:problem:")
    assert body["detail"]
    if field is not None:
        assert body["field"] == field


async def test_kpis_of_today_count_what_the_till_recorded(client: Client,
                                                          actors: Actors) -> None:
    analyst = bearer(await actors.staff("analyst"))
    key, _ = await actors.terminal()
    ann, ben = await actors.member(), await actors.member()
    earned = [await buy(client, key, ann, 10_000), await buy(client, key, ann, 5_000),
              await buy(client, key, ben, 3_000)]
    # Yesterday and today (so a sign-up just before midnight is still in): 2 new members,
    # both active, nobody active at the start (so no churn, and no LTV). 3 orders by 2
    # purchasers, ann twice: repeat rate 1 / 2; 18,000 / 3 = 6,000 an order; 3 / 2 = 1.5
    # orders each, 1.5 x 365 / 2 = 273.75 a year. Points: whatever the default rules earned,
    # all outstanding (pending or not), worth 1 each (LOYALTY_POINT_VALUE's default).
    response = await client.get(
        "/v1/analytics/kpis", params={"from": str(today() - dt.timedelta(days=1)),
                                      "to": str(today())}, headers=analyst)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["days"], body["snapshot_days"], body["live_days"]) == (2, 0, 2)
    assert body["members"] == {
        "total": 2, "new": 2, "active": 2, "dormant": 0, "reactivated": 0,
        "active_at_start": 0, "churned": 0, "churn_rate": None}
    assert body["purchases"] == {
        "orders": 3, "purchasers": 2, "repeat_purchasers": 1, "repeat_rate": 0.5,
        "sales": 18_000, "returns": 0, "revenue": 18_000, "average_order_value": 6_000.0,
        "purchase_frequency": 1.5}
    assert body["ltv"] == {"value": None, "margin": 0.3, "purchases_per_year": 273.75,
                           "annual_churn_rate": None, "expected_lifetime_years": None}
    assert sum(earned) > 0
    assert body["points"] == {
        "issued": sum(earned), "redeemed": 0, "expired": 0, "outstanding": sum(earned),
        "liability_value": sum(earned), "breakage_rate": None}


async def test_a_past_day_is_read_from_its_snapshot(client: Client, actors: Actors,
                                                    settings: Settings) -> None:
    marketer = bearer(await actors.staff("marketer"))
    await actors.member()
    # The day before yesterday, as the kpi_snapshot job stored it: 4 members joined, 5 orders.
    day = today() - dt.timedelta(days=2)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            """
            insert into kpi_daily (day, computed_at, members_total, members_active,
                                   members_dormant, members_new, reactivations, orders,
                                   purchasers, sales, returns, points_issued, points_redeemed,
                                   points_expired, points_outstanding, liability_value)
            values ($1, now(), 4, 4, 0, 4, 0, 5, 3, 50000, 0, 500, 0, 0, 500, 500)
            """, day)
    finally:
        await conn.close()
    response = await client.get("/v1/analytics/kpis", params={
        "from": str(day), "to": str(today())}, headers=marketer)
    assert response.status_code == 200, response.text
    body = response.json()
    # Its flows are added to the live days' (one sign-up today or yesterday); the stocks at
    # the end are today's, live; purchasers are always counted from purchases (none recorded).
    assert (body["snapshot_days"], body["live_days"]) == (1, 2)
    assert (body["members"]["new"], body["members"]["total"]) == (5, 1)
    assert (body["purchases"]["orders"], body["purchases"]["sales"]) == (5, 50_000)
    assert (body["purchases"]["purchasers"], body["purchases"]["purchase_frequency"]) == (
        0, None)
    assert (body["points"]["issued"], body["points"]["outstanding"]) == (500, 0)


async def test_rfm_and_cohorts_over_http(client: Client, actors: Actors,
                                         settings: Settings) -> None:
    admin = bearer(await actors.staff("admin"))
    key, _ = await actors.terminal()
    ann, ben = await actors.member(), await actors.member()
    await buy(client, key, ann, 2_000)
    await buy(client, key, ann, 2_000)
    await buy(client, key, ben, 1_000)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await refresh_rfm(conn, now=dt.datetime.now(dt.UTC), window_days=365)
    finally:
        await conn.close()
    rfm = (await client.get("/v1/analytics/rfm", headers=admin)).json()
    assert rfm["members"] == 2
    assert rfm["window_days"] == 365
    assert sum(cell["members"] for cell in rfm["cells"]) == 2
    assert sum(segment["members"] for segment in rfm["segments"]) == 2
    assert len(rfm["segments"]) == 11
    # Ann bought more often and for more: F and M 5 against ben's 1 (two members: ranks 1, 2).
    scores = sorted((c["frequency_score"], c["monetary_score"]) for c in rfm["cells"])
    assert scores == [(1, 1), (5, 5)]

    # This month's cohort (asked from last month, so a month turning mid-test cannot lose it):
    # both members, both active now.
    last_month = today().replace(day=1) - dt.timedelta(days=1)
    response = await client.get("/v1/analytics/cohorts", headers=admin, params={
        "from": month(last_month), "to": month(today())})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"]) == (month(last_month), month(today()))
    assert [c["month"] for c in body["cohorts"]] == [month(last_month), month(today())]
    assert sum(c["members"] for c in body["cohorts"]) == 2
    joined = next(c for c in body["cohorts"] if c["members"])
    assert joined["retention"][-1] == {
        "months_since_join": len(joined["retention"]) - 1, "active": 2, "share_active": 1.0}


ROUTES = ["/v1/analytics/kpis?from=2025-01-01&to=2025-01-31", "/v1/analytics/rfm",
          "/v1/analytics/cohorts?from=2025-01&to=2025-03", "/v1/analytics/liability"]


async def test_only_analysts_marketers_and_admins_read_analytics(client: Client,
                                                                 actors: Actors) -> None:
    member = await actors.member()
    key, _ = await actors.terminal()
    callers: dict[str, tuple[dict[str, str], int]] = {
        "anonymous": ({}, 401), "member": (member.headers, 403), "terminal": (bearer(key), 403),
        "support": (bearer(await actors.staff("support")), 403),
        **{role: (bearer(await actors.staff(role)), 200)
           for role in ("analyst", "marketer", "admin")},
    }
    for path in ROUTES:
        for caller, (headers, status) in callers.items():
            response = await client.get(path, headers=headers)
            assert response.status_code == status, (path, caller, response.text)
            if status != 200:
                assert_problem(response, status)


def _day(offset: int) -> str:
    return str(today() + dt.timedelta(days=offset))


@pytest.mark.parametrize(("params", "status", "field"), [
    ({"from": "2025-02-01", "to": "2025-01-31"}, 422, "from"),
    ({"from": "2025-01-01", "to": "tomorrow"}, 400, None),
    ({"from": "2025-02-30", "to": "2025-03-01"}, 400, None),
    ({"from": "20250101", "to": "2025-03-01"}, 400, None),
    ({"to": "2025-03-01"}, 400, None),
    ({"from": "2025-01-01"}, 400, None),
    # Outside the calendar every request lives in (schemas.base.Day): the schema refuses it.
    ({"from": "2025-01-01", "to": "9999-12-31"}, 400, None),
    ({"from": "0001-01-01", "to": "0001-01-01"}, 400, None),
    ("span", 422, "from"),
    ("future", 422, "to"),
])
async def test_bad_kpi_periods_are_refused(client: Client, actors: Actors, params: Any,
                                           status: int, field: str | None) -> None:
    if params == "span":  # three years and a day, ending today
        params = {"from": _day(-1096), "to": _day(0)}
    elif params == "future":
        params = {"from": _day(0), "to": _day(1)}
    analyst = bearer(await actors.staff("analyst"))
    response = await client.get("/v1/analytics/kpis", params=params, headers=analyst)
    assert_problem(response, status, field)


@pytest.mark.parametrize(("params", "status", "field"), [
    ({"from": "2025-13", "to": "2025-12"}, 400, None),
    ({"from": "2025-1", "to": "2025-12"}, 400, None),
    ({"from": "0000-01", "to": "2025-12"}, 400, None),
    ({"from": "2025-01-01", "to": "2025-12"}, 400, None),
    ({"from": "2025-03", "to": "2025-01"}, 422, "from"),
    ({"from": "1900-01", "to": "2025-01"}, 422, "from"),
    ("next_month", 422, "to"),
])
async def test_bad_cohort_months_are_refused(client: Client, actors: Actors, params: Any,
                                             status: int, field: str | None) -> None:
    if params == "next_month":
        first = today().replace(day=1)
        params = {"from": month(first), "to": month(first + dt.timedelta(days=32))}
    analyst = bearer(await actors.staff("analyst"))
    response = await client.get("/v1/analytics/cohorts", params=params, headers=analyst)
    assert_problem(response, status, field)


async def test_the_liability_forecast_of_points_just_earned_is_outstanding_only(
    client: Client, actors: Actors,
) -> None:
    """Points earned at the till today: outstanding, worth 1 each, but no lot is a month old,
    so there is no curve to forecast from (a clear empty answer, not an error)."""
    marketer = bearer(await actors.staff("marketer"))
    key, _ = await actors.terminal()
    earned = await buy(client, key, await actors.member(), 10_000)
    response = await client.get("/v1/analytics/liability", headers=marketer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["outstanding_points"], body["outstanding_value"], body["outstanding_lots"]) \
        == (earned, earned, 1)
    assert (body["history_months"], body["curve"], body["months"], body["ultimate"]) == \
        (0, [], [], None)


@pytest.mark.parametrize("months", ["0", "61", "-1", "twelve", "1.5", "9" * 30, ""])
async def test_bad_forecast_months_are_refused(client: Client, actors: Actors,
                                               months: str) -> None:
    analyst = bearer(await actors.staff("analyst"))
    response = await client.get("/v1/analytics/liability", params={"months": months},
                                headers=analyst)
    assert_problem(response, 400)


@pytest.fixture
async def analyst(actors: Actors) -> dict[str, str]:
    return bearer(await actors.staff("analyst"))


query_values = st.one_of(
    st.dates().map(str), st.dates().map(month),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20))


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/analytics/kpis", "/v1/analytics/cohorts"]),
       first=query_values, last=query_values)
async def test_no_period_makes_a_500(client: Client, analyst: dict[str, str], path: str,
                                     first: str, last: str) -> None:
    response = await client.get(path, params={"from": first, "to": last}, headers=analyst)
    assert response.status_code in (200, 400, 422), response.text
