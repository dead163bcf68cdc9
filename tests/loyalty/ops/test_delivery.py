"""Webhook delivery against a real HTTP receiver (tests/loyalty/ops/receiver.py), on a real
PostgreSQL: events written with ``emit`` are delivered, signed, at least once, in order per
member, retried while the receiver is down, never to a refused address, never after a redirect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
import pytest
from prometheus_client import REGISTRY

from loyalty.core.db import Connection, init_connection
from loyalty.core.outbox import emit
from loyalty.core.settings import Settings
from loyalty.ops.delivery import (
    CLAIM_DUE,
    CLAIM_IN_INDEX_ORDER,
    Outcome,
    claim_due,
    delete_old_events,
    list_deliveries,
    next_due,
    record_outcome,
    refresh_metrics,
    replay,
    retry_delivery,
    run_delivery_worker,
)
from loyalty.ops.webhooks import create_endpoint, delete_endpoint, rotate_secret
from schemas.webhooks import ENDPOINT_DISABLED_TYPE, EndpointCreate, EndpointWithSecret
from tests.conftest import make_settings
from tests.loyalty.ops.receiver import Answer, Received, receiving, verify


class Earned(msgspec.Struct):
    member_id: str
    points: int
    n: int


def worker_settings(database: str, redis: str, data_dir: Path, **overrides: object) -> Settings:
    """Private addresses allowed (the receiver is on 127.0.0.1), short waits."""
    values: dict[str, object] = {
        "webhooks_allow_private": True, "webhooks_poll_seconds": 0.3,
        "webhooks_retry_base_seconds": 0.2, "webhooks_retry_max_seconds": 0.5,
        "webhooks_lease_seconds": 15}
    values.update(overrides)
    return make_settings(database, redis, data_dir, **values)


@pytest.fixture
def settings_for(fresh_database: str, redis_url: str, tmp_path: Path) -> Any:
    def made(**overrides: object) -> Settings:
        return worker_settings(fresh_database, redis_url, tmp_path, **overrides)
    return made


@pytest.fixture
async def conn(fresh_database: str) -> AsyncIterator[Connection]:
    connection: Connection = await asyncpg.connect(fresh_database)
    await init_connection(connection)
    yield connection
    await connection.close()


@asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[None]:
    assert settings.database_url
    stop = asyncio.Event()
    task = asyncio.create_task(run_delivery_worker(settings, settings.database_url, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def endpoint(conn: Connection, url: str, types: list[str] | None = None,
                   ) -> EndpointWithSecret:
    async with conn.transaction():
        return await create_endpoint(
            conn, EndpointCreate(url=url, event_types=types or ["points.earned"]),
            allow_private=True)


async def earn(conn: Connection, count: int, *, member: UUID | None = None,
               start: int = 0) -> list[UUID]:
    """``count`` points.earned events, each committed on its own."""
    ids = []
    for n in range(start, start + count):
        async with conn.transaction():
            ids.append(await emit(conn, "points.earned", Earned(str(member), 10, n),
                                  member_id=member))
    return ids


def webhook_ids(received: list[Received]) -> list[str]:
    return [r.headers["webhook-id"] for r in received]


async def test_each_committed_event_is_delivered_once_signed_by_the_specification(
    conn: Connection, settings_for: Any,
) -> None:
    async with receiving() as receiver:
        hook = await endpoint(conn, receiver.url)
        ids = await earn(conn, 40, member=uuid4())
        async with conn.transaction():
            await emit(conn, "member.updated", Earned("x", 0, 0))  # not subscribed
        async with worker(settings_for()):
            await receiver.wait_for(lambda got: len(got) >= 40)
            await asyncio.sleep(0.5)  # nothing more comes
        assert sorted(webhook_ids(receiver.received)) == sorted(map(str, ids))
        for request in receiver.received:
            assert verify(hook.secret, request), request.headers
            assert not verify("whsec_" + "A" * 43 + "=", request)
            event = request.event
            assert event["id"] == request.headers["webhook-id"]
            assert event["type"] == "points.earned"
            assert set(event) == {"id", "type", "occurred_at", "api_version", "data"}
    statuses = await conn.fetch("select status, attempts from webhook_deliveries")
    assert {(r["status"], r["attempts"]) for r in statuses} == {("delivered", 1)}


async def test_a_rolled_back_effect_delivers_nothing(conn: Connection,
                                                     settings_for: Any) -> None:
    async with receiving() as receiver:
        await endpoint(conn, receiver.url)
        transaction = conn.transaction()
        await transaction.start()
        await emit(conn, "points.earned", Earned("rolled back", 1, 0))
        await transaction.rollback()
        kept = await earn(conn, 1)
        async with worker(settings_for()):
            await receiver.wait_for(lambda got: len(got) >= 1)
            await asyncio.sleep(0.8)
        assert webhook_ids(receiver.received) == [str(kept[0])]
    assert await conn.fetchval("select count(*) from webhook_deliveries") == 1


async def test_receiver_down_then_up_every_event_arrives_and_the_log_shows_each_failure(
    conn: Connection, settings_for: Any,
) -> None:
    async with receiving() as receiver:
        hook = await endpoint(conn, receiver.url)
        await receiver.stop()
        ids = await earn(conn, 5)
        async with worker(settings_for()):
            await asyncio.sleep(2.0)  # several attempts each, all refused
            await receiver.start()
            await receiver.wait_for(lambda got: len(set(webhook_ids(got))) >= 5)
            await asyncio.sleep(0.5)
        assert sorted(set(webhook_ids(receiver.received))) == sorted(map(str, ids))
    page = await list_deliveries(conn, hook.endpoint_id, limit=10, cursor=None)
    assert len(page.items) == 5
    for delivery in page.items:
        assert delivery.status == "delivered"
        failures, last = delivery.log[:-1], delivery.log[-1]
        assert len(failures) >= 2, delivery
        assert all(a.http_status is None and a.error for a in failures)
        assert last.http_status == 200
        assert last.error is None
        assert last.response_head == "ok"
        assert delivery.attempts == len(delivery.log)
        times = [a.attempted_at for a in delivery.log]
        assert times == sorted(times)


async def test_two_workers_deliver_every_event_exactly_once(
    conn: Connection, settings_for: Any,
) -> None:
    async with receiving() as receiver:
        await endpoint(conn, receiver.url)
        members = [uuid4() for _ in range(10)]
        ids = []
        for n in range(150):
            ids += await earn(conn, 1, member=members[n % 10] if n % 3 else None, start=n)
        settings = settings_for()
        async with worker(settings), worker(settings):
            await receiver.wait_for(lambda got: len(got) >= 150)
            await asyncio.sleep(1.0)
        got = webhook_ids(receiver.received)
        assert len(got) == 150
        assert sorted(got) == sorted(map(str, ids))


async def test_one_members_events_arrive_in_the_order_they_were_written(
    conn: Connection, settings_for: Any,
) -> None:
    slow, other = uuid4(), uuid4()

    def member_of(request: Received) -> object:
        data = request.event["data"]
        assert isinstance(data, dict)
        return data["member_id"]

    def first_attempt_fails(request: Received, count: int) -> Answer:
        if member_of(request) == str(slow) and not any(
                member_of(r) == str(slow) for r in receiver.received[:count]):
            return Answer(status=503, body=b"busy")
        return Answer()

    async with receiving(first_attempt_fails) as receiver:
        await endpoint(conn, receiver.url)
        written = await earn(conn, 5, member=slow)
        written_other = await earn(conn, 5, member=other)
        async with worker(settings_for(webhooks_retry_base_seconds=1.0)):
            await receiver.wait_for(lambda got: len(got) >= 11)
            await asyncio.sleep(0.5)
        got = receiver.received
        slow_ids = [r.headers["webhook-id"] for r in got if member_of(r) == str(slow)]
        # The first failed and was retried before anything later of that member was sent.
        assert slow_ids == [str(written[0]), *map(str, written)]
        # The other member was not held up: all of theirs came before that retry (1 s later).
        retry_at = [i for i, r in enumerate(got) if member_of(r) == str(slow)][1]
        others = [i for i, r in enumerate(got) if member_of(r) == str(other)]
        assert max(others) < retry_at
        assert [got[i].headers["webhook-id"] for i in others] == list(map(str, written_other))


async def test_a_redirect_is_not_followed(conn: Connection, settings_for: Any) -> None:
    def redirect(request: Received, _count: int) -> Answer:
        if request.path == "/hooks":
            return Answer(302, b"", (("location", "/elsewhere"),))
        return Answer()

    async with receiving(redirect) as receiver:
        hook = await endpoint(conn, receiver.url)
        await earn(conn, 1)
        async with worker(settings_for(webhooks_retry_base_seconds=60,
                                   webhooks_retry_max_seconds=60)):
            await receiver.wait_for(lambda got: len(got) >= 1)
            await asyncio.sleep(0.8)
        assert [r.path for r in receiver.received] == ["/hooks"]
    page = await list_deliveries(conn, hook.endpoint_id, limit=10, cursor=None)
    [delivery] = page.items
    assert delivery.status == "pending"
    assert delivery.log[0].http_status == 302
    assert delivery.log[0].error is not None
    assert "not followed" in delivery.log[0].error


async def test_during_a_rotation_both_secrets_sign(conn: Connection,
                                                   settings_for: Any) -> None:
    async with receiving() as receiver:
        hook = await endpoint(conn, receiver.url)
        async with conn.transaction():
            rotated = await rotate_secret(conn, hook.endpoint_id, grace=dt.timedelta(hours=1),
                                          now=dt.datetime.now(dt.UTC))
        assert rotated.secret != hook.secret
        assert rotated.secret.startswith("whsec_")
        await earn(conn, 1)
        async with worker(settings_for()):
            await receiver.wait_for(lambda got: len(got) >= 1)
        [request] = receiver.received
        signatures = request.headers["webhook-signature"].split(" ")
        assert len(signatures) == 2
        assert all(s.startswith("v1,") for s in signatures)
        assert verify(rotated.secret, request)
        assert verify(hook.secret, request)
        # After the grace period only the new secret signs.
        async with conn.transaction():
            newest = await rotate_secret(conn, hook.endpoint_id, grace=dt.timedelta(0),
                                         now=dt.datetime.now(dt.UTC))
        await earn(conn, 1)
        async with worker(settings_for()):
            await receiver.wait_for(lambda got: len(got) >= 2)
        last = receiver.received[1]
        assert len(last.headers["webhook-signature"].split(" ")) == 1
        assert verify(newest.secret, last)
        assert not verify(rotated.secret, last)


async def test_private_addresses_are_refused_at_delivery_by_default(
    conn: Connection, settings_for: Any,
) -> None:
    async with receiving() as receiver:
        # Made while private addresses were allowed; the worker is run without.
        hook = await endpoint(conn, receiver.url.replace("127.0.0.1", "localhost"))
        await earn(conn, 1)
        async with worker(settings_for(webhooks_allow_private=False,
                                       webhooks_retry_base_seconds=60,
                                       webhooks_retry_max_seconds=60)):
            await asyncio.sleep(1.0)
        assert receiver.received == []
    [delivery] = (await list_deliveries(conn, hook.endpoint_id, limit=5, cursor=None)).items
    assert delivery.log
    assert delivery.log[0].error is not None
    assert delivery.log[0].error.startswith("refused:")


async def test_an_endpoint_failing_for_long_enough_is_disabled_and_an_event_says_so(
    conn: Connection, settings_for: Any,
) -> None:
    async with receiving(lambda _r, _c: Answer(500, b"down")) as receiver:
        hook = await endpoint(conn, receiver.url)
        watcher = await endpoint(conn, "https://93.184.216.34/watch", [ENDPOINT_DISABLED_TYPE])
        await earn(conn, 1)
        async with worker(settings_for(webhooks_disable_after_seconds=1)):
            await asyncio.sleep(2.5)
        state = await conn.fetchrow(
            "select enabled, disabled_reason, failing_since from webhook_endpoints"
            " where endpoint_id = $1", hook.endpoint_id)
        assert state is not None
        assert state["enabled"] is False
        assert state["disabled_reason"] == "failing"
        event = await conn.fetchrow(
            "select event_id, data from outbox where type = $1", ENDPOINT_DISABLED_TYPE)
        assert event is not None
        assert event["data"]["endpoint_id"] == str(hook.endpoint_id)
        # The event goes to the endpoints that subscribe to it.
        assert await conn.fetchval(
            "select count(*) from webhook_deliveries where endpoint_id = $1 and event_id = $2",
            watcher.endpoint_id, event["event_id"]) == 1
        seen = len(receiver.received)
        await earn(conn, 1)
        async with worker(settings_for()):
            await asyncio.sleep(0.8)
        assert len(receiver.received) == seen  # a disabled endpoint is sent nothing


async def test_retention_removes_old_delivered_and_unsubscribed_events_only(
    conn: Connection,
) -> None:
    hook = await endpoint(conn, "https://93.184.216.34/hook")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(days=6)
    async with conn.transaction():
        delivered = await emit(conn, "points.earned", Earned("a", 1, 0), occurred_at=old)
        waiting = await emit(conn, "points.earned", Earned("a", 1, 1), occurred_at=old)
        nobody = await emit(conn, "member.updated", Earned("a", 1, 2), occurred_at=old)
        young = await emit(conn, "member.updated", Earned("a", 1, 3), occurred_at=recent)
        await conn.execute("update webhook_deliveries set status = 'delivered'"
                           " where event_id = $1", delivered)
    counts = await delete_old_events(conn, before=dt.datetime.now(dt.UTC)
                                     - dt.timedelta(days=7), batch_size=1)
    assert counts == {"events": 2}
    left = {r["event_id"] for r in await conn.fetch("select event_id from outbox")}
    assert left == {waiting, young}
    assert nobody not in left
    assert await conn.fetchval("select count(*) from webhook_deliveries where endpoint_id = $1",
                               hook.endpoint_id) == 1


async def test_metrics_count_outcomes_and_show_each_endpoints_oldest_waiting_event(
    conn: Connection, settings_for: Any,
) -> None:
    def sample(name: str, **labels: str) -> float:
        value = REGISTRY.get_sample_value(name, labels)
        return value or 0.0

    delivered_before = sample("loyalty_webhook_deliveries_total", outcome="delivered")
    async with receiving() as receiver:
        await endpoint(conn, receiver.url)
        await earn(conn, 3)
        async with worker(settings_for()):
            await receiver.wait_for(lambda got: len(got) >= 3)
            await asyncio.sleep(0.3)
    assert sample("loyalty_webhook_deliveries_total", outcome="delivered") \
        == delivered_before + 3
    waiting = await endpoint(conn, "https://93.184.216.34/later")
    async with conn.transaction():
        await emit(conn, "points.earned", Earned("m", 1, 0),
                   occurred_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    await refresh_metrics(conn, dt.datetime.now(dt.UTC))
    age = sample("loyalty_webhook_oldest_undelivered_seconds",
                 endpoint=str(waiting.endpoint_id))
    assert 7100 < age < 7300
    assert sample("loyalty_outbox_last_seq") == await conn.fetchval("select max(seq) from outbox")


async def test_an_endpoint_deleted_during_an_attempt_leaves_nothing_to_record(
    conn: Connection, settings_for: Any,
) -> None:
    hook = await endpoint(conn, "https://93.184.216.34/hook")
    await earn(conn, 1)
    [claimed] = await claim_due(conn, now=dt.datetime.now(dt.UTC),
                                lease=dt.timedelta(seconds=60))
    await delete_endpoint(conn, hook.endpoint_id)
    outcome = Outcome(attempted_at=dt.datetime.now(dt.UTC), latency_ms=5, status_code=200)
    assert await record_outcome(conn, claimed, outcome, settings_for()) == "gone"
    assert await conn.fetchval("select count(*) from webhook_attempts") == 0


async def test_a_claim_is_a_heap_only_update_and_a_leased_delivery_waits_for_its_lease(
    conn: Connection,
) -> None:
    await endpoint(conn, "https://93.184.216.34/hook")
    await earn(conn, 20)
    now = dt.datetime.now(dt.UTC)
    async with conn.transaction():
        claimed = await claim_due(conn, now=now, lease=dt.timedelta(seconds=60))
        # This transaction's own counts: the claims touched no index (migration 0037).
        counts = await conn.fetchrow(
            """
            select n_tup_hot_upd, n_tup_upd from pg_stat_xact_user_tables
             where relname = 'webhook_deliveries'
            """)
    assert counts is not None
    hot, updated = counts
    assert len(claimed) == 20
    assert hot == updated == 20
    # Held: not claimed again until the lease runs out, and the worker knows when that is.
    assert await claim_due(conn, now=now, lease=dt.timedelta(seconds=60)) == []
    later = now + dt.timedelta(seconds=61)
    assert await next_due(conn) == now + dt.timedelta(seconds=60)
    again = await claim_due(conn, now=later, lease=dt.timedelta(seconds=60))
    assert {c.delivery_id for c in again} == {c.delivery_id for c in claimed}
    assert set(await conn.fetchval(
        "select array_agg(distinct attempts) from webhook_deliveries")) == {2}


async def test_an_event_written_while_its_endpoint_is_deleted_commits_and_goes_with_retention(
    conn: Connection, fresh_database: str,
) -> None:
    hook = await endpoint(conn, "https://93.184.216.34/hook")
    admin: Connection = await asyncpg.connect(fresh_database)
    await init_connection(admin)
    try:
        deleting = admin.transaction()
        await deleting.start()
        await delete_endpoint(admin, hook.endpoint_id)

        async def purchase_events() -> None:
            # The till's transaction fans out to the endpoint its snapshot still shows.
            async with conn.transaction():
                await emit(conn, "points.earned", Earned("m", 1, 0))

        till = asyncio.create_task(purchase_events())
        await asyncio.sleep(0.3)  # a key to the endpoint would hold the till here
        await deleting.commit()
        await till  # and then fail it with a foreign key violation: it must commit
    finally:
        await admin.close()
    # Never sent (no endpoint), and gone with its event: nothing waits for it.
    assert await claim_due(conn, now=dt.datetime.now(dt.UTC),
                           lease=dt.timedelta(seconds=60)) == []
    assert await conn.fetchval("select count(*) from webhook_deliveries") == 1
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert await delete_old_events(conn, before=later) == {"events": 1}
    assert await conn.fetchval("select count(*) from webhook_deliveries") == 0
    assert await conn.fetchval("select count(*) from outbox") == 0


def _rows_read(plan: dict[str, Any], relation: str) -> int:
    """Rows the plan's scans of ``relation`` returned, over all their loops."""
    own = (plan.get("Actual Rows", 0) * plan.get("Actual Loops", 1)
           if plan.get("Relation Name") == relation and "Scan" in plan["Node Type"] else 0)
    return own + sum(_rows_read(child, relation) for child in plan.get("Plans", []))


