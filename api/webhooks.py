"""Webhook endpoints, their delivery log, retries and replays (admins only;
docs/decisions/0014-webhook-delivery.md).

Creating an endpoint and rotating its secret answer with the secret, once: like a terminal's
API key they take no ``Idempotency-Key`` (a replay would keep the secret in plain text for 72
hours in ``idempotency_keys``; decision 0012). A retried creation makes a second endpoint, which
the admin sees in the list and deletes; a retried rotation rotates again (the secret before is
still valid during the grace period, so nothing breaks).
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Staff, Svc, utc_now
from api.idempotency import idempotent
from api.params import Cursor, Limit
from loyalty.access.audit import record_audit
from loyalty.access.roles import ADMINS
from loyalty.ops.delivery import list_deliveries, replay, retry_delivery, send_test_event
from loyalty.ops.webhooks import (
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from schemas.base import Page
from schemas.webhooks import (
    Delivery,
    Endpoint,
    EndpointCreate,
    EndpointUpdate,
    EndpointWithSecret,
    Replay,
    Replayed,
    TestSent,
)


class WebhookEndpointsController(Controller):
    path = "/v1/webhooks/endpoints"
    tags = ["webhooks"]
    guards = [staff_with(*ADMINS)]
    dependencies = STAFF_DEPENDENCIES

    @post("", operation_id="createWebhookEndpoint", status_code=201)
    async def create(self, data: JSONBody[EndpointCreate], staff: Staff, conn: Db,
                     services: Svc) -> EndpointWithSecret:
        """An endpoint; its signing secret is in this answer only. The URL must be https and
        resolve only to public addresses."""
        endpoint = await create_endpoint(
            conn, data, allow_private=services.settings.webhooks_allow_private)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="webhooks.create", subject_kind="webhook_endpoint",
                           subject_id=endpoint.endpoint_id, details={"url": endpoint.url})
        return endpoint

    @get("", operation_id="listWebhookEndpoints")
    async def list_(self, conn: Db) -> list[Endpoint]:
        """Every endpoint, with its state (disabled, and why; failing since when)."""
        return await list_endpoints(conn)

    @get("/{endpoint_id:uuid}", operation_id="getWebhookEndpoint")
    async def read(self, endpoint_id: FromPath[UUID], conn: Db) -> Endpoint:
        return await get_endpoint(conn, endpoint_id)

    @patch("/{endpoint_id:uuid}", operation_id="updateWebhookEndpoint")
    @idempotent
    async def update(self, endpoint_id: FromPath[UUID], data: JSONBody[EndpointUpdate],
                     staff: Staff, conn: Db, services: Svc) -> Endpoint:
        """Change the URL, the event types, the description, or enable / disable it."""
        endpoint = await update_endpoint(
            conn, endpoint_id, data, allow_private=services.settings.webhooks_allow_private)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="webhooks.update", subject_kind="webhook_endpoint",
                           subject_id=endpoint_id)
        return endpoint

    @delete("/{endpoint_id:uuid}", operation_id="deleteWebhookEndpoint", status_code=204)
    @idempotent
    async def remove(self, endpoint_id: FromPath[UUID], staff: Staff, conn: Db) -> None:
        """The endpoint, its deliveries and their log."""
        await delete_endpoint(conn, endpoint_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="webhooks.delete", subject_kind="webhook_endpoint",
                           subject_id=endpoint_id)

    @post("/{endpoint_id:uuid}/rotate-secret", operation_id="rotateWebhookSecret",
          status_code=200)
    async def rotate(self, endpoint_id: FromPath[UUID], staff: Staff, conn: Db,
                     services: Svc) -> EndpointWithSecret:
        """A new signing secret, in this answer only; the previous one signs too (a second
        signature) until ``previous_secret_expires_at``."""
        endpoint = await rotate_secret(
            conn, endpoint_id, now=utc_now(),
            grace=dt.timedelta(seconds=services.settings.webhooks_secret_grace_seconds))
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="webhooks.rotate_secret", subject_kind="webhook_endpoint",
                           subject_id=endpoint_id)
        return endpoint

    @post("/{endpoint_id:uuid}/test", operation_id="sendWebhookTest", status_code=202)
    @idempotent
    async def test(self, endpoint_id: FromPath[UUID], staff: Staff, conn: Db) -> TestSent:
        """Send a ``webhook.test`` event to this endpoint; follow it in its deliveries."""
        event_id, delivery_id = await send_test_event(conn, endpoint_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="webhooks.test", subject_kind="webhook_endpoint",
                           subject_id=endpoint_id, details={"event_id": str(event_id)})
        return TestSent(event_id=event_id, delivery_id=delivery_id)

    @get("/{endpoint_id:uuid}/deliveries", operation_id="listWebhookDeliveries")
    async def deliveries(self, endpoint_id: FromPath[UUID], conn: Db, limit: Limit = 50,
                         cursor: Cursor = None) -> Page[Delivery]:
        """The endpoint's deliveries, newest first, each with every attempt: when, the status
        code, the latency, the error, the first bytes of the answer."""
        return await list_deliveries(conn, endpoint_id, limit=limit, cursor=cursor)

    @post("/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry",
          operation_id="retryWebhookDelivery", status_code=202)
    @idempotent
    async def retry(self, endpoint_id: FromPath[UUID], delivery_id: FromPath[UUID],
                    staff: Staff, conn: Db) -> Delivery:
        """Send the delivery again now, with a new retry period."""
        delivery = await retry_delivery(conn, endpoint_id, delivery_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="webhooks.retry", subject_kind="webhook_endpoint",
                           subject_id=endpoint_id, details={"delivery_id": str(delivery_id)})
        return delivery

    @post("/{endpoint_id:uuid}/replay", operation_id="replayWebhookEvents", status_code=202)
    @idempotent
    async def replay_events(self, endpoint_id: FromPath[UUID], data: JSONBody[Replay], staff: Staff,
                     conn: Db) -> Replayed:
        """Send again every event of the endpoint's types that occurred in [from, to) and is
        still kept."""
        count = await replay(conn, endpoint_id, start=data.from_, end=data.to)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="webhooks.replay", subject_kind="webhook_endpoint",
                           subject_id=endpoint_id,
                           details={"from": data.from_.isoformat(), "to": data.to.isoformat(),
                                    "deliveries": count})
        return Replayed(deliveries=count)
