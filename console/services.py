"""What the console uses of the process's services: built once by the API's lifespan
(``create_app``) and read from the app's state. A protocol, so the console stays beside the API
without importing it (pyproject's import-linter contracts)."""

from __future__ import annotations

from typing import Any, Protocol

import redis.asyncio as aioredis
from litestar import Request

from jobs.definition import JobContext
from loyalty.access.passwords import Passwords
from loyalty.access.ratelimit import RateLimiter
from loyalty.access.revocation import Revocations
from loyalty.access.tokens import TokenSigner
from loyalty.core.db import Pool
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.points.rules import RuleBook

AnyRequest = Request[Any, Any, Any]


class ConsoleServices(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def pool(self) -> Pool: ...
    @property
    def redis(self) -> aioredis.Redis: ...
    @property
    def signer(self) -> TokenSigner: ...
    @property
    def passwords(self) -> Passwords: ...
    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def revocations(self) -> Revocations: ...
    @property
    def rulebook(self) -> RuleBook: ...
    @property
    def programme(self) -> Programme: ...
    @property
    def jobs(self) -> JobContext: ...


def services(request: AnyRequest) -> ConsoleServices:
    found: ConsoleServices = request.app.state.services
    return found
