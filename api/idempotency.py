"""``@idempotent``: the one way a write handler takes an ``Idempotency-Key``.

The same key and body from the same principal get the first response back, byte for byte, with
its status and ``Idempotent-Replayed: true``; another body under the key is 422
``idempotency_key_reused``. Without a key a request runs as it always did, except where the key
is required (a missing required header is a schema error: 400). The mechanism is
``loyalty.core.idempotency``; decisions 0006 and 0012 say why it is shaped so.

Two ways to keep the key with the effect, one decorator:

- A ledger write (``in_ledger=True``) is given the request's ``idempotency`` and writes the key
  in its posting statement (``loyalty.points.ledger.post``): no round trip added, and a retry of a
  request in flight waits for that one statement and replays its answer.
- Any other write runs in the request's transaction (``conn``, ``api.deps.provide_conn``): the
  key is claimed there before the handler runs and answered there after it, so it commits
  exactly when the effect does. A retry of a request in flight waits for it at most
  ``LOYALTY_IDEMPOTENCY_WAIT_MS``, then gets 409 ``idempotency_key_in_flight`` with
  ``Retry-After``.
- A write that commits in steps (a campaign launch, a bulk grant: the handler takes no
  ``conn``) holds its claim in a transaction on a connection of its own for the length of the
  request, and answers it there at the end. Not a second connection from the pool: requests
  holding one pool connection each while waiting for a second could take the whole pool and
  wait for each other forever.

Why a decorator: litestar ends generator dependencies (the transaction's commit) after the
response is built, but hands them neither the response nor an order among themselves (their
cleanups run side by side in a task group), so a dependency cannot store the response in the
transaction. The decorator adds the header and the request to the handler's signature, so
OpenAPI shows the header (required or not) and still documents the handler's own return type.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar, cast, overload
from uuid import UUID

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter
from litestar.serialization import encode_json, get_serializer

from api.deps import AnyRequest, services_of
from loyalty.access.principals import MemberPrincipal, Principal, StaffPrincipal, TerminalPrincipal
from loyalty.core.db import Connection
from loyalty.core.idempotency import (
    Idempotency,
    claim,
    record_response,
    request_hash,
)
from loyalty.points.ledger import Outcome
from schemas.base import whole

_PATTERN = whole(r"[\x21-\x7e]+")
IdempotencyKey = Annotated[str, HeaderParameter(
    name="Idempotency-Key", min_length=1, max_length=255, pattern=_PATTERN,
    description="Required. Unique per intended write; a retry sends the same key and body "
                "and gets the first answer again.")]
OptionalIdempotencyKey = Annotated[str | None, HeaderParameter(
    name="Idempotency-Key", min_length=1, max_length=255, pattern=_PATTERN,
    description="Unique per intended write; a retry sends the same key and body and gets the "
                "first answer again. Without it, a retry is a new request.")]

REPLAYED = "Idempotent-Replayed"
_KEY = "idempotency_key"

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def stored_as(struct: type[msgspec.Struct]) -> ResponseSpec:
    """OpenAPI for a ledger write, which answers with stored bytes (the first response)."""
    return ResponseSpec(data_container=struct, description="Recorded, or replayed")


def respond(outcome: Outcome) -> Response[bytes]:
    """A ledger write's answer: the first response, or its replay."""
    return _response(outcome.status, outcome.body, replayed=outcome.replayed)


def principal_id(principal: Principal) -> UUID:
    """Whose key it is: a key is one principal's, never shared with another's."""
    match principal:
        case MemberPrincipal(member_id=member_id):
            return member_id
        case StaffPrincipal(staff_id=staff_id):
            return staff_id
        case TerminalPrincipal(terminal_id=terminal_id):
            return terminal_id


@overload
def idempotent(handler: H, /) -> H: ...
@overload
def idempotent(*, required: bool = False, in_ledger: bool = False) -> Callable[[H], H]: ...


def idempotent(
    handler: H | None = None, /, *, required: bool = False, in_ledger: bool = False,
) -> H | Callable[[H], H]:
    """Make a write handler idempotent by the request's ``Idempotency-Key`` (see the module).

    A handler that takes ``idempotency`` is given the request's ``Idempotency`` (None without a
    key); with ``in_ledger`` it must write it with its posting and answer with ``respond``.
    Otherwise the key is claimed in the request's transaction if the handler takes it
    (``conn``), else in a transaction of its own held while the handler runs.
    """
    if handler is None:
        return functools.partial(_idempotent, required=required, in_ledger=in_ledger)
    return _idempotent(handler, required=required, in_ledger=in_ledger)


