"""The dashboard over HTTP: who may open it, the period it shows, and a bad period refused
with a page that says what to fix."""

from __future__ import annotations

import datetime as dt
import re

import httpx
import pytest

from loyalty.core.settings import Settings
from tests.console.seed import seed
from tests.console.test_console_http import sign_in

PATH_D = re.compile(r'<path class="line" d="([^"]*)"')


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["analyst", "marketer", "admin"])
async def test_marketing_readers_see_the_dashboard(client: httpx.AsyncClient, role: str) -> None:
    await sign_in(client, role)
    page = await client.get("/console/dashboard")
    assert page.status_code == 200, page.text
    assert '<a href="/console/dashboard" aria-current="page">' in page.text
    assert "会員" in page.text
    assert "リピート率" in page.text
    assert "この期間の購買はまだありません" not in page.text
    # The last 30 days, the chart across all of them, higher on the days with sales.
    found = PATH_D.search(page.text)
    assert found
    assert found.group(1).count("L") == 29
    assert len({point.split(",")[1] for point in found.group(1).split()}) > 2


@pytest.mark.usefixtures("seeded")
async def test_support_does_not_see_the_dashboard(client: httpx.AsyncClient) -> None:
    await sign_in(client, "support")
    assert "/console/dashboard" not in (await client.get("/console")).text
    refused = await client.get("/console/dashboard")
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]


@pytest.mark.usefixtures("seeded")
async def test_a_chosen_period_is_shown_against_the_one_before(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "marketer")
    await client.post("/console/language", data={
        "language": "en", "back": "/console", "csrf_token": await sign_in_token(client)})
    page = await client.get("/console/dashboard",
                            params={"from": "2025-03-01", "to": "2025-03-07"})
    assert page.status_code == 200, page.text
    assert "2025-03-01 to 2025-03-07 (7 days), compared with 2025-02-22 to 2025-02-28" in page.text
    assert "Sales per day, 2025-03-01 to 2025-03-07" in page.text
    assert "¥0" in page.text  # money in the programme's currency
    # Before the seeded purchases: nothing sold, and the page says what to do.
    assert "No purchases in this period yet" in page.text


async def sign_in_token(client: httpx.AsyncClient) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get("/console")).text)
    assert found
    return found.group(1)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("query", "message"), [
    ({"from": "2025-13-01"}, "from must be a day written YYYY-MM-DD"),
    ({"to": "yesterday"}, "to must be a day written YYYY-MM-DD"),
    ({"from": "2025-03-07", "to": "2025-03-01"}, "from must be on or before to"),
    ({"to": (dt.date.today() + dt.timedelta(days=3)).isoformat()}, "to must not be after today"),
    ({"from": "2000-01-01", "to": "2025-01-01"}, "a period is at most"),
    ({"from": "2025-03-01x"}, ""),
])
async def test_a_bad_period_is_a_400_page_saying_what_to_fix(
    client: httpx.AsyncClient, query: dict[str, str], message: str,
) -> None:
    await sign_in(client, "analyst")
    page = await client.get("/console/dashboard", params=query)
    assert page.status_code == 400, page.text
    assert "text/html" in page.headers["content-type"]
    assert message in page.text
