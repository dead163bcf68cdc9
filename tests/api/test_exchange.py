"""What every HTTP exchange carries, whatever its outcome: a request id, headers that keep personal
data out of caches and browsers' guesses, a line in the access log, a count in /metrics under the
status it really had. /metrics itself is not for anyone; CORS only for the configured origins."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import AppWith, held
from tests.factories import Actors, bearer

Client = httpx.AsyncClient
TOKEN = "scrape-me-if-you-can-0123456789"


def _count(metrics: str, method: str, route: str, status: int) -> float:
    pattern = (rf'^loyalty_http_requests_total\{{method="{method}",route="{re.escape(route)}",'
               rf'status="{status}"\}} (\S+)$')
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
async def scraped(app_with: AppWith) -> AsyncIterator[Client]:
    """A client of an app whose /metrics answers the scraper's token."""
    async for client, _ in held(app_with(metrics_token=TOKEN)):
        yield client


async def metrics(client: Client) -> str:
    response = await client.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200, response.text
    return response.text


async def test_a_401_a_405_and_a_404_are_counted_with_the_status_they_had(scraped: Client) -> None:
    before = await metrics(scraped)
    assert (await scraped.get("/v1/me")).status_code == 401
    assert (await scraped.delete("/v1/campaigns")).status_code == 405
    assert (await scraped.get("/v1/nothing-here")).status_code == 404
    after = await metrics(scraped)
    assert _count(after, "GET", "/v1/me", 401) == _count(before, "GET", "/v1/me", 401) + 1
    assert _count(after, "GET", "/v1/me", 500) == 0
    # The router refuses the method before it names a route: counted as unmatched.
    assert _count(after, "DELETE", "unmatched", 405) == _count(
        before, "DELETE", "unmatched", 405) + 1
    assert _count(after, "GET", "unmatched", 404) == _count(before, "GET", "unmatched", 404) + 1
    assert "loyalty_http_request_duration_seconds_bucket" in after


async def test_metrics_are_off_for_everyone_without_a_token(client: Client,
                                                            actors: Actors) -> None:
    admin = bearer(await actors.staff("admin"))
    for headers in ({}, admin, bearer("anything at all, sixteen+")):
        response = await client.get("/metrics", headers=headers)
        assert response.status_code == 403, response.text
        assert "LOYALTY_METRICS_TOKEN" in response.json()["detail"]


async def test_metrics_need_the_scrapers_token_once_one_is_set(scraped: Client) -> None:
    assert (await scraped.get("/metrics")).status_code == 401
    assert (await scraped.get("/metrics", headers=bearer("wrong-token-0123456789"))
            ).status_code == 401
    answer = await scraped.get("/metrics", headers=bearer(TOKEN))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


async def test_public_metrics_answer_anyone(app_with: AppWith) -> None:
    async with app_with(metrics_public=True) as (client, _):
        assert (await client.get("/metrics")).status_code == 200


async def test_a_purchase_is_counted_in_the_business_counters(scraped: Client,
                                                              fresh_database: str) -> None:
    from loyalty.core.settings import load_settings

    actors = Actors(scraped, load_settings({}, database_url=fresh_database))
    member = await actors.member()
    key, _ = await actors.terminal("COUNT-01")
    before = await metrics(scraped)
    body = {"member": {"id": member.member_id}, "receipt_id": "COUNTED", "total": 1000,
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(), "currency": "JPY",
            "lines": [{"sku": "S", "unit_price": 1000}]}
    for _ in range(2):  # the second is a replay: not counted again
        response = await scraped.post("/v1/pos/purchases", json=body,
                                      headers={**bearer(key), "Idempotency-Key": "counted"})
        assert response.status_code == 201, response.text
    after = await metrics(scraped)

    def value(name: str, text: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    assert value("loyalty_purchases_total", after) == value("loyalty_purchases_total", before) + 1
    earned = 'loyalty_points_total{kind="earn"}'
    assert value(earned, after) == value(earned, before) + 10


async def test_every_answer_carries_a_request_id_given_or_made(client: Client) -> None:
    made = await client.get("/health/live")
    assert re.fullmatch(r"[0-9a-f-]{36}", made.headers["x-request-id"])
    given = await client.get("/v1/me", headers={"X-Request-Id": "till-7.req:42"})
    assert given.headers["x-request-id"] == "till-7.req:42"
    assert given.json()["request_id"] == "till-7.req:42"
    # An id that could forge a log line is replaced, not echoed.
    forged = await client.get("/health/live", headers={"X-Request-Id": "x\" injected=1"})
    assert forged.headers["x-request-id"] != "x\" injected=1"


async def test_personal_answers_are_never_cached_nor_sniffed(client: Client,
                                                             actors: Actors) -> None:
    member = await actors.member()
    for response in (await client.get("/v1/me", headers=member.headers),
                     await client.post("/v1/auth/refresh",
                                       json={"refresh_token": member.refresh_token}),
                     await client.get("/v1/nothing-here")):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
    jwks = await client.get("/.well-known/jwks.json")
    assert set(jwks.headers["cache-control"].split(", ")) == {"public", "max-age=300"}


async def test_one_access_log_line_per_request_without_secrets(
    client: Client, actors: Actors, caplog: pytest.LogCaptureFixture
) -> None:
    member = await actors.member(phone="090-1111-2222")
    with caplog.at_level(logging.INFO, logger="loyalty.access"):
        await client.get("/v1/me", headers={**member.headers, "X-Request-Id": "logged-1"})
    lines = [r for r in caplog.records if r.name == "loyalty.access"
             and getattr(r, "request_id", None) == "logged-1"]
    assert len(lines) == 1
    line = lines[0]
    assert isinstance(line.args, tuple)
    assert line.getMessage() == f"GET /v1/me 200 {line.args[3]:.1f}ms member"
    assert line.__dict__["request_id"] == "logged-1"
    assert member.access_token not in line.getMessage()
    assert member.member_id not in line.getMessage()


async def test_options_says_every_method_of_a_path_without_credentials(client: Client) -> None:
    response = await client.options("/v1/campaigns")
    assert response.status_code == 204
    assert set(response.headers["allow"].split(", ")) == {"GET", "OPTIONS", "POST"}


async def test_cors_only_for_the_configured_origins(app_with: AppWith) -> None:
    async with app_with(cors_origins=("https://app.example.com",)) as (client, _):
        preflight = await client.options("/v1/me", headers={
            "Origin": "https://app.example.com", "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, idempotency-key"})
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        elsewhere = await client.options("/v1/me", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in elsewhere.headers
        simple = await client.get("/health/live", headers={"Origin": "https://app.example.com"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example.com"


async def test_without_cors_origins_no_browser_origin_is_allowed(client: Client) -> None:
    response = await client.get("/health/live", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers
