"""``create_app``: the one place the litestar application is built."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.plugins.problem_details import ProblemDetailsPlugin

from api.admin import (
    AuditController,
    MyStaffAccountController,
    StaffController,
    StoresController,
    TerminalsController,
)
from api.analytics import AnalyticsController
from api.auth import AuthenticationMiddleware
from api.body import StrictJSONRequest
from api.campaigns import CampaignsController
from api.coupons import CouponTemplatesController, MyCouponsController
from api.deps import Services
from api.errors import problem_details_config
from api.events import EventsController, MyEventsController, PosEventsController
from api.grants import PointsGrantsController
from api.health import HealthController
from api.jobs import JobsController, cancel_runs
from api.members import MeController, StaffMembersController
from api.observe import LoyaltyAPI
from api.openapi import BoundedTypesPlugin, docs_assets, openapi_config
from api.points import MyPointsController, StaffPointsController
from api.pos import PosController
from api.rules import EarningRulesController
from api.segments import SegmentsController
from api.sessions import SessionController
from api.tiers import TiersController
from api.webhooks import WebhookEndpointsController
from console.app import router as console_router
from jobs.catalogue import schedules
from jobs.definition import make_context
from jobs.scheduler import JOB_STATEMENT_TIMEOUT_SECONDS, run_scheduler
from loyalty.access.passwords import Passwords
from loyalty.access.ratelimit import RateLimiter
from loyalty.access.revocation import Revocations
from loyalty.access.terminal_keys import TerminalKeys
from loyalty.access.tokens import TokenSigner, load_or_create_signing_key
from loyalty.core.db import create_pool
from loyalty.core.logs import configure_logging
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings, load_settings
from loyalty.insights.backtest import cancel_backtests
from loyalty.ops.delivery import run_delivery_worker
from loyalty.points.groups import PurchaseGroups
from loyalty.points.rules import RuleBook
from schemas.base import EDGE_TYPES, decode_edge

log = logging.getLogger(__name__)
REDIS_CONNECTIONS = 64

CONTROLLERS = [
    HealthController,
    JobsController,
    SessionController,
    MeController,
    StaffMembersController,
    PosController,
    MyPointsController,
    StaffPointsController,
    PointsGrantsController,
    EarningRulesController,
    TiersController,
    CouponTemplatesController,
    MyCouponsController,
    SegmentsController,
    CampaignsController,
    AnalyticsController,
    EventsController,
    MyEventsController,
    PosEventsController,
    TerminalsController,
    StaffController,
    MyStaffAccountController,
    StoresController,
    WebhookEndpointsController,
    AuditController,
]


def build_signer(settings: Settings) -> TokenSigner:
    private_pem = settings.jwt_private_key or load_or_create_signing_key(settings.data_path)
    return TokenSigner(
        private_pem, issuer=settings.jwt_issuer, access_ttl=settings.access_token_ttl_seconds,
        previous_public_pems=settings.jwt_previous_public_keys,
    )


def build_passwords(settings: Settings) -> Passwords:
    return Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                     parallelism=settings.argon2_parallelism)


def cors(settings: Settings) -> CORSConfig | None:
    """Cross-origin calls from the member web app's origins only; none configured, none."""
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
        expose_headers=["Idempotent-Replayed", "Retry-After", "X-Request-Id"],
        max_age=600,
    )


def _report_scheduler_end(task: asyncio.Task[None]) -> None:
    """The embedded scheduler ends only when the app stops; if it fails, say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the embedded scheduler stopped: this process no longer runs jobs",
                  exc_info=task.exception())


def _report_worker_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the embedded webhook worker stopped: this process no longer delivers",
                  exc_info=task.exception())


def served_app() -> Litestar:
    """The API as ``loyalty serve``'s workers run it (uvicorn's factory)."""
    return create_app(serving=True)


# Allocations between two collections of the youngest generation (CPython's default: 700).
# A request allocates a few thousand objects, nearly all freed by reference counting: at the
# default the collector ran several times a request, 4.5 % of the earn profile.
YOUNG_COLLECTION_EVERY = 20_000


def _settle_collector() -> None:
    """What exists once a worker has started (the application, its routes, the pools) lives
    as long as the worker: set it aside so the collector stops walking it, and collect the
    young generation less often (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)


