"""Issue 15's end to end: 1,000 purchases through ``POST /v1/pos/purchases``, the app's own
delivery worker running in its lifespan (in this process), a real HTTP receiver on 127.0.0.1
(tests/loyalty/ops/receiver.py): exactly one ``purchase.recorded`` and one matching
``points.earned`` per purchase arrive, each signed as the Standard Webhooks specification says
(verified by the receiver's own implementation, not the code under test), each ``webhook-id``
the envelope's id and unique, each envelope decoding into its type's registry Struct."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any
from uuid import UUID

import msgspec

from schemas.outbox import EVENT_TYPES, PointsEarnedData, PurchaseRecordedData, envelope_type
from tests.conftest import AppWith
from tests.factories import bearer, make_members, purchase_body, query
from tests.loyalty.ops.receiver import receiving, verify

PURCHASES = 1_000
MEMBERS = 100
# Purchases in flight at once, as several tills would send them.
CONCURRENCY = 16
TYPES = ["purchase.recorded", "points.earned"]
_keys = itertools.count()


async def test_a_thousand_purchases_deliver_each_event_once_signed_and_decodable(
    app_with: AppWith, fresh_database: str,
) -> None:
    members = await make_members(fresh_database, MEMBERS)
    async with receiving() as receiver, app_with(
            webhooks_worker="embedded", webhooks_allow_private=True,
            webhooks_poll_seconds=0.5, db_pool_max=CONCURRENCY + 4) as (client, actors):
        admin = bearer(await actors.staff("admin"))
        created = await client.post("/v1/webhooks/endpoints", headers=admin, json={
            "url": receiver.url, "event_types": TYPES, "description": "end to end"})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        api_key, _ = await actors.terminal("HOOKS-E2E")
        till = bearer(api_key)

        gate = asyncio.Semaphore(CONCURRENCY)

        async def purchase(n: int) -> dict[str, Any]:
            body = purchase_body(members[n % MEMBERS], 1_000 + 100 * (n % 7), prefix="E2E")
            async with gate:
                response = await client.post("/v1/pos/purchases", json=body, headers={
                    **till, "Idempotency-Key": f"e2e-{next(_keys)}"})
            assert response.status_code == 201, response.text
            made: dict[str, Any] = response.json()
            return made

        made = await asyncio.gather(*(purchase(n) for n in range(PURCHASES)))
        await receiver.wait_for(lambda got: len(got) >= 2 * PURCHASES, seconds=60)
        await asyncio.sleep(0.5)  # nothing more comes
        received = list(receiver.received)

    assert len(received) == 2 * PURCHASES
    ids = [r.headers["webhook-id"] for r in received]
    assert len(set(ids)) == len(ids), "a webhook-id was sent twice"
    wrong_secret = "whsec_" + "QUJD" * 8
    events: dict[str, list[Any]] = {t: [] for t in TYPES}
    for request in received:
        assert request.path == "/hooks"
        assert verify(secret, request), request.headers
        assert not verify(wrong_secret, request)
        kind = msgspec.json.decode(request.body)["type"]
        assert kind in TYPES, kind
        event = msgspec.json.decode(request.body, type=envelope_type(kind))
        assert str(event.id) == request.headers["webhook-id"]  # type: ignore[attr-defined]
        assert isinstance(event.data, EVENT_TYPES[kind])  # type: ignore[attr-defined]
        events[kind].append(event.data)  # type: ignore[attr-defined]
    assert Counter({t: len(e) for t, e in events.items()}) == Counter(
        {"purchase.recorded": PURCHASES, "points.earned": PURCHASES})

    by_purchase = {UUID(m["purchase_id"]): m for m in made}
    recorded: list[PurchaseRecordedData] = events["purchase.recorded"]
    earned: list[PointsEarnedData] = events["points.earned"]
    assert {r.purchase_id for r in recorded} == set(by_purchase)
    assert {e.purchase_id for e in earned} == set(by_purchase)
    for r in recorded:
        answer = by_purchase[r.purchase_id]
        assert (str(r.member_id), r.receipt_id, r.points_earned) == (
            answer["member_id"], answer["receipt_id"], answer["points_earned"])
    for e in earned:
        assert e.purchase_id is not None
        answer = by_purchase[e.purchase_id]
        assert (str(e.member_id), e.points, e.source) == (
            answer["member_id"], answer["points_earned"], "purchase")
    # The log agrees: every delivery delivered at its first attempt, one attempt each.
    rows = await query(fresh_database, """
        select d.status, d.attempts, count(*) as n,
               count(*) filter (where d.delivered_status = 200) as ok,
               count(a.*) as failed_attempts
          from webhook_deliveries d left join webhook_attempts a using (delivery_id)
         group by d.status, d.attempts""")
    assert [tuple(r) for r in rows] == [("delivered", 1, 2 * PURCHASES, 2 * PURCHASES, 0)]