async def three_thousand_waiting(conn: Connection) -> None:
    """3,000 deliveries waiting: one event each for 1,500 members, then a second for each
    (held back by the first until it is delivered)."""
    members = [uuid4() for _ in range(1_500)]
    for _ in range(2):
        async with conn.transaction():
            await conn.execute(
                """
                insert into outbox (type, api_version, member_id, data)
                select 'points.earned', 'v1', m, '{}' from unnest($1::uuid[]) m
                """, members)


@pytest.mark.parametrize("statistics", ["current", "taken while empty", "none"])
async def test_a_claim_reads_about_as_many_deliveries_as_it_takes_however_many_wait(
    conn: Connection, statistics: str,
) -> None:
    """Whatever the planner knows of the table: a backlog grows from nothing in seconds, long
    before autovacuum analyzes it again, and with the statistics of an empty table (or none)
    the planner sorted every waiting delivery for each claim: 30 ms a claim with 10,000
    waiting, at the service's priority, while the purchases made the backlog."""
    await endpoint(conn, "https://93.184.216.34/hook", ["points.earned"])
    if statistics == "taken while empty":
        await conn.execute("analyze webhook_deliveries")
    await three_thousand_waiting(conn)
    if statistics == "current":
        await conn.execute("analyze webhook_deliveries")
    elif statistics == "none":
        assert await conn.fetchval(
            "select count(*) from pg_stats where tablename = 'webhook_deliveries'") == 0
    claiming = conn.transaction()
    await claiming.start()
    try:
        await conn.execute(CLAIM_IN_INDEX_ORDER)
        explained = await conn.fetchval(
            "explain (analyze, format json) " + CLAIM_DUE,
            dt.datetime.now(dt.UTC), dt.timedelta(seconds=60), 100)
    finally:
        await claiming.rollback()
    [plan] = json.loads(explained) if isinstance(explained, str) else explained
    # The 100 taken and the index entries beside them; not the 3,000 waiting.
    assert _rows_read(plan["Plan"], "webhook_deliveries") <= 300


