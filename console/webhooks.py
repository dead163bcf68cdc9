"""Webhooks (admins): the endpoints, a new one (its secret shown once), an endpoint's delivery
log with a retry per delivery, a test event and a secret rotation, through the functions the
API's /v1/webhooks/endpoints calls (api/webhooks.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect

from console.pages import render, staff_session
from console.services import AnyRequest, services
from console.session import ConsoleSession, check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import ADMINS
from loyalty.core.db import transaction
from loyalty.core.errors import Conflict, InvalidInput
from loyalty.ops.delivery import list_deliveries, retry_delivery, send_test_event
from loyalty.ops.webhooks import (
    UnsafeUrl,
    create_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from schemas.base import whole
from schemas.webhooks import (
    SUBSCRIBABLE_EVENT_TYPES,
    EndpointCreate,
    EndpointUpdate,
    EndpointWithSecret,
)

PAGE_SIZE = 20
Cursor = Annotated[str | None, QueryParameter(max_length=200,
                                              pattern=whole(r"[A-Za-z0-9_-]*"))]
# What was just done, for the notice on the endpoint's page after a redirect.
Done = Annotated[str | None, QueryParameter(max_length=10, pattern=whole(r"[a-z]*"))]


async def _form(request: AnyRequest, session: ConsoleSession) -> Any:
    form = await request.form()
    check_csrf(request, session.csrf_token, form.get("csrf_token"))
    return form


async def _audit(conn: Any, session: ConsoleSession, action: str, endpoint_id: UUID,
                 **details: str) -> None:
    await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                       action=action, subject_kind="webhook_endpoint", subject_id=endpoint_id,
                       details={**details, "via": "console"})


@get("/webhooks")
async def webhooks_page(request: AnyRequest) -> Response[str]:
    """Every endpoint with its state, and the form for a new one."""
    session = await staff_session(request, ADMINS)
    async with transaction(services(request).pool) as conn:
        endpoints = await list_endpoints(conn)
    return render(request, "webhooks.html", session=session, endpoints=endpoints,
                  types=SUBSCRIBABLE_EVENT_TYPES, form={}, errors={}, created=None)


@post("/webhooks", status_code=200)
async def webhook_create(request: AnyRequest) -> Response[str]:
    """A new endpoint; the page shows its secret this once. Bad input: the page again, 400,
    the message next to its field, nothing written."""
    session = await staff_session(request, ADMINS)
    form = await _form(request, session)
    svc = services(request)
    values = {"url": (form.get("url") or "").strip(),
              "description": (form.get("description") or "").strip(),
              "event_types": form.getall("event_types", [])}
    errors: dict[str, str] = {}
    created: EndpointWithSecret | None = None
    try:
        data = msgspec.convert(values, EndpointCreate)
    except msgspec.ValidationError as exc:
        errors[_field_of(str(exc))] = "invalid"
    else:
        try:
            async with transaction(svc.pool) as conn:
                created = await create_endpoint(
                    conn, data, allow_private=svc.settings.webhooks_allow_private)
                await _audit(conn, session, "webhooks.create", created.endpoint_id,
                             url=created.url)
        except UnsafeUrl:
            errors["url"] = "refused"
        except InvalidInput as exc:
            errors[exc.field or "url"] = "invalid"
    async with transaction(svc.pool) as conn:
        endpoints = await list_endpoints(conn)
    return render(request, "webhooks.html", session=session, endpoints=endpoints,
                  types=SUBSCRIBABLE_EVENT_TYPES, form=values if errors else {}, errors=errors,
                  created=created, status_code=400 if errors else 200)


def _field_of(message: str) -> str:
    for name in ("url", "event_types", "description"):
        if f"$.{name}" in message:
            return name
    return "url"


async def _endpoint_page(request: AnyRequest, session: ConsoleSession, endpoint_id: UUID, *,
                         cursor: str | None = None, secret: str | None = None,
                         done: str | None = None, error: str | None = None,
                         status_code: int = 200) -> Response[str]:
    async with transaction(services(request).pool) as conn:
        endpoint = await get_endpoint(conn, endpoint_id)
        page = await list_deliveries(conn, endpoint_id, limit=PAGE_SIZE, cursor=cursor)
    template = "webhook_deliveries.html" if request.headers.get("hx-request") and cursor \
        else "webhook.html"
    return render(request, template, session=session, endpoint=endpoint, page=page,
                  secret=secret, done=done, error=error, status_code=status_code)


@get("/webhooks/{endpoint_id:uuid}")
async def webhook_page(request: AnyRequest, endpoint_id: FromPath[UUID],
                       cursor: Cursor = None, done: Done = None) -> Response[str]:
    """One endpoint: its state, buttons to test it and rotate its secret, its delivery log
    (each attempt) newest first, a retry per delivery; an htmx request for the next page gets
    the log's rows alone."""
    session = await staff_session(request, ADMINS)
    return await _endpoint_page(request, session, endpoint_id, cursor=cursor or None,
                                done=done if done in ("test", "retry") else None)


