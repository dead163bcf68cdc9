"""Delivering outbox events to webhook endpoints, at least once, signed, in order per member
(docs/decisions/0014-webhook-delivery.md).

Migration 0022's trigger writes a pending delivery per subscribed endpoint in the event's own
transaction. Workers (``run_delivery_worker``: in ``loyalty serve`` and ``loyalty worker``)
claim due deliveries with ``FOR UPDATE SKIP LOCKED``, taking each on a lease (``leased_until``,
``LOYALTY_WEBHOOKS_LEASE_SECONDS`` ahead) in a short transaction, send it outside any
transaction, and record the attempt. A worker that dies mid-attempt leaves the lease to run
out: the delivery is sent again, with the same ``webhook-id``. A delivery is not claimed while
an earlier one (by outbox seq) of the same member to the same endpoint is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection, Pool, create_pool, repeat_in_batches
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.metrics import OUTBOX_LAST_SEQ, WEBHOOK_DELIVERIES, WEBHOOK_OLDEST_UNDELIVERED
from loyalty.core.outbox import emit
from loyalty.core.paging import decode_cursor, encode_cursor
from loyalty.core.settings import Settings
from loyalty.ops.webhook_http import DeliveryClient, ReceiverError
from loyalty.ops.webhooks import UnsafeUrl, sign
from schemas.base import Page
from schemas.webhooks import (
    ENDPOINT_DISABLED_TYPE,
    TEST_EVENT_TYPE,
    Attempt,
    Delivery,
    EndpointDisabled,
    TestEvent,
)

log = logging.getLogger(__name__)

CHANNEL = "loyalty_webhooks"
TIMEOUT_SECONDS = 10.0
# Answers that send the client elsewhere, which a delivery never follows.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
BATCH = 100
# Requests a worker has in flight at once, and the keep-alive connections it keeps per receiver.
# What it costs: one worker waits on at most 32 answers at once, so a receiver taking 100 ms
# gets at most ~320 events/s from each worker; more workers share the work. (With httpx the
# pool scanned every connection per request, which held this to 10: docs/performance.md.)
IN_FLIGHT = 32
_encode = msgspec.json.Encoder().encode


# -- sending ----------------------------------------------------------------------------------


def delivery_client(*, allow_private: bool) -> DeliveryClient:
    """One client per worker: keep-alive connections (as many as requests in flight), each to
    an address checked when it is made, redirects never followed (loyalty/ops/webhook_http.py).
    """
    return DeliveryClient(allow_private=allow_private, keep=IN_FLIGHT)


@dataclass(frozen=True)
class Claimed:
    delivery_id: UUID
    endpoint_id: UUID
    event_id: UUID
    url: str
    secrets: tuple[str, ...]
    body: bytes


@dataclass(frozen=True)
class Outcome:
    attempted_at: dt.datetime
    latency_ms: int
    status_code: int | None = None
    error: str | None = None
    head: str = ""

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def envelope(row: Any) -> bytes:
    """The body sent: the event's envelope, as JSON."""
    return _encode({"id": str(row["event_id"]), "type": row["type"],
                    "occurred_at": row["occurred_at"].isoformat(),
                    "api_version": row["api_version"], "data": row["data"]})


