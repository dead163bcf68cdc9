"""What a request depends on: process-wide services, a connection in a transaction, the caller."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias

import redis.asyncio as aioredis
from litestar import Request
from litestar.datastructures import State
from litestar.di import Dependency, Provide

from jobs.definition import JobContext
from loyalty.access.passwords import Passwords
from loyalty.access.principals import MemberPrincipal, Principal, StaffPrincipal, TerminalPrincipal
from loyalty.access.ratelimit import RateLimiter
from loyalty.access.revocation import Revocations
from loyalty.access.terminal_keys import TerminalKeys
from loyalty.access.tokens import TokenSigner
from loyalty.core.db import Connection, Pool
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.points.groups import PurchaseGroups
from loyalty.points.rules import RuleBook


@dataclass
class Services:
    """Built once per process in the app's lifespan."""

    settings: Settings
    pool: Pool
    redis: aioredis.Redis
    signer: TokenSigner
    passwords: Passwords
    limiter: RateLimiter
    rulebook: RuleBook
    programme: Programme
    terminal_keys: TerminalKeys
    # Ended sessions, suspended members, changed staff accounts: refused on every instance.
    revocations: Revocations
    # Runs of jobs started from the API, on a pool of their own with the jobs' timeout.
    jobs: JobContext
    # Purchases written together (LOYALTY_GROUP_COMMIT_WRITERS); None: each alone.
    purchase_groups: PurchaseGroups | None = None


# Any request, whatever its user, auth and state: handlers and the principal helpers read only
# what every request has.
AnyRequest: TypeAlias = Request[Any, Any, Any]

# Handler parameters filled by name from the providers below (litestar's explicit style).
_named = Dependency(kind="named")
Db: TypeAlias = Annotated[Connection, _named]
Ledger: TypeAlias = Annotated[Connection, _named]
Svc: TypeAlias = Annotated[Services, _named]
Me: TypeAlias = Annotated[MemberPrincipal, _named]
Staff: TypeAlias = Annotated[StaffPrincipal, _named]
Till: TypeAlias = Annotated[TerminalPrincipal, _named]


def utc_now() -> dt.datetime:
    """The one clock handlers read; the domain takes ``now`` as an argument."""
    return dt.datetime.now(dt.UTC)


def services_of(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_services(state: State) -> Services:
    return services_of(state)


async def provide_conn(state: State) -> AsyncIterator[Connection]:
    """One connection in one transaction per request: commit on return, roll back on raise."""
    async with services_of(state).pool.acquire() as conn, conn.transaction():
        yield conn


async def provide_ledger_conn(state: State) -> AsyncIterator[Connection]:
    """A connection outside any transaction, for ledger writes and single-statement reads:
    each statement is its own transaction, and ``loyalty.points.ledger.post`` opens one itself when
    it must wait for a lock."""
    async with services_of(state).pool.acquire() as conn:
        yield conn


def member_of(request: AnyRequest) -> MemberPrincipal:
    principal: Principal = request.user
    assert isinstance(principal, MemberPrincipal)  # the guard let only members in
    return principal


def staff_of(request: AnyRequest) -> StaffPrincipal:
    principal: Principal = request.user
    assert isinstance(principal, StaffPrincipal)
    return principal


def terminal_of(request: AnyRequest) -> TerminalPrincipal:
    principal: Principal = request.user
    assert isinstance(principal, TerminalPrincipal)
    return principal


async def provide_member(request: AnyRequest) -> MemberPrincipal:
    return member_of(request)


async def provide_staff(request: AnyRequest) -> StaffPrincipal:
    return staff_of(request)


async def provide_terminal(request: AnyRequest) -> TerminalPrincipal:
    return terminal_of(request)


# The two hottest routes (the till's purchase, the member's points) take the caller and the
# services from the request (``member_of``, ``terminal_of``, ``services_of``) and only their
# connection from a provider. litestar resolves the providers of one level side by side in an
# anyio task group: three tasks a request for the caller, the services and the connection,
# 12 % of a member read's samples (docs/performance.md). One provider is awaited in line.

# A controller's ``dependencies``, by who calls it. A handler is given only the names it takes
# (``conn: Db``, ``staff: Staff``, ...), so one mapping serves every controller of that kind.
_REQUEST_DEPENDENCIES = {
    "services": Provide(provide_services),
    "conn": Provide(provide_conn),
    "ledger": Provide(provide_ledger_conn),
}
STAFF_DEPENDENCIES = {**_REQUEST_DEPENDENCIES, "staff": Provide(provide_staff)}
MEMBER_DEPENDENCIES = {**_REQUEST_DEPENDENCIES, "me": Provide(provide_member)}
TERMINAL_DEPENDENCIES = {**_REQUEST_DEPENDENCIES, "terminal": Provide(provide_terminal)}