def create_app(settings: Settings | None = None, *, serving: bool = False) -> Litestar:
    """The API. ``settings`` must carry the database and Redis URLs (``loyalty serve`` resolves
    the embedded ones before building the app). ``serving``: this process serves nothing else
    (``loyalty serve``'s workers), so the garbage collector may be tuned for it."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)  # a worker process of uvicorn's has none yet
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError("create_app needs LOYALTY_DATABASE_URL and LOYALTY_REDIS_URL; "
                           "`loyalty serve` starts embedded servers when they are unset")
    signer = build_signer(settings)
    passwords = build_passwords(settings)
    schedules(settings)  # refuse a bad LOYALTY_JOB_SCHEDULES before serving, not in a task

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        assert settings.database_url
        assert settings.redis_url
        pool = await create_pool(settings.database_url, min_size=settings.db_pool_min,
                                 max_size=settings.db_pool_max,
                                 statement_timeout_seconds=settings.statement_timeout_seconds)
        # A burst of requests waits briefly for a Redis connection instead of failing: with
        # redis-py's default pool the 101st concurrent request would get "Too many
        # connections", and the limiter would stop counting for everyone for a while.
        client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=REDIS_CONNECTIONS, timeout=2,
            socket_timeout=2, socket_connect_timeout=2))
        # Runs started by hand (api/jobs.py): few connections, opened only when one runs.
        job_pool = await create_pool(settings.database_url, min_size=0, max_size=2,
                                     statement_timeout_seconds=JOB_STATEMENT_TIMEOUT_SECONDS)
        app.state.services = Services(
            settings=settings, pool=pool, redis=client, signer=signer, passwords=passwords,
            limiter=RateLimiter(client), rulebook=RuleBook(),
            programme=Programme.from_settings(settings),
            terminal_keys=TerminalKeys(),
            revocations=Revocations(pool, access_ttl=settings.access_token_ttl_seconds),
            jobs=make_context(settings.database_url, job_pool, settings),
            purchase_groups=PurchaseGroups(writers=settings.group_commit_writers,
                                           most=settings.group_commit_most)
            if settings.group_commit_writers else None,
        )
        # Every process is a candidate; the leader lock lets one act (jobs/scheduler.py).
        stop_scheduler = asyncio.Event()
        scheduler = asyncio.create_task(run_scheduler(settings, settings.database_url,
                                                      stop=stop_scheduler)) \
            if settings.scheduler == "embedded" else None
        if scheduler is not None:
            scheduler.add_done_callback(_report_scheduler_end)
        # Delivery workers share the work (FOR UPDATE SKIP LOCKED): one per process.
        stop_worker = asyncio.Event()
        worker = asyncio.create_task(run_delivery_worker(settings, settings.database_url,
                                                         stop=stop_worker)) \
            if settings.webhooks_worker == "embedded" else None
        if worker is not None:
            worker.add_done_callback(_report_worker_end)
        if serving:
            _settle_collector()
        try:
            async with app.state.services.revocations.listening(settings.database_url):
                yield
        finally:
            if worker is not None:
                stop_worker.set()
                with contextlib.suppress(Exception):  # reported by _report_worker_end
                    await worker
            if scheduler is not None:
                stop_scheduler.set()
                with contextlib.suppress(Exception):  # reported by _report_scheduler_end
                    await scheduler
            await client.aclose()
            await cancel_runs()
            await cancel_backtests()
            await job_pool.close()
            await pool.close()

    return LoyaltyAPI(
        route_handlers=[*CONTROLLERS, docs_assets(), console_router],
        lifespan=[lifespan],
        middleware=[AuthenticationMiddleware()],
        plugins=[ProblemDetailsPlugin(problem_details_config()), BoundedTypesPlugin()],
        # Query and path parameters of the bounded types are checked as bodies are.
        type_decoders=[(lambda kind: kind in EDGE_TYPES, decode_edge)],
        request_max_body_size=settings.max_request_bytes,
        cors_config=cors(settings),
        request_class=StrictJSONRequest,
        openapi_config=openapi_config(),
        # Logging is loyalty.core.logs' (one format, the request id on every line); litestar's own
        # default would reconfigure the root logger at INFO in a format of its own.
        logging_config=None,
        debug=False,
    )