async def send(client: DeliveryClient, claimed: Claimed, *, allow_private: bool) -> Outcome:
    """One attempt: POST the signed body; what came back, or why nothing did."""
    attempted_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()

    def outcome(**values: Any) -> Outcome:
        return Outcome(attempted_at=attempted_at,
                       latency_ms=round((time.monotonic() - started) * 1000), **values)

    timestamp = int(time.time())
    message_id = str(claimed.event_id)
    headers = (
        ("content-type", "application/json"),
        ("webhook-id", message_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", sign(claimed.secrets, message_id, timestamp, claimed.body)),
    )
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            answer = await client.post(claimed.url, headers, claimed.body)
    except UnsafeUrl as exc:
        return outcome(error=f"refused: {exc.detail}")
    except TimeoutError:
        return outcome(error=f"no answer within {TIMEOUT_SECONDS:.0f} s")
    except (ReceiverError, OSError) as exc:
        return outcome(error=str(exc)[:500])
    text = answer.head.decode("utf-8", errors="replace")
    error = None
    if answer.status in _REDIRECTS and answer.location is not None:
        error = (f"answered {answer.status}, a redirect to {answer.location[:200]}, not"
                 " followed: give the endpoint's final URL")
    elif not 200 <= answer.status < 300:
        error = f"answered {answer.status}"
    return outcome(status_code=answer.status, error=error, head=text)


# -- claiming and recording -------------------------------------------------------------------


# $1 now, $2 the lease, $3 how many. Read in the order of webhook_deliveries_due (migration
# 0039): a claim reads about as many pending deliveries as it takes, however many wait.
CLAIM_DUE = """
with due as (
    select d.endpoint_id, d.event_id
      from webhook_deliveries d
      join webhook_endpoints e on e.endpoint_id = d.endpoint_id and e.enabled
     where d.status = 'pending' and d.next_attempt_at <= $1
       and (d.leased_until is null or d.leased_until <= $1)
       and (d.member_id is null or not exists (
            select 1 from webhook_deliveries p
             where p.endpoint_id = d.endpoint_id and p.member_id = d.member_id
               and p.status = 'pending' and p.seq < d.seq))
     order by d.next_attempt_at, d.seq
     limit $3
       for update of d skip locked
)
update webhook_deliveries d
   set attempts = d.attempts + 1, leased_until = $1::timestamptz + $2::interval
  from due, webhook_endpoints e, outbox o
 where d.endpoint_id = due.endpoint_id and d.event_id = due.event_id
   and e.endpoint_id = d.endpoint_id and o.event_id = d.event_id
returning d.delivery_id, d.endpoint_id, d.event_id, e.url, e.secret, e.previous_secret,
          e.previous_secret_expires_at, o.type, o.occurred_at, o.api_version, o.data
"""


# Set in the claim's transaction, so that each claim is planned for the table as it is now, in
# index order. The claim must read the due index in its order and stop when the batch is full:
# - A cached plan. A worker claims on its connections for hours, and after five executions
#   PostgreSQL may keep one plan for the prepared statement: made while nothing waited (an
#   endpoint just made or disabled), it scanned the whole table for each candidate's earlier
#   deliveries; with thousands waiting a claim of 100 took 250 ms to 3.5 s, at the service's
#   priority, until the statement was prepared again (the bench's on phases took 100 s to
#   catch up, or 2 s, by whether the plan was kept).
# - A sort. With missing statistics, or those of a nearly empty table, the planner reads every
#   waiting delivery and sorts them: 30 ms a claim with 10,000 waiting instead of 0.5 ms. A
#   backlog grows from nothing in seconds, long before autovacuum analyzes the table again.
CLAIM_IN_INDEX_ORDER = "set local plan_cache_mode = force_custom_plan; set local enable_sort = off"


async def claim_due(conn: Connection, *, now: dt.datetime, lease: dt.timedelta,
                    limit: int = BATCH) -> list[Claimed]:
    """Up to ``limit`` due deliveries of enabled endpoints, each taken on a lease: none that
    another worker holds, none behind a pending earlier delivery of its member. The lease is
    ``leased_until``, which no index covers: a claim is a heap-only update (migration 0037)."""
    async with conn.transaction():
        await conn.execute(CLAIM_IN_INDEX_ORDER)
        rows = await conn.fetch(CLAIM_DUE, now, lease, limit)
    return [Claimed(
        delivery_id=row["delivery_id"], endpoint_id=row["endpoint_id"],
        event_id=row["event_id"], url=row["url"],
        secrets=(row["secret"], row["previous_secret"])
        if row["previous_secret"] and row["previous_secret_expires_at"] > now
        else (row["secret"],),
        body=envelope(row)) for row in rows]


def retry_delay(attempts: int, *, base: float, cap: float) -> dt.timedelta:
    """Wait after the ``attempts``-th failure: base × 2^(attempts-1), at most ``cap``, ±20 %
    so that deliveries failing together do not come back together."""
    seconds = min(cap, base * 2 ** min(attempts - 1, 40))
    return dt.timedelta(seconds=seconds * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret


async def record_outcome(conn: Connection, claimed: Claimed, outcome: Outcome,
                         settings: Settings) -> str:
    """Log the attempt and move the delivery on: delivered, retried later, or given up; an
    endpoint failing for longer than allowed is disabled and a ``webhook.endpoint_disabled``
    event says so. The outcome's name, for the metrics."""
    async with conn.transaction():
        return await _record(conn, claimed, outcome, settings)


async def _record(conn: Connection, claimed: Claimed, outcome: Outcome,
                  settings: Settings) -> str:
    now = outcome.attempted_at
    head = outcome.head.replace("\x00", "")
    # Nothing to record when the endpoint (or the event) was deleted meanwhile.
    if outcome.delivered:
        # The success is kept on the delivery (migration 0040).
        marked = await conn.fetchval(
            """
            update webhook_deliveries
               set status = 'delivered', delivered_at = $2, last_error = null,
                   delivered_status = $3, delivered_latency_ms = $4, delivered_head = $5
             where delivery_id = $1
            returning delivery_id
            """, claimed.delivery_id, now, outcome.status_code, outcome.latency_ms, head)
        if marked is None:
            return "gone"
        await conn.execute(
            """
            update webhook_endpoints set failing_since = null
             where endpoint_id = $1 and failing_since is not null
            """, claimed.endpoint_id)
        return "delivered"
    logged = await conn.fetchval(
        """
        insert into webhook_attempts (delivery_id, attempted_at, status_code, latency_ms,
                                      error, response_head)
        select delivery_id, $2, $3, $4, $5, $6 from webhook_deliveries
         where delivery_id = $1
           for update
        returning attempt_id
        """, claimed.delivery_id, now, outcome.status_code, outcome.latency_ms,
        outcome.error, head)
    if logged is None:
        return "gone"
    attempts = await conn.fetchval(
        "select attempts from webhook_deliveries where delivery_id = $1",
        claimed.delivery_id)
    delay = retry_delay(attempts or 1, base=settings.webhooks_retry_base_seconds,
                        cap=settings.webhooks_retry_max_seconds)
    status = await conn.fetchval(
        """
        update webhook_deliveries
           set last_error = $2,
               status = case when $3::timestamptz + $4::interval
                                  > retrying_since + $5::interval
                             then 'failed' else 'pending' end,
               next_attempt_at = $3::timestamptz + $4::interval, leased_until = null
         where delivery_id = $1
        returning status
        """, claimed.delivery_id, outcome.error, now, delay,
        dt.timedelta(seconds=settings.webhooks_retry_for_seconds))
    await _note_failure(conn, claimed.endpoint_id, now=now,
                        disable_after=dt.timedelta(
                            seconds=settings.webhooks_disable_after_seconds))
    return "gave_up" if status == "failed" else "failed"


async def _note_failure(conn: Connection, endpoint_id: UUID, *, now: dt.datetime,
                        disable_after: dt.timedelta) -> None:
    row = await conn.fetchrow(
        """
        update webhook_endpoints set failing_since = coalesce(failing_since, $2)
         where endpoint_id = $1
        returning url, enabled, failing_since
        """, endpoint_id, now)
    if row is None or not row["enabled"] or now - row["failing_since"] < disable_after:
        return
    await conn.execute(
        """
        update webhook_endpoints
           set enabled = false, disabled_reason = 'failing', disabled_at = $2, updated_at = $2
         where endpoint_id = $1
        """, endpoint_id, now)
    await emit(conn, ENDPOINT_DISABLED_TYPE, EndpointDisabled(
        endpoint_id=endpoint_id, url=row["url"], failing_since=row["failing_since"],
        disabled_at=now))
    log.warning("webhook endpoint %s disabled: failing since %s", endpoint_id,
                row["failing_since"].isoformat())


async def deliver_due(pool: Pool, client: DeliveryClient, settings: Settings) -> int:
    """Claim one batch, send it (side by side), record each outcome; how many were claimed."""
    async with pool.acquire() as conn:
        claimed = await claim_due(conn, now=dt.datetime.now(dt.UTC), lease=dt.timedelta(
            seconds=settings.webhooks_lease_seconds))
    if not claimed:
        return 0

    # At most IN_FLIGHT at once, each on a connection of its own.
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def gated(item: Claimed) -> Outcome:
        async with gate:
            return await send(client, item, allow_private=settings.webhooks_allow_private)

    outcomes = await asyncio.gather(*(gated(item) for item in claimed))
    # One transaction records the round: a commit per attempt would cost more than the
    # attempts. A worker dying before it commits sends the round again (at least once).
    # Endpoint by endpoint, so that two workers lock the endpoints' rows in one order.
    done = sorted(zip(claimed, outcomes, strict=True), key=lambda pair: pair[0].endpoint_id)
    succeeded = [(item, outcome) for item, outcome in done if outcome.delivered]
    async with pool.acquire() as conn, conn.transaction():
        names = [await _record(conn, item, outcome, settings)
                 for item, outcome in done if not outcome.delivered]
        delivered = await _record_delivered(conn, succeeded) if succeeded else 0
    names += ["delivered"] * delivered + ["gone"] * (len(succeeded) - delivered)
    for name in names:
        WEBHOOK_DELIVERIES.labels(name).inc()
    return len(claimed)


async def _record_delivered(conn: Connection, done: list[tuple[Claimed, Outcome]]) -> int:
    """The successes of a round in one statement (the common case, and the worker's pace),
    each kept on its delivery (migration 0040); how many still had their delivery."""
    count: int = await conn.fetchval(
        """
        with done as (
            select * from unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::int[],
                                 $5::text[])
                       as t (delivery_id, attempted_at, status_code, latency_ms, head)
        ),
        marked as (
            update webhook_deliveries d
               set status = 'delivered', delivered_at = done.attempted_at, last_error = null,
                   delivered_status = done.status_code,
                   delivered_latency_ms = done.latency_ms, delivered_head = done.head
              from done
             where d.delivery_id = done.delivery_id
            returning d.delivery_id, d.endpoint_id
        ),
        recovered as (
            update webhook_endpoints set failing_since = null
             where endpoint_id in (select endpoint_id from marked) and failing_since is not null
        )
        select count(*) from marked
        """,
        [item.delivery_id for item, _ in done], [o.attempted_at for _, o in done],
        [o.status_code for _, o in done], [o.latency_ms for _, o in done],
        [o.head.replace("\x00", "") for _, o in done])
    return count


async def next_due(conn: Connection) -> dt.datetime | None:
    """When the earliest pending delivery of an enabled endpoint is due (a leased one: when
    its lease runs out)."""
    due: dt.datetime | None = await conn.fetchval(
        """
        select min(greatest(d.next_attempt_at, d.leased_until)) from webhook_deliveries d
          join webhook_endpoints e on e.endpoint_id = d.endpoint_id and e.enabled
         where d.status = 'pending'
        """)
    return due


async def refresh_metrics(conn: Connection, now: dt.datetime) -> None:
    """The gauges: the outbox's latest seq, and each endpoint's oldest undelivered event."""
    OUTBOX_LAST_SEQ.set(await conn.fetchval("select coalesce(max(seq), 0) from outbox"))
    rows = await conn.fetch(
        """
        select e.endpoint_id,
               (select min(o.occurred_at) from webhook_deliveries d
                  join outbox o on o.event_id = d.event_id
                 where d.endpoint_id = e.endpoint_id and d.status = 'pending') as oldest
          from webhook_endpoints e
        """)
    WEBHOOK_OLDEST_UNDELIVERED.clear()
    for row in rows:
        age = (now - row["oldest"]).total_seconds() if row["oldest"] else 0.0
        WEBHOOK_OLDEST_UNDELIVERED.labels(str(row["endpoint_id"])).set(max(age, 0.0))


METRICS_EVERY = dt.timedelta(seconds=15)
# Held (shared) by every busy worker; the fan-out trigger notifies only when it can take it
# exclusively (migration 0028).
BUSY_LOCK = "select pg_advisory_lock_shared(hashtext('loyalty_webhooks_busy'))"
IDLE_AGAIN = "select pg_advisory_unlock_shared(hashtext('loyalty_webhooks_busy'))"


async def _hold_busy(listener: asyncpg.Connection | None, holding: bool, busy: bool) -> bool:
    """Take or give back the busy lock on the listening connection (none: nobody listens, and
    notifications cost nothing worth saving); whether it is now held."""
    if listener is None or listener.is_closed():
        return False
    if busy and not holding:
        await listener.execute(BUSY_LOCK)
    elif holding and not busy:
        await listener.execute(IDLE_AGAIN)
    return busy


async def run_delivery_worker(settings: Settings, dsn: str, *,
                              stop: asyncio.Event | None = None) -> None:
    """Deliver until ``stop`` is set: woken by NOTIFY on ``loyalty_webhooks``, and looking at
    least every ``LOYALTY_WEBHOOKS_POLL_SECONDS`` (a lost notification, a retry coming due)."""
    stop = stop or asyncio.Event()
    wake = asyncio.Event()
    pool = await create_pool(dsn, min_size=1, max_size=5)
    client = delivery_client(allow_private=settings.webhooks_allow_private)
    listener: asyncpg.Connection | None = None
    metrics_at = dt.datetime.min.replace(tzinfo=dt.UTC)
    holding = False

    def woken(*_: object) -> None:
        wake.set()

    try:
        while not stop.is_set():
            if listener is None or listener.is_closed():
                holding = False  # a session's advisory locks end with it
                try:
                    listener = await asyncpg.connect(dsn)
                    await listener.add_listener(CHANNEL, woken)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("webhooks: cannot listen for new events (%s); polling", exc)
                    listener = None
            wake.clear()
            try:
                # Busy: transactions do not notify meanwhile (migration 0028: a NOTIFY
                # serialises commits). Idle again: one more look, for what was written while
                # the lock was held.
                while True:
                    holding = await _hold_busy(listener, holding, True)
                    while (await deliver_due(pool, client, settings) == BATCH
                           and not stop.is_set()):
                        pass
                    holding = await _hold_busy(listener, holding, False)
                    if stop.is_set() or await deliver_due(pool, client, settings) == 0:
                        break
                async with pool.acquire() as conn:
                    due = await next_due(conn)
                    now = dt.datetime.now(dt.UTC)
                    if now - metrics_at >= METRICS_EVERY:
                        await refresh_metrics(conn, now)
                        metrics_at = now
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhooks: delivery round failed (%s); trying again", exc)
                due = None
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    holding = await _hold_busy(listener, holding, False)
            wait = settings.webhooks_poll_seconds
            if due is not None:
                wait = min(wait, max((due - dt.datetime.now(dt.UTC)).total_seconds(), 0.01))
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
    finally:
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await listener.close()
        await client.aclose()
        await pool.close()


# -- what admins do ---------------------------------------------------------------------------


async def _endpoint_exists(conn: Connection, endpoint_id: UUID) -> bool:
    found: bool = await conn.fetchval(
        "select exists (select 1 from webhook_endpoints where endpoint_id = $1)", endpoint_id)
    return found


async def send_test_event(conn: Connection, endpoint_id: UUID) -> tuple[UUID, UUID]:
    """A ``webhook.test`` event for this endpoint alone, delivered like any other; the event's
    and the delivery's ids."""
    enabled = await conn.fetchval(
        "select enabled from webhook_endpoints where endpoint_id = $1 for share", endpoint_id)
    if enabled is None:
        raise NotFound("no such webhook endpoint", field="endpoint_id",
                       code="webhook_endpoint_not_found")
    if not enabled:
        raise Conflict("the endpoint is disabled: enable it first, then send the test",
                       code="webhook_endpoint_disabled")
    event_id = await emit(conn, TEST_EVENT_TYPE, TestEvent(
        endpoint_id=endpoint_id, message="a test event sent from the loyalty programme"))
    delivery_id: UUID = await conn.fetchval(
        """
        insert into webhook_deliveries (endpoint_id, event_id, seq, member_id)
        select $1, event_id, seq, null from outbox where event_id = $2
        returning delivery_id
        """, endpoint_id, event_id)
    await conn.execute("select pg_notify($1, '')", CHANNEL)
    return event_id, delivery_id


# Before a delivered delivery is sent again, its success, kept on it (migration 0040), goes into
# the attempts, so that the log keeps it. $1 the endpoint; $2 one delivery, or $3 and $4 the
# period of the events whose deliveries are sent again.
_KEEP_SUCCESSES = """
insert into webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, response_head)
select delivery_id, delivered_at, delivered_status, delivered_latency_ms,
       coalesce(delivered_head, '')
  from webhook_deliveries
 where endpoint_id = $1 and delivered_status is not null
   and ($2::uuid is null or delivery_id = $2)
   and ($3::timestamptz is null
        or event_id in (select event_id from outbox
                         where occurred_at >= $3 and occurred_at < $4::timestamptz))
"""


async def retry_delivery(conn: Connection, endpoint_id: UUID, delivery_id: UUID) -> Delivery:
    """Send a delivery again now, whatever its state, with a new retry period."""
    async with conn.transaction():
        await conn.execute(_KEEP_SUCCESSES, endpoint_id, delivery_id, None, None)
        updated = await conn.fetchval(
            """
            update webhook_deliveries
               set status = 'pending', next_attempt_at = now(), leased_until = null,
                   retrying_since = now(), delivered_status = null,
                   delivered_latency_ms = null, delivered_head = null
             where delivery_id = $1 and endpoint_id = $2
            returning delivery_id
            """, delivery_id, endpoint_id)
    if updated is None:
        raise NotFound("no such delivery for this endpoint", field="delivery_id",
                       code="webhook_delivery_not_found")
    await conn.execute("select pg_notify($1, '')", CHANNEL)
    page = await _deliveries(conn, endpoint_id, only=delivery_id, limit=1, before=None)
    return page.items[0]


async def replay(conn: Connection, endpoint_id: UUID, *, start: dt.datetime,
                 end: dt.datetime) -> int:
    """Send again (or for the first time) every event of the endpoint's types that occurred
    in [start, end) and is still in the outbox; how many deliveries that makes."""
    if start >= end:
        raise InvalidInput("'from' must be before 'to'", field="from")
    if not await _endpoint_exists(conn, endpoint_id):
        raise NotFound("no such webhook endpoint", field="endpoint_id",
                       code="webhook_endpoint_not_found")
    async with conn.transaction():
        await conn.execute(_KEEP_SUCCESSES, endpoint_id, None, start, end)
        count: int = await conn.fetchval(
            """
            with sent as (
                insert into webhook_deliveries (endpoint_id, event_id, seq, member_id)
                select e.endpoint_id, o.event_id, o.seq, o.member_id
                  from outbox o join webhook_endpoints e on o.type = any (e.event_types)
                 where e.endpoint_id = $1 and o.occurred_at >= $2 and o.occurred_at < $3
                on conflict (endpoint_id, event_id) do update
                   set status = 'pending', next_attempt_at = now(), leased_until = null,
                       retrying_since = now(), delivered_status = null,
                       delivered_latency_ms = null, delivered_head = null
                returning 1
            )
            select count(*) from sent
            """, endpoint_id, start, end)
    await conn.execute("select pg_notify($1, '')", CHANNEL)
    return count


async def list_deliveries(conn: Connection, endpoint_id: UUID, *, limit: int,
                          cursor: str | None) -> Page[Delivery]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    if not await _endpoint_exists(conn, endpoint_id):
        raise NotFound("no such webhook endpoint", field="endpoint_id",
                       code="webhook_endpoint_not_found")
    return await _deliveries(conn, endpoint_id, only=None, limit=limit,
                             before=decode_cursor(cursor) if cursor else None)


async def _deliveries(conn: Connection, endpoint_id: UUID, *, only: UUID | None, limit: int,
                      before: UUID | None) -> Page[Delivery]:
    rows = await conn.fetch(
        """
        select d.delivery_id, d.event_id, o.type, d.status, d.attempts,
               greatest(d.next_attempt_at, d.leased_until) as next_attempt_at,
               d.last_error, d.created_at, d.delivered_at, d.delivered_status,
               d.delivered_latency_ms, d.delivered_head
          from webhook_deliveries d join outbox o on o.event_id = d.event_id
         where d.endpoint_id = $1 and ($2::uuid is null or d.delivery_id = $2)
           and ($3::uuid is null or d.delivery_id < $3)
         order by d.delivery_id desc
         limit $4
        """, endpoint_id, only, before, limit + 1)
    page = rows[:limit]
    attempts = await conn.fetch(
        """
        select delivery_id, attempted_at, status_code, latency_ms, error, response_head
          from webhook_attempts where delivery_id = any ($1::uuid[])
         order by attempt_id
        """, [row["delivery_id"] for row in page])
    logs: dict[UUID, list[Attempt]] = {}
    for a in attempts:
        logs.setdefault(a["delivery_id"], []).append(Attempt(
            attempted_at=a["attempted_at"], http_status=a["status_code"],
            latency_ms=a["latency_ms"], error=a["error"], response_head=a["response_head"]))
    for row in page:
        if row["delivered_status"] is not None:  # the success, kept on the delivery
            logs.setdefault(row["delivery_id"], []).append(Attempt(
                attempted_at=row["delivered_at"], http_status=row["delivered_status"],
                latency_ms=row["delivered_latency_ms"], error=None,
                response_head=row["delivered_head"] or ""))
    items = [Delivery(
        delivery_id=row["delivery_id"], event_id=row["event_id"], event_type=row["type"],
        status=row["status"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        last_error=row["last_error"], created_at=row["created_at"],
        delivered_at=row["delivered_at"], log=logs.get(row["delivery_id"], []))
        for row in page]
    next_cursor = encode_cursor(page[-1]["delivery_id"]) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


# -- retention --------------------------------------------------------------------------------

# A pending delivery to an endpoint deleted meanwhile (migration 0038) waits for nothing.
_DELETE_OLD_EVENTS = """
with doomed as (
    select o.event_id from outbox o
     where o.occurred_at < $1
       and not exists (select 1 from webhook_deliveries d
                         join webhook_endpoints e on e.endpoint_id = d.endpoint_id
                        where d.event_id = o.event_id and d.status = 'pending')
     order by o.occurred_at
     limit $2
),
deliveries as (
    delete from webhook_deliveries where event_id in (select event_id from doomed)
),
gone as (delete from outbox where event_id in (select event_id from doomed) returning 1)
select count(*) from gone
"""


async def delete_old_events(conn: Connection, *, before: dt.datetime,
                            batch_size: int = 5_000) -> dict[str, int]:
    """Events that occurred before ``before`` and wait for no delivery (delivered, given up,
    or sent to nobody), with their deliveries and log, in bounded transactions."""
    deleted = await repeat_in_batches(conn, _DELETE_OLD_EVENTS, before, batch_size=batch_size)
    return {"events": deleted}