@post("/webhooks/{endpoint_id:uuid}/rotate", status_code=200)
async def webhook_rotate(request: AnyRequest, endpoint_id: FromPath[UUID]) -> Response[str]:
    """A new secret, shown on the page this once; the previous one signs too for the grace
    period."""
    session = await staff_session(request, ADMINS)
    await _form(request, session)
    svc = services(request)
    async with transaction(svc.pool) as conn:
        rotated = await rotate_secret(
            conn, endpoint_id, now=dt.datetime.now(dt.UTC),
            grace=dt.timedelta(seconds=svc.settings.webhooks_secret_grace_seconds))
        await _audit(conn, session, "webhooks.rotate_secret", endpoint_id)
    return await _endpoint_page(request, session, endpoint_id, secret=rotated.secret)


@post("/webhooks/{endpoint_id:uuid}/enabled", status_code=303)
async def webhook_enable(request: AnyRequest, endpoint_id: FromPath[UUID]) -> Response[Any]:
    """Enable the endpoint (its waiting deliveries resume) or disable it (they wait)."""
    session = await staff_session(request, ADMINS)
    form = await _form(request, session)
    svc = services(request)
    enabled = form.get("enabled") == "true"
    async with transaction(svc.pool) as conn:
        await update_endpoint(conn, endpoint_id, EndpointUpdate(enabled=enabled),
                              allow_private=svc.settings.webhooks_allow_private)
        await _audit(conn, session, "webhooks.update", endpoint_id, enabled=str(enabled))
    return Redirect(f"/console/webhooks/{endpoint_id}", status_code=303)


@post("/webhooks/{endpoint_id:uuid}/test", status_code=303)
async def webhook_test(request: AnyRequest, endpoint_id: FromPath[UUID]) -> Response[Any]:
    session = await staff_session(request, ADMINS)
    await _form(request, session)
    try:
        async with transaction(services(request).pool) as conn:
            event_id, _ = await send_test_event(conn, endpoint_id)
            await _audit(conn, session, "webhooks.test", endpoint_id, event_id=str(event_id))
    except Conflict:
        return await _endpoint_page(request, session, endpoint_id, error="disabled",
                                    status_code=400)
    return Redirect(f"/console/webhooks/{endpoint_id}?done=test", status_code=303)


@post("/webhooks/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry", status_code=303)
async def webhook_retry(request: AnyRequest, endpoint_id: FromPath[UUID],
                        delivery_id: FromPath[UUID]) -> Response[Any]:
    session = await staff_session(request, ADMINS)
    await _form(request, session)
    async with transaction(services(request).pool) as conn:
        await retry_delivery(conn, endpoint_id, delivery_id)
        await _audit(conn, session, "webhooks.retry", endpoint_id, delivery_id=str(delivery_id))
    return Redirect(f"/console/webhooks/{endpoint_id}?done=retry", status_code=303)


ROUTES = [webhooks_page, webhook_create, webhook_page, webhook_rotate, webhook_enable,
          webhook_test, webhook_retry]
