"""What happens around every HTTP exchange, whatever its outcome: a request id, the headers every
response carries, the request's metrics and one access-log line.

It wraps the whole application rather than sitting among litestar's middleware: there, an
authentication failure passed through as an exception (a 401 counted as a 500) and a 405, raised
by the router, never reached it.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from typing import Any

from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import Message, Receive, Scope, Send
from prometheus_client import Counter, Histogram

from loyalty.access.principals import MemberPrincipal, StaffPrincipal, TerminalPrincipal
from loyalty.core.ids import uuid7
from loyalty.core.logs import REQUEST_ID

# A caller's own id is kept if it is one a log line can hold safely.
_CALLER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REQUESTS = Counter(
    "loyalty_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "loyalty_http_request_duration_seconds", "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
access_log = logging.getLogger("loyalty.access")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _CALLER_ID.match(given):
                return given
    return str(uuid7())


def _principal_kind(scope: Scope) -> str:
    match scope.get("user"):
        case MemberPrincipal():
            return "member"
        case StaffPrincipal(role=role):
            return f"staff:{role}"
        case TerminalPrincipal():
            return "terminal"
        case _:
            return "anonymous"


_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")


@functools.cache
def _counted(method: str, route: str, status: int) -> Any:
    """The counter's child for these labels, looked up once (labels() locks and builds a key)."""
    return REQUESTS.labels(method, route, str(status))


@functools.cache
def _timed(method: str, route: str) -> Any:
    return LATENCY.labels(method, route)


def _route(scope: Scope) -> str:
    # The template, never the path itself: paths hold member ids, and a label per id would grow
    # the metrics without bound. Unmatched paths (404) and methods (405, refused by the router
    # before it names a route) share one label.
    template = scope.get("path_template")
    return template if isinstance(template, str) else "unmatched"


class LoyaltyAPI(Litestar):
    """The litestar application with the exchange around each HTTP request."""

    _methods_by_path: dict[str, str] | None = None

    def _allow(self, scope: Scope, said: str) -> str:
        """Every method of the path. Litestar's own OPTIONS answer names only the methods its
        path had when the first of its handlers was registered (OPTIONS, POST for a path that
        also takes GET), while a 405 on the same path names them all."""
        if self._methods_by_path is None:
            self._methods_by_path = {
                route.path: ", ".join(sorted(getattr(route, "methods", ())))
                for route in self.routes}
        return self._methods_by_path.get(str(scope.get("path_template")), said)

    # Narrower than Litestar's (which also takes lifespan scopes): those go straight to it on the
    # first line, and the rest reads HTTP scopes only; casting each use would say less.
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # The raw list, not a headers object: this runs on every answer.
                headers = list(message.get("headers", ()))
                names = {name for name, _ in headers}
                headers.append((b"x-request-id", request_id.encode()))
                headers.append(_NOSNIFF)
                # Answers hold personal data, balances and tokens: no cache keeps them unless a
                # handler says otherwise (the JWKS and the docs' assets do).
                if b"cache-control" not in names:
                    headers.append(_NO_STORE)
                message["headers"] = headers
                if scope.get("method") == "OPTIONS" and b"allow" in names:
                    allow = MutableScopeHeaders.from_message(message)
                    allow["Allow"] = self._allow(scope, allow["allow"])
            await send(message)

        try:
            await super().__call__(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            method = str(scope.get("method", ""))
            method = method if method in _METHODS else "other"
            route = _route(scope)
            _counted(method, route, status).inc()
            _timed(method, route).observe(elapsed)
            access_log.info("%s %s %s %.1fms %s", method, route, status, elapsed * 1000,
                            _principal_kind(scope))
            REQUEST_ID.reset(token)
