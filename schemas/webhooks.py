"""Webhook endpoints, their deliveries and attempts, on the wire
(docs/decisions/0014-webhook-delivery.md)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from schemas.base import Input, Instant, Output, text, whole
from schemas.outbox import EVENT_TYPES

# The event types an endpoint may subscribe to: every event the programme writes (the registry
# of payloads, schemas/outbox.py), and the webhooks' own.
SUBSCRIBABLE_EVENT_TYPES: tuple[str, ...] = (*EVENT_TYPES, "webhook.endpoint_disabled")
# Sent to one endpoint by ``POST /v1/webhooks/endpoints/{id}/test``; nobody subscribes to it.
TEST_EVENT_TYPE = "webhook.test"
# An admin-visible event written when the worker disables a failing endpoint.
ENDPOINT_DISABLED_TYPE = "webhook.endpoint_disabled"

EndpointUrl = Annotated[str, Meta(min_length=8, max_length=2000,
                                  pattern=whole(r"https?://[^\s\x00-\x1f\x7f]+"))]
EventTypeName = Annotated[str, Meta(min_length=1, max_length=64,
                                    pattern=whole(r"[a-z_]+\.[a-z_]+"))]
EventTypes = Annotated[list[EventTypeName], Meta(min_length=1, max_length=50)]
Description = Annotated[str, text(500, multiline=True)]
DisabledReason = Literal["failing", "manual"]
DeliveryStatus = Literal["pending", "delivered", "failed"]


class EndpointCreate(Input):
    """An endpoint: where events of the types named are sent."""

    url: EndpointUrl
    event_types: EventTypes
    description: Description = ""
    enabled: bool = True


class EndpointUpdate(Input):
    """What changes; a field left out stays as it is. Enabling an endpoint the worker disabled
    starts its deliveries again."""

    url: EndpointUrl | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = None


class Endpoint(Output):
    endpoint_id: UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    # Why it is disabled: "failing" (by the worker, after failing for the configured time) or
    # "manual"; null while enabled.
    disabled_reason: DisabledReason | None = None
    disabled_at: dt.datetime | None = None
    # The first failed attempt since the last success; null while deliveries succeed.
    failing_since: dt.datetime | None = None
    # Until then the previous secret signs too, after a rotation.
    previous_secret_expires_at: dt.datetime | None = None


class EndpointWithSecret(Endpoint, kw_only=True):
    """An endpoint with its signing secret: in the answer to its creation and rotation only."""

    secret: str


class Attempt(Output):
    attempted_at: dt.datetime
    latency_ms: int
    # Null when no answer came (refused address, connection error, timeout).
    http_status: int | None = None
    error: str | None = None
    # The first bytes of the answer, as text.
    response_head: str = ""


class Delivery(Output):
    delivery_id: UUID
    event_id: UUID
    event_type: str
    status: DeliveryStatus
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime | None = None
    last_error: str | None = None
    delivered_at: dt.datetime | None = None
    # Every logged attempt, oldest first.
    log: list[Attempt] = msgspec.field(default_factory=list)


class Replay(Input):
    """Send again every event of the endpoint's types that occurred in [from, to)."""

    from_: Instant = msgspec.field(name="from")
    to: Instant


class Replayed(Output):
    deliveries: int


class TestSent(Output):
    event_id: UUID
    delivery_id: UUID


class EndpointDisabled(Output):
    """The data of a ``webhook.endpoint_disabled`` event."""

    endpoint_id: UUID
    url: str
    failing_since: dt.datetime
    disabled_at: dt.datetime


class TestEvent(Output):
    """The data of a ``webhook.test`` event."""

    endpoint_id: UUID
    message: str