def _idempotent(handler: H, *, required: bool, in_ledger: bool) -> H:
    own = inspect.signature(handler).parameters
    added: dict[str, Any] = {}
    if "request" not in own:
        added["request"] = Request
    added[_KEY] = IdempotencyKey if required else OptionalIdempotencyKey
    gives_idempotency = "idempotency" in own
    if in_ledger and not gives_idempotency:
        raise TypeError(f"{handler.__qualname__} writes in the ledger: it must take "
                        "`idempotency` and write it with its posting")

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        request: AnyRequest = (
            kwargs["request"] if "request" in own else kwargs.pop("request"))
        key: str | None = kwargs.pop(_KEY)
        idempotency = None if key is None else Idempotency(
            principal_id(request.user), key,
            request_hash(request.method, request.url.path, kwargs.get("data")))
        if gives_idempotency:
            kwargs["idempotency"] = idempotency
        if in_ledger or idempotency is None:
            return await handler(*args, **kwargs)
        if "conn" in own:
            return await _once(request, kwargs["conn"], idempotency,
                               lambda: handler(*args, **kwargs))
        async with _transaction_of_its_own(request) as conn:
            return await _once(request, conn, idempotency, lambda: handler(*args, **kwargs))

    # What litestar reads: the handler's own parameters, without the ``idempotency`` it is
    # given, with the header (and the request, if the handler did not ask for it) added.
    parameters = [p for name, p in own.items() if name != "idempotency"]
    for name, annotation in added.items():
        default = None if name == _KEY and not required else inspect.Parameter.empty
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                            annotation=annotation, default=default))
    # A function declares no __signature__ to mypy, but inspect.signature (and so litestar)
    # reads it first.
    wrapper.__signature__ = inspect.signature(handler).replace(  # type: ignore[attr-defined]
        parameters=parameters)
    wrapper.__annotations__ = {
        name: annotation for name, annotation in handler.__annotations__.items()
        if name != "idempotency"} | added
    # Called as the handler was, with the header litestar now fills besides.
    return cast(H, wrapper)


@asynccontextmanager
async def _transaction_of_its_own(request: AnyRequest) -> AsyncIterator[Connection]:
    """A transaction on a connection outside the pool, for the key of a write in steps."""
    conn: Connection = await asyncpg.connect(services_of(request.app.state).settings.database_url)
    try:
        async with conn.transaction():
            yield conn
    finally:
        await conn.close()


async def _once(
    request: AnyRequest, conn: Connection, idempotency: Idempotency,
    write: Callable[[], Awaitable[Any]],
) -> Response[Any]:
    """Claim the key in ``conn``'s transaction, write, store the answer in it after the write."""
    settings = services_of(request.app.state).settings
    # A key still in flight raises KeyInFlight: 409 with Retry-After, by the one error mapper.
    stored = await claim(conn, idempotency, wait_ms=settings.idempotency_wait_ms)
    if stored is not None:
        return _response(stored.status, stored.body, replayed=True)
    result = await write()
    status, body, headers = _rendered(request, result)
    await record_response(conn, idempotency, status, body)
    return _response(status, body, headers=headers)


def _rendered(request: AnyRequest, result: Any) -> tuple[int, bytes, dict[str, Any]]:
    """Status, body and headers of the handler's answer, encoded as litestar would."""
    route = request.route_handler
    if isinstance(result, Response):
        status, content, headers = result.status_code, result.content, dict(result.headers)
    else:
        status, content, headers = route.status_code, result, {}
    assert status is not None  # set from the method when the route was registered
    if content is None:
        return status, b"", headers
    return status, encode_json(content, get_serializer(route.resolve_type_encoders())), headers


def _response(status: int, body: bytes, *, replayed: bool = False,
              headers: dict[str, Any] | None = None) -> Response[Any]:
    headers = {**(headers or {}), **({REPLAYED: "true"} if replayed else {})}
    # A kept refusal (an offline till's batch item, docs/decisions/0016) is a problem.
    media_type = "application/problem+json" if status >= 400 else MediaType.JSON
    return Response(body or None, status_code=status, media_type=media_type,
                    headers=headers)