async def test_a_claim_planned_while_nothing_waited_still_reads_only_what_it_takes(
    conn: Connection,
) -> None:
    """A worker claims on one connection for hours. Its claims while nothing waited (an endpoint
    just made, or disabled) made PostgreSQL keep one plan for the prepared statement, made for
    an empty table: for each candidate it scanned the whole table for an earlier delivery of
    the member, and it kept doing so when thousands waited (a claim of 100 took 250 ms to
    3.5 s in the bench, until the statement was prepared again)."""
    await endpoint(conn, "https://93.184.216.34/hook", ["points.earned"])
    lease = dt.timedelta(seconds=60)
    for _ in range(8):
        assert await claim_due(conn, now=dt.datetime.now(dt.UTC), lease=lease) == []
    await three_thousand_waiting(conn)

    async def rows_read() -> int:
        read: int = await conn.fetchval(
            """
            select coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
              from pg_stat_xact_user_tables where relname = 'webhook_deliveries'
            """)
        return read

    before = await rows_read()
    taken = await claim_due(conn, now=dt.datetime.now(dt.UTC), lease=lease)
    assert len(taken) == 100
    # The 100 taken, their neighbours in the due index and the rows updated; not the 3,000
    # waiting, once per candidate.
    assert await rows_read() - before <= 400


