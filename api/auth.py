"""Who is calling: bearer credentials to a principal, per-principal rate limits, and guards.

One middleware reads ``Authorization: Bearer …``: an API key (``lk_…``) is a terminal, a JWT is
a member or staff by its audience. A credential that is present but wrong is a 401 on any route;
no credential leaves ``request.user`` None and the guards decide.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from api.deps import services_of
from loyalty.access.addresses import client_address
from loyalty.access.audit import REQUEST_ADDRESS
from loyalty.access.principals import MemberPrincipal, Principal, StaffPrincipal, TerminalPrincipal
from loyalty.access.terminal_keys import is_api_key
from loyalty.core.errors import AuthenticationFailed, PermissionDenied, RateLimited

# Guards are coroutines: litestar runs a plain-function guard on a worker thread, a thread
# hop on every request for what is an isinstance check.
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
# Operations endpoints: not rate limited, and a bearer credential there is theirs to read (the
# metrics token), not a principal's.
OPERATIONS = {"rate_limit": False, "own_credentials": True}


def bearer_credential(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise AuthenticationFailed("use Authorization: Bearer <token>")
            return credential.strip()
    return None


def rate_limit_key(principal: Principal | None, address: str) -> str:
    match principal:
        case MemberPrincipal(member_id=member_id):
            return f"member:{member_id}"
        case StaffPrincipal(staff_id=staff_id):
            return f"staff:{staff_id}"
        case TerminalPrincipal(terminal_id=terminal_id):
            return f"terminal:{terminal_id}"
        case None:
            return f"address:{address}"


class AuthenticationMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        services = services_of(scope["litestar_app"].state)
        opt = scope["route_handler"].opt
        credential = None if opt.get("own_credentials") else bearer_credential(scope)
        principal: Principal | None = None
        if credential is not None:
            if is_api_key(credential):
                principal = await services.terminal_keys.authenticate(
                    credential, services.pool.acquire)
            else:
                principal = services.signer.principal(credential)
                await services.revocations.check(principal)
        scope["user"] = principal
        address = client_address(scope, services.settings.trusted_proxies)
        if opt.get("rate_limit", True):
            wait = await services.limiter.hit(
                rate_limit_key(principal, address),
                limit=services.settings.rate_limit_per_minute, period_seconds=60,
                allowance=services.settings.rate_limit_allowance,
            )
            if wait:
                raise RateLimited("too many requests", retry_after=wait)
        # Every audit row the request writes says where it came from.
        token = REQUEST_ADDRESS.set(address)
        try:
            await next_app(scope, receive, send)
        finally:
            REQUEST_ADDRESS.reset(token)


def _principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    user: Principal | None = connection.scope.get("user")
    return user


Connection = ASGIConnection[Any, Any, Any, Any]


def _preflight(connection: Connection) -> bool:
    """OPTIONS says which methods a path takes, and answers a browser's CORS preflight, which
    carries no credentials: no guard stands in its way."""
    return connection.scope.get("method") == "OPTIONS"


def _guard(credential: str, admits: Callable[[Principal], bool], refused: str) -> Guard:
    """A guard: a request with no credential is a 401 naming the ``credential`` it needs; one
    whose principal ``admits`` turns away is a 403 saying ``refused``."""

    async def guard(connection: Connection, _: BaseRouteHandler) -> None:
        if _preflight(connection):
            return
        principal = _principal(connection)
        if principal is None:
            raise AuthenticationFailed(f"a {credential} is required")
        if not admits(principal):
            raise PermissionDenied(refused)

    return guard


members_only = _guard("member token", lambda principal: isinstance(principal, MemberPrincipal),
                      "only members may do this")
terminals_only = _guard(
    "terminal API key", lambda principal: isinstance(principal, TerminalPrincipal),
    "only store terminals may do this")


def staff_with(*roles: str) -> Guard:
    """A guard letting in staff whose role is one of ``roles``."""
    guard = _guard(
        "staff token",
        lambda principal: isinstance(principal, StaffPrincipal) and principal.role in roles,
        f"requires staff role {' or '.join(roles)}")
    guard.roles = roles  # type: ignore[attr-defined]  # read by the OpenAPI document
    return guard
