"""Liveness, readiness, Prometheus metrics and the JWKS: public, not rate limited."""

from __future__ import annotations

import asyncio
import hmac
import logging

import asyncpg
from litestar import Controller, Response, get
from litestar.datastructures import CacheControlHeader, State
from prometheus_client import generate_latest

from api.auth import OPERATIONS
from api.deps import AnyRequest, Services, services_of
from api.errors import problem
from loyalty.core.db import ping
from loyalty.core.errors import AuthenticationFailed, PermissionDenied
from schemas.auth import Jwks
from schemas.base import Output

log = logging.getLogger(__name__)
# Prometheus' text format; litestar adds the charset itself (it was sent twice).
METRICS_TYPE = "text/plain; version=0.0.4"


class Health(Output):
    status: str
    checks: dict[str, str] = {}


async def _postgres_answers(services: Services) -> bool:
    """PostgreSQL answers a pooled connection or, failing that, a fresh one: a single pooled
    connection whose backend was just terminated must not take the instance out of rotation."""
    try:
        async with asyncio.timeout(2):
            await ping(services.pool)
        return True
    except Exception as exc:
        log.info("readiness: a pooled connection failed (%s); trying a fresh one", exc)
    assert services.settings.database_url
    try:
        async with asyncio.timeout(2):
            conn = await asyncpg.connect(services.settings.database_url)
            try:
                await ping(conn)
            finally:
                await conn.close()
        return True
    except Exception as exc:
        log.warning("readiness: PostgreSQL: %s", exc)
        return False


def _check_metrics_token(request: AnyRequest, token: str | None) -> None:
    if token is None:
        raise PermissionDenied(
            "metrics are off: set LOYALTY_METRICS_TOKEN and scrape with it as a bearer token, "
            "or LOYALTY_METRICS_PUBLIC=true where only a private network reaches this port",
            code="metrics_off")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                              token.encode()):
        raise AuthenticationFailed("send the metrics token: Authorization: Bearer <token>",
                                   code="metrics_token_required")


class HealthController(Controller):
    path = ""
    tags = ["operations"]
    opt = OPERATIONS

    @get("/health/live", operation_id="live")
    async def live(self) -> Health:
        """The process is up."""
        return Health(status="ok")

    @get("/health/ready", operation_id="ready")
    async def ready(self, state: State) -> Health:
        """200 while PostgreSQL answers (``degraded`` when Redis does not); 503 otherwise."""
        services = services_of(state)
        checks: dict[str, str] = {}
        checks["postgres"] = "ok" if await _postgres_answers(services) else "unavailable"
        try:
            async with asyncio.timeout(2):
                await services.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("readiness: Redis: %s", exc)
            checks["redis"] = "unavailable"
        # Without Redis the API still answers (no cache, limits unenforced): it stays in
        # rotation, flagged degraded. Every instance shares one Redis, so taking them out of
        # the load balancer for it would turn a degradation into an outage.
        if checks["postgres"] != "ok":
            raise problem(503, "unavailable", "PostgreSQL is unavailable",
                          extra={"checks": checks})
        return Health(status="ok" if checks["redis"] == "ok" else "degraded", checks=checks)

    @get("/metrics", operation_id="metrics", media_type=METRICS_TYPE)
    async def metrics(self, request: AnyRequest, state: State) -> Response[bytes]:
        """Prometheus exposition format: open when LOYALTY_METRICS_PUBLIC is true, otherwise
        for the bearer token in LOYALTY_METRICS_TOKEN."""
        settings = services_of(state).settings
        if not settings.metrics_public:
            _check_metrics_token(request, settings.metrics_token)
        return Response(generate_latest(), media_type=METRICS_TYPE)

    @get("/.well-known/jwks.json", operation_id="jwks",
         cache_control=CacheControlHeader(max_age=300, public=True))
    async def jwks(self, state: State) -> Jwks:
        """Public keys that verify member and staff tokens, by ``kid``."""
        return Jwks(keys=services_of(state).signer.jwks()["keys"])