@pytest.mark.parametrize("again", ["retry", "replay"])
async def test_a_success_is_kept_on_its_delivery_and_sending_it_again_keeps_it_in_the_log(
    conn: Connection, settings_for: Any, again: str,
) -> None:
    """A success writes no attempt row (migration 0040): the log shows it from the delivery,
    and a delivery sent again by an admin keeps its first success in the log."""
    hook = await endpoint(conn, "https://93.184.216.34/hook")
    await earn(conn, 1)
    lease = dt.timedelta(seconds=60)

    async def deliver(at: dt.datetime, latency: int, status: int, head: str) -> UUID:
        [claimed] = await claim_due(conn, now=at, lease=lease)
        outcome = Outcome(attempted_at=at, latency_ms=latency, status_code=status, head=head)
        assert await record_outcome(conn, claimed, outcome, settings_for()) == "delivered"
        return claimed.delivery_id

    def log(delivery: Any) -> list[tuple[object, ...]]:
        return [(a.http_status, a.latency_ms, a.response_head, a.error) for a in delivery.log]

    first_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    delivery_id = await deliver(first_at, 7, 200, "first")
    assert await conn.fetchval("select count(*) from webhook_attempts") == 0
    [delivered] = (await list_deliveries(conn, hook.endpoint_id, limit=5, cursor=None)).items
    assert (delivered.status, delivered.delivered_at) == ("delivered", first_at)
    assert log(delivered) == [(200, 7, "first", None)]

    if again == "retry":
        await retry_delivery(conn, hook.endpoint_id, delivery_id)
    else:
        assert await replay(conn, hook.endpoint_id, start=first_at - dt.timedelta(days=1),
                            end=first_at + dt.timedelta(days=1)) == 1
    [pending] = (await list_deliveries(conn, hook.endpoint_id, limit=5, cursor=None)).items
    assert pending.status == "pending"
    assert log(pending) == [(200, 7, "first", None)]

    await deliver(first_at + dt.timedelta(seconds=5), 9, 204, "second")
    [twice] = (await list_deliveries(conn, hook.endpoint_id, limit=5, cursor=None)).items
    assert log(twice) == [(200, 7, "first", None), (204, 9, "second", None)]
