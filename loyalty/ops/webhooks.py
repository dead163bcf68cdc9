"""Webhook endpoints: where outbox events are sent, their signing secrets, and the check that
an endpoint's URL reaches only the public internet (docs/decisions/0014-webhook-delivery.md).

Signatures follow the Standard Webhooks specification: ``webhook-signature`` is
``v1,`` + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")), the secret being the bytes
the ``whsec_`` string's base64 carries; during a rotation's grace period both secrets sign,
their signatures space-separated.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput, NotFound
from schemas.webhooks import (
    SUBSCRIBABLE_EVENT_TYPES,
    Endpoint,
    EndpointCreate,
    EndpointUpdate,
    EndpointWithSecret,
)

SECRET_PREFIX = "whsec_"
# Random bytes in a secret: the specification asks for 24 to 64.
SECRET_BYTES = 32

# Never reachable, whatever LOYALTY_WEBHOOKS_ALLOW_PRIVATE says: the cloud metadata services,
# which hand out the machine's credentials to whoever asks from it.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(InvalidInput):
    """An endpoint URL that is not https, or reaches (or may reach) a non-public address."""

    code = "webhook_url_refused"


# -- secrets and signatures -------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets_)


# -- the address check ------------------------------------------------------------------------


def address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why a delivery may not connect to ``address``; None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if allow_private:
        return None
    if not address.is_global or address.is_multicast:
        return f"{address} is not a public address (loopback, private, link-local or reserved)"
    return None


def check_url_form(url: str, *, allow_private: bool) -> tuple[str, int]:
    """The host and port of an endpoint URL that has the right form: https (http only with
    private addresses allowed), a host, no credentials, no fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL is not valid: give https://host/path", field="url") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl("webhook URLs must use https: give an https:// URL", field="url")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host: give https://host/path", field="url")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL must not carry a user name or password: sign requests with"
                        " the endpoint's secret instead", field="url")
    if parts.fragment:
        raise UnsafeUrl("the URL must not have a #fragment: remove it", field="url")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """Every address ``host`` resolves to, all of them allowed; UnsafeUrl if any is not (a name
    with one public and one private address could be made to reach the private one)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise UnsafeUrl(f"the host {host} could not be resolved: check the URL's host name",
                            field="url") from None
        found = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
        if not found:
            raise UnsafeUrl(f"the host {host} has no address: check the URL's host name",
                            field="url")
    for address in found:
        reason = address_refusal(address, allow_private=allow_private)
        if reason is not None:
            raise UnsafeUrl(f"the URL's host {host} resolves to {reason}: webhooks are sent"
                            " only to the public internet", field="url")
    return found


async def check_endpoint_url(url: str, *, allow_private: bool) -> None:
    """Refuse (UnsafeUrl, 422) a URL a delivery would refuse to send to."""
    host, port = check_url_form(url, allow_private=allow_private)
    await resolve_checked(host, port, allow_private=allow_private)


def check_event_types(types: Sequence[str]) -> list[str]:
    """The types, each once, in the order given; InvalidInput naming an unknown one."""
    unknown = [t for t in types if t not in SUBSCRIBABLE_EVENT_TYPES]
    if unknown:
        raise InvalidInput(f"unknown event type {unknown[0]!r}: choose among "
                           f"{', '.join(SUBSCRIBABLE_EVENT_TYPES)}", field="event_types")
    return list(dict.fromkeys(types))


# -- endpoints --------------------------------------------------------------------------------

_COLUMNS = """endpoint_id, url, event_types, description, enabled, disabled_reason, disabled_at,
              failing_since, previous_secret_expires_at, created_at, updated_at"""


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        endpoint_id=row["endpoint_id"], url=row["url"], event_types=list(row["event_types"]),
        description=row["description"], enabled=row["enabled"],
        disabled_reason=row["disabled_reason"], disabled_at=row["disabled_at"],
        failing_since=row["failing_since"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        created_at=row["created_at"], updated_at=row["updated_at"])


def _with_secret(row: Any) -> EndpointWithSecret:
    endpoint = _endpoint(row)
    return EndpointWithSecret(secret=row["secret"], **{
        name: getattr(endpoint, name) for name in Endpoint.__struct_fields__})


async def create_endpoint(conn: Connection, data: EndpointCreate, *,
                          allow_private: bool) -> EndpointWithSecret:
    """A new endpoint with a new secret, shown in this answer only."""
    types = check_event_types(data.event_types)
    await check_endpoint_url(data.url, allow_private=allow_private)
    row = await conn.fetchrow(
        f"""
        insert into webhook_endpoints (url, event_types, description, enabled, disabled_reason,
                                       disabled_at, secret)
        values ($1, $2, $3, $4, case when $4 then null else 'manual' end,
                case when $4 then null else now() end, $5)
        returning {_COLUMNS}, secret
        """, data.url, types, data.description, data.enabled, new_secret())  # noqa: S608 - _COLUMNS is this module's constant
    return _with_secret(row)


async def list_endpoints(conn: Connection) -> list[Endpoint]:
    rows = await conn.fetch(f"select {_COLUMNS} from webhook_endpoints order by endpoint_id")  # noqa: S608 - _COLUMNS is this module's constant
    return [_endpoint(row) for row in rows]


async def get_endpoint(conn: Connection, endpoint_id: UUID) -> Endpoint:
    row = await conn.fetchrow(
        f"select {_COLUMNS} from webhook_endpoints where endpoint_id = $1", endpoint_id)  # noqa: S608 - _COLUMNS is this module's constant
    if row is None:
        raise NotFound("no such webhook endpoint", field="endpoint_id",
                       code="webhook_endpoint_not_found")
    return _endpoint(row)


async def update_endpoint(conn: Connection, endpoint_id: UUID, data: EndpointUpdate, *,
                          allow_private: bool) -> Endpoint:
    """Change what ``data`` gives. Enabling clears the failure state; disabling by hand says
    so (``manual``)."""
    types = check_event_types(data.event_types) if data.event_types is not None else None
    if data.url is not None:
        await check_endpoint_url(data.url, allow_private=allow_private)
    row = await conn.fetchrow(
        f"""
        update webhook_endpoints
           set url = coalesce($2, url),
               event_types = coalesce($3, event_types),
               description = coalesce($4, description),
               enabled = coalesce($5, enabled),
               disabled_reason = case when $5 is null then disabled_reason
                                      when $5 then null
                                      when enabled then 'manual' else disabled_reason end,
               disabled_at = case when $5 is null then disabled_at
                                  when $5 then null
                                  when enabled then now() else disabled_at end,
               failing_since = case when $5 and not enabled then null else failing_since end,
               updated_at = now()
         where endpoint_id = $1
        returning {_COLUMNS}
        """, endpoint_id, data.url, types, data.description, data.enabled)  # noqa: S608 - _COLUMNS is this module's constant
    if row is None:
        raise NotFound("no such webhook endpoint", field="endpoint_id",
                       code="webhook_endpoint_not_found")
    return _endpoint(row)


async def delete_endpoint(conn: Connection, endpoint_id: UUID) -> None:
    """The endpoint, its deliveries and their log (the attempts go with their deliveries); its
    events stay for other endpoints."""
    deleted = await conn.fetchval(
        "delete from webhook_endpoints where endpoint_id = $1 returning endpoint_id", endpoint_id)
    if deleted is None:
        raise NotFound("no such webhook endpoint", field="endpoint_id",
                       code="webhook_endpoint_not_found")
    await conn.execute("delete from webhook_deliveries where endpoint_id = $1", endpoint_id)


async def rotate_secret(conn: Connection, endpoint_id: UUID, *, grace: dt.timedelta,
                        now: dt.datetime) -> EndpointWithSecret:
    """A new secret, shown in this answer only; the one before still signs, beside it, for
    ``grace`` (a rotation during another's grace ends the older secret at once)."""
    row = await conn.fetchrow(
        f"""
        update webhook_endpoints
           set previous_secret = secret, secret = $2,
               previous_secret_expires_at = $3::timestamptz + $4::interval, updated_at = now()
         where endpoint_id = $1
        returning {_COLUMNS}, secret
        """, endpoint_id, new_secret(), now, grace)  # noqa: S608 - _COLUMNS is this module's constant
    if row is None:
        raise NotFound("no such webhook endpoint", field="endpoint_id",
                       code="webhook_endpoint_not_found")
    return _with_secret(row)
