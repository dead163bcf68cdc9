"""The webhooks API: endpoints (secret shown once, rotation), refusals as problem+json, and, with
the worker the app runs in its lifespan, a test event, the delivery log, a retry and a replay
arriving at a real receiver."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx

from tests.conftest import AppWith
from tests.factories import Actors, bearer
from tests.loyalty.ops.receiver import Answer, Received, receiving, verify

PUBLIC = "https://93.184.216.34/hooks"


async def _admin(actors: Actors) -> dict[str, str]:
    return bearer(await actors.staff("admin"))


async def test_an_endpoint_is_created_with_a_secret_shown_once(
        client: httpx.AsyncClient, actors: Actors) -> None:
    admin = await _admin(actors)
    created = await client.post("/v1/webhooks/endpoints", headers=admin, json={
        "url": PUBLIC, "event_types": ["points.earned", "tier.changed", "points.earned"],
        "description": "CRM"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["event_types"] == ["points.earned", "tier.changed"]
    assert (body["enabled"], body["disabled_reason"]) == (True, None)
    one = await client.get(f"/v1/webhooks/endpoints/{body['endpoint_id']}", headers=admin)
    listed = await client.get("/v1/webhooks/endpoints", headers=admin)
    assert one.status_code == listed.status_code == 200
    assert "secret" not in one.json()
    assert body["secret"] not in listed.text
    rotated = await client.post(f"/v1/webhooks/endpoints/{body['endpoint_id']}/rotate-secret",
                                headers=admin)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] not in (body["secret"], None)
    assert rotated.json()["previous_secret_expires_at"] is not None


async def test_bad_endpoints_are_refused_and_nothing_is_written(
        client: httpx.AsyncClient, actors: Actors) -> None:
    admin = await _admin(actors)
    for body, field in [
        ({"url": "https://127.0.0.1/hook", "event_types": ["points.earned"]}, "url"),
        ({"url": "https://10.0.0.1/hook", "event_types": ["points.earned"]}, "url"),
        ({"url": "https://169.254.169.254/x", "event_types": ["points.earned"]}, "url"),
        ({"url": "https://[::1]/hook", "event_types": ["points.earned"]}, "url"),
        ({"url": "http://93.184.216.34/hook", "event_types": ["points.earned"]}, "url"),
        ({"url": PUBLIC, "event_types": ["points.stolen"]}, "event_types"),
    ]:
        refused = await client.post("/v1/webhooks/endpoints", headers=admin, json=body)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["field"] == field, refused.json()
    for body in ({"url": PUBLIC, "event_types": []}, {"url": "not a url", "event_types": ["a.b"]},
                 {"url": PUBLIC, "event_types": ["points.earned"], "secret": "mine"}):
        refused = await client.post("/v1/webhooks/endpoints", headers=admin, json=body)
        assert refused.status_code == 400, (body, refused.text)
    assert (await client.get("/v1/webhooks/endpoints", headers=admin)).json() == []
    missing = "/v1/webhooks/endpoints/0190a000-0000-7000-8000-000000000000"
    for method, path in [("GET", missing), ("DELETE", missing),
                         ("POST", f"{missing}/rotate-secret"), ("POST", f"{missing}/test"),
                         ("GET", f"{missing}/deliveries")]:
        response = await client.request(method, path, headers=admin)
        assert response.status_code == 404, (method, path, response.text)


async def test_disabling_by_hand_says_so_and_a_test_to_a_disabled_endpoint_is_refused(
        client: httpx.AsyncClient, actors: Actors) -> None:
    admin = await _admin(actors)
    created = (await client.post("/v1/webhooks/endpoints", headers=admin, json={
        "url": PUBLIC, "event_types": ["points.earned"]})).json()
    path = f"/v1/webhooks/endpoints/{created['endpoint_id']}"
    off = await client.patch(path, headers=admin, json={"enabled": False})
    assert off.status_code == 200, off.text
    assert (off.json()["enabled"], off.json()["disabled_reason"]) == (False, "manual")
    refused = await client.post(f"{path}/test", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith(":webhook_endpoint_disabled")
    on = await client.patch(path, headers=admin, json={"enabled": True})
    assert (on.json()["enabled"], on.json()["disabled_reason"]) == (True, None)
    bad = await client.patch(path, headers=admin, json={"url": "https://192.168.0.1/"})
    assert bad.status_code == 422
    assert (await client.get(path, headers=admin)).json()["url"] == PUBLIC
    replay = await client.post(f"{path}/replay", headers=admin, json={
        "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
    assert replay.status_code == 422
    gone = await client.delete(path, headers=admin)
    assert gone.status_code == 204
    assert (await client.get(path, headers=admin)).status_code == 404


async def _deliveries(client: httpx.AsyncClient, admin: dict[str, str], path: str,
                      **params: Any) -> dict[str, Any]:
    response = await client.get(f"{path}/deliveries", headers=admin, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def _until(check: Any, seconds: float = 15) -> None:
    for _ in range(int(seconds * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not so within {seconds} s")


async def test_test_event_retry_and_replay_reach_the_receiver_through_the_apps_worker(
        app_with: AppWith) -> None:
    def answer(_request: Received, count: int) -> Answer:
        return Answer(500, b"x" * 2000) if count == 0 else Answer(200, b"thanks")

    async with receiving(answer) as receiver, app_with(
            webhooks_worker="embedded", webhooks_allow_private=True, webhooks_poll_seconds=0.2,
            webhooks_retry_base_seconds=60, webhooks_retry_max_seconds=60) as (client, actors):
        admin = await _admin(actors)
        created = await client.post("/v1/webhooks/endpoints", headers=admin, json={
            "url": receiver.url, "event_types": ["points.earned"]})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        path = f"/v1/webhooks/endpoints/{created.json()['endpoint_id']}"
        sent = await client.post(f"{path}/test", headers=admin)
        assert sent.status_code == 202, sent.text
        await receiver.wait_for(lambda got: len(got) >= 1)
        [first] = receiver.received
        assert first.headers["webhook-id"] == sent.json()["event_id"]
        assert first.event["type"] == "webhook.test"
        assert verify(secret, first)

        async def logged() -> bool:
            page = await _deliveries(client, admin, path)
            return bool(page["items"] and page["items"][0]["log"])
        await _until(logged)
        [delivery] = (await _deliveries(client, admin, path))["items"]
        assert delivery["status"] == "pending"  # the next attempt is a minute away
        [attempt] = delivery["log"]
        assert attempt["http_status"] == 500
        assert attempt["error"] == "answered 500"
        assert attempt["response_head"] == "x" * 512
        assert attempt["latency_ms"] >= 0

        retried = await client.post(
            f"{path}/deliveries/{delivery['delivery_id']}/retry", headers=admin)
        assert retried.status_code == 202, retried.text
        await receiver.wait_for(lambda got: len(got) >= 2)
        assert receiver.received[1].headers["webhook-id"] == first.headers["webhook-id"]

        async def delivered() -> bool:
            return bool((await _deliveries(client, admin, path))["items"][0]["status"]
                        == "delivered")
        await _until(delivered)

        # A replay sends the period's events of the endpoint's types (the test event is not
        # one of them: nothing else was written, so nothing is sent).
        now = dt.datetime.now(dt.UTC)
        replayed = await client.post(f"{path}/replay", headers=admin, json={
            "from": (now - dt.timedelta(hours=1)).isoformat(),
            "to": (now + dt.timedelta(minutes=1)).isoformat()})
        assert replayed.status_code == 202, replayed.text
        assert replayed.json() == {"deliveries": 0}

        # Pages of one, newest first.
        await client.post(f"{path}/test", headers=admin)
        await receiver.wait_for(lambda got: len(got) >= 3)
        page = await _deliveries(client, admin, path, limit=1)
        assert len(page["items"]) == 1
        assert page["next_cursor"]
        rest = await _deliveries(client, admin, path, limit=1, cursor=page["next_cursor"])
        assert rest["items"][0]["delivery_id"] == delivery["delivery_id"]
        assert rest["next_cursor"] is None
