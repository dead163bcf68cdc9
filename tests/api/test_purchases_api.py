"""Purchases and returns at the till, through the API, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from litestar import Litestar

from loyalty.core.settings import Settings
from loyalty.members.cards import CARD_AUDIENCE
from tests.factories import Actors, SignedUp, bearer, purchase_body
from tests.ledger_checks import ledger_rows

Client = httpx.AsyncClient
_keys = itertools.count()


def purchase(member_id: str, *, total: int = 10_000, redeem: int = 0, receipt: str | None = None,
             lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    # The lines add up to the total (two coffees, and a one-yen sweet when it is odd).
    return purchase_body(
        member_id, total, receipt_id=receipt, redeem_points=redeem,
        lines=lines or [{"sku": "COFFEE", "category": "drinks", "quantity": 2,
                         "unit_price": total // 2}]
        + ([{"sku": "CANDY", "category": "food", "unit_price": 1}] if total % 2 else []))


def client_database(app: Litestar) -> str:
    url: str = app.state.services.settings.database_url
    return url


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{next(_keys)}"}


@pytest.fixture
async def till(actors: Actors) -> dict[str, str]:
    api_key, _ = await actors.terminal("TOKYO-01")
    return bearer(api_key)


async def test_purchase_earns_one_point_per_100_yen(client: Client, actors: Actors,
                                                    till: dict[str, str]) -> None:
    member = await actors.member()
    response = await client.post("/v1/pos/purchases", json=purchase(member.member_id,
                                                                     total=12_345),
                                 headers={**till, **key()})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["points_earned"] == 123
    assert body["balance"] == {"available": 123, "pending": 0}
    assert body["trace"]["steps"][0]["rule"] == "base"
    points = (await client.get("/v1/me/points", headers=member.headers)).json()
    assert points["available"] == 123
    assert points["lifetime_earned"] == 123


async def test_retry_with_same_key_replays_the_first_response(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    member = await actors.member()
    body = purchase(member.member_id)
    headers = {**till, **key()}
    first = await client.post("/v1/pos/purchases", json=body, headers=headers)
    second = await client.post("/v1/pos/purchases", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    rows = await ledger_rows(settings.database_url)
    assert len([e for e in rows.entries if e["kind"] == "earn"]) == 1


async def test_same_key_with_another_body_is_422(client: Client, actors: Actors,
                                                 till: dict[str, str]) -> None:
    member = await actors.member()
    headers = {**till, **key()}
    body = purchase(member.member_id)
    assert (await client.post("/v1/pos/purchases", json=body, headers=headers)).status_code == 201
    other = {**body, "total": body["total"] + 100}
    response = await client.post("/v1/pos/purchases", json=other, headers=headers)
    assert response.status_code == 422
    assert response.json()["type"].endswith(":idempotency_key_reused")


async def test_a_receipt_twice_under_two_keys_is_409(client: Client, actors: Actors,
                                                     till: dict[str, str]) -> None:
    member = await actors.member()
    body = purchase(member.member_id, receipt="SAME-RECEIPT")
    assert (await client.post("/v1/pos/purchases", json=body,
                              headers={**till, **key()})).status_code == 201
    again = await client.post("/v1/pos/purchases", json=body, headers={**till, **key()})
    assert again.status_code == 409
    assert again.json()["type"].endswith(":receipt_already_recorded")
    points = (await client.get("/v1/me/points", headers=member.headers)).json()
    assert points["available"] == 100


async def test_purchase_without_idempotency_key_is_refused(client: Client, actors: Actors,
                                                           till: dict[str, str]) -> None:
    member = await actors.member()
    response = await client.post("/v1/pos/purchases", json=purchase(member.member_id),
                                 headers=till)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.text


async def test_redeeming_takes_earliest_expiring_points_and_earns_on_the_rest(
    client: Client, actors: Actors, till: dict[str, str]
) -> None:
    member = await actors.member()
    await client.post("/v1/pos/purchases", json=purchase(member.member_id, total=50_000),
                      headers={**till, **key()})
    response = await client.post(
        "/v1/pos/purchases", json=purchase(member.member_id, total=1_000, redeem=300),
        headers={**till, **key()})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["points_redeemed"] == 300
    assert body["points_earned"] == 7  # 700 paid in money
    assert body["balance"]["available"] == 500 - 300 + 7


async def test_redeeming_more_than_available_is_409_and_writes_nothing(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    member = await actors.member()
    before = await ledger_rows(settings.database_url)
    response = await client.post(
        "/v1/pos/purchases", json=purchase(member.member_id, total=1_000, redeem=10),
        headers={**till, **key()})
    assert response.status_code == 409
    assert response.json()["type"].endswith(":insufficient_points")
    assert await ledger_rows(settings.database_url) == before


async def test_quote_writes_nothing_and_agrees_with_the_purchase(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    member = await actors.member()
    body = purchase(member.member_id, total=4_321)
    before = await ledger_rows(settings.database_url)
    quote = await client.post("/v1/pos/quotes", json=body, headers=till)
    assert quote.status_code == 200, quote.text
    assert await ledger_rows(settings.database_url) == before
    recorded = await client.post("/v1/pos/purchases", json=body, headers={**till, **key()})
    assert quote.json()["points_earned"] == recorded.json()["points_earned"] == 43


async def test_card_lookup_and_purchase_by_card(client: Client, actors: Actors,
                                                till: dict[str, str]) -> None:
    member: SignedUp = await actors.member(name="山田 太郎")
    card = (await client.get("/v1/me/card", headers=member.headers)).json()
    lookup = await client.get("/v1/pos/members/lookup", params={"card": card["token"]},
                              headers=till)
    assert lookup.status_code == 200, lookup.text
    assert lookup.json() == {"member_id": member.member_id, "display_name": "山田 太郎",
                             "tier": None, "available_points": 0}
    body = purchase(member.member_id)
    body["member"] = {"card": card["token"]}
    recorded = await client.post("/v1/pos/purchases", json=body, headers={**till, **key()})
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["member_id"] == member.member_id
    # A card is not an access token.
    assert (await client.get("/v1/me", headers=bearer(card["token"]))).status_code == 401


async def test_retry_by_a_card_that_has_since_expired_replays_the_purchase(
    client: Client, actors: Actors, till: dict[str, str], app: Litestar,
) -> None:
    member: SignedUp = await actors.member()
    signer = app.state.services.signer
    card = signer.issue(member.member_uuid, CARD_AUDIENCE, ttl=1, jti="short-lived")
    body = purchase(member.member_id)
    body["member"] = {"card": card}
    headers = {**till, **key()}
    first = await client.post("/v1/pos/purchases", json=body, headers=headers)
    assert first.status_code == 201, first.text
    await asyncio.sleep(2.1)
    retried = await client.post("/v1/pos/purchases", json=body, headers=headers)
    assert retried.status_code == 201
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.content == first.content
    # Under a new key the expired card is what it is: refused, nothing recorded.
    fresh = await client.post("/v1/pos/purchases", json={**body, "receipt_id": "NEW"},
                              headers={**till, **key()})
    assert fresh.status_code == 422
    assert fresh.json()["type"].endswith(":card_expired")
    assert len((await ledger_rows(client_database(app))).entries) == 1


async def test_return_of_half_the_lines_reverses_half_the_points(
    client: Client, actors: Actors, till: dict[str, str]
) -> None:
    member = await actors.member()
    lines = [{"sku": "A", "quantity": 1, "unit_price": 5_000},
             {"sku": "B", "quantity": 1, "unit_price": 5_000}]
    recorded = (await client.post(
        "/v1/pos/purchases", json=purchase(member.member_id, total=10_000, lines=lines),
        headers={**till, **key()})).json()
    assert recorded["points_earned"] == 100
    path = f"/v1/pos/purchases/{recorded['purchase_id']}/returns"
    half = await client.post(path, json={"lines": [{"line": 0, "quantity": 1}]},
                             headers={**till, **key()})
    assert half.status_code == 201, half.text
    assert half.json()["points_reversed"] == 50
    assert half.json()["balance"]["available"] == 50
    rest = await client.post(path, json={"amount": 5_000}, headers={**till, **key()})
    assert rest.json()["points_reversed"] == 50
    again = await client.post(path, json={"amount": 1}, headers={**till, **key()})
    assert again.status_code == 422
    assert again.json()["type"].endswith(":return_exceeds_purchase")
    points = (await client.get("/v1/me/points", headers=member.headers)).json()
    assert points["available"] == 0


async def test_returning_everything_twice_reverses_once(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    member = await actors.member()
    recorded = (await client.post("/v1/pos/purchases",
                                  json=purchase(member.member_id, total=3_000),
                                  headers={**till, **key()})).json()
    path = f"/v1/pos/purchases/{recorded['purchase_id']}/returns"
    everything = {"lines": [{"line": 0, "quantity": 2}]}
    first = await client.post(path, json=everything, headers={**till, **key()})
    second = await client.post(path, json=everything, headers={**till, **key()})
    assert first.status_code == 201
    assert second.status_code == 422
    rows = await ledger_rows(settings.database_url)
    assert [e["amount"] for e in rows.entries if e["kind"] == "reverse"] == [-30]


async def test_return_when_points_were_spent_records_the_shortfall(
    client: Client, actors: Actors, till: dict[str, str]
) -> None:
    member = await actors.member()
    bought = (await client.post("/v1/pos/purchases",
                                json=purchase(member.member_id, total=10_000),
                                headers={**till, **key()})).json()
    await client.post("/v1/pos/purchases",
                      json=purchase(member.member_id, total=80, redeem=80,
                                    lines=[{"sku": "X", "unit_price": 80}]),
                      headers={**till, **key()})
    returned = await client.post(f"/v1/pos/purchases/{bought['purchase_id']}/returns",
                                 json={"amount": 10_000}, headers={**till, **key()})
    body = returned.json()
    assert returned.status_code == 201, returned.text
    assert body["points_reversed"] == 20
    assert body["points_shortfall"] == 80
    assert body["balance"]["available"] == 0
    assert body["notes"]


async def test_return_gives_back_redeemed_points(client: Client, actors: Actors,
                                                 till: dict[str, str]) -> None:
    member = await actors.member()
    await client.post("/v1/pos/purchases", json=purchase(member.member_id, total=20_000),
                      headers={**till, **key()})
    spent = (await client.post("/v1/pos/purchases",
                               json=purchase(member.member_id, total=1_000, redeem=100),
                               headers={**till, **key()})).json()
    assert spent["balance"]["available"] == 200 - 100 + 9
    returned = await client.post(f"/v1/pos/purchases/{spent['purchase_id']}/returns",
                                 json={"amount": 1_000}, headers={**till, **key()})
    body = returned.json()
    assert body["points_restored"] == 100
    assert body["points_reversed"] == 9
    assert body["balance"]["available"] == 200


async def test_another_stores_purchase_is_not_found(client: Client, actors: Actors,
                                                    till: dict[str, str]) -> None:
    member = await actors.member()
    bought = (await client.post("/v1/pos/purchases", json=purchase(member.member_id),
                                headers={**till, **key()})).json()
    other_key, _ = await actors.terminal("OSAKA-01")
    response = await client.post(f"/v1/pos/purchases/{bought['purchase_id']}/returns",
                                 json={"amount": 100}, headers={**bearer(other_key), **key()})
    assert response.status_code == 404
