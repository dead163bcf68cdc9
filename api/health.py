"""Liveness, readiness, Prometheus metrics and the JWKS: public, not rate limited."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from litestar import Controller, Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import NO_RATE_LIMIT
from api.deps import Services, services_of
from api.errors import problem
from schemas.auth import Jwks
from schemas.base import Output

log = logging.getLogger(__name__)


class Health(Output):
    status: str
    checks: dict[str, str] = {}


async def _postgres_answers(services: Services) -> bool:
    """PostgreSQL answers a pooled connection or, failing that, a fresh one: a single pooled
    connection whose backend was just terminated must not take the instance out of rotation."""
    try:
        async with asyncio.timeout(2):
            await services.pool.fetchval("select 1")
        return True
    except Exception as exc:
        log.info("readiness: a pooled connection failed (%s); trying a fresh one", exc)
    assert services.settings.database_url
    try:
        async with asyncio.timeout(2):
            conn = await asyncpg.connect(services.settings.database_url)
            try:
                await conn.fetchval("select 1")
            finally:
                await conn.close()
        return True
    except Exception as exc:
        log.warning("readiness: PostgreSQL: %s", exc)
        return False


class HealthController(Controller):
    path = ""
    tags = ["operations"]
    opt = NO_RATE_LIMIT

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

    @get("/metrics", operation_id="metrics", media_type=CONTENT_TYPE_LATEST)
    async def metrics(self) -> Response[bytes]:
        """Prometheus exposition format."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @get("/.well-known/jwks.json", operation_id="jwks")
    async def jwks(self, state: State) -> Jwks:
        """Public keys that verify member and staff tokens, by ``kid``."""
        return Jwks(keys=services_of(state).signer.jwks()["keys"])
