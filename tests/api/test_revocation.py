"""Ended sessions end their access tokens on every instance within a second.

Two app instances share one database and one Redis, as two API processes behind a load balancer
do: a token is used on B while the session is ended on A, or by SQL typed by hand, and B must
refuse it within the promise (loyalty.access.revocation.PROMISE_SECONDS), with no database read per
request while nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import httpx
import jwt
import pytest
from litestar import Litestar

from api.app import create_app
from loyalty.access.principals import MemberPrincipal
from loyalty.access.revocation import LISTENER_NAME, PROMISE_SECONDS, Revocations
from loyalty.core.errors import AuthenticationFailed
from loyalty.core.settings import Settings
from tests.conftest import held, serve
from tests.factories import PASSWORD, Actors, bearer, query

Client = httpx.AsyncClient


@dataclass
class Instances:
    a: Client
    b: Client
    b_app: Litestar
    actors: Actors  # signs people up through A

    @property
    def b_revocations(self) -> Revocations:
        revocations: Revocations = self.b_app.state.services.revocations
        return revocations


@pytest.fixture
async def instances(settings: Settings) -> AsyncIterator[Instances]:
    @contextlib.asynccontextmanager
    async def two() -> AsyncIterator[Instances]:
        a_app, b_app = create_app(settings), create_app(settings)
        async with serve(a_app) as a, serve(b_app) as b:
            yield Instances(a, b, b_app, Actors(a, settings))

    async for pair in held(two()):
        yield pair


async def refused_within(client: Client, token: str, *, path: str = "/v1/me") -> float:
    """Seconds until ``client`` refuses ``token`` (polled), failing past the promise; until
    then every answer must be the one a valid token gets."""
    started = time.monotonic()
    while True:
        response = await client.get(path, headers=bearer(token))
        elapsed = time.monotonic() - started
        if response.status_code == 401:
            assert response.json()["type"].endswith(":session_ended"), response.text
            return elapsed
        assert response.status_code == 200, response.text
        assert elapsed <= PROMISE_SECONDS, f"still accepted {elapsed:.2f}s after the change"
        await asyncio.sleep(0.01)


async def accepted(client: Client, token: str, path: str = "/v1/me") -> bool:
    response = await client.get(path, headers=bearer(token))
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def session_of(token: str) -> UUID:
    return UUID(jwt.decode(token, options={"verify_signature": False})["sid"])


async def staff_login(client: Client, email: str) -> dict[str, str]:
    response = await client.post("/v1/auth/staff/login",
                                 json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


# -- log-out ----------------------------------------------------------------------------------


async def test_logout_on_one_instance_ends_the_access_token_on_another(
    instances: Instances,
) -> None:
    member = await instances.actors.member(email="leaving@example.com")
    other_device = await instances.a.post(
        "/v1/auth/member/login", json={"email": "leaving@example.com", "password": PASSWORD})
    assert await accepted(instances.b, member.access_token)

    logout = await instances.a.post("/v1/auth/logout",
                                    json={"refresh_token": member.refresh_token})
    assert logout.status_code == 204
    await refused_within(instances.b, member.access_token)
    # Log-out ends that session only: the member's phone stays signed in.
    assert await accepted(instances.b, other_device.json()["access_token"])


async def test_a_sign_in_in_the_same_second_as_a_logout_is_accepted(
    instances: Instances,
) -> None:
    member = await instances.actors.member(email="again@example.com")
    assert await accepted(instances.b, member.access_token)
    await instances.a.post("/v1/auth/logout", json={"refresh_token": member.refresh_token})
    again = await instances.a.post("/v1/auth/member/login",
                                   json={"email": "again@example.com", "password": PASSWORD})
    fresh = again.json()["access_token"]
    # No clock decides: the old token names the ended session, the new one a session of its own.
    assert session_of(fresh) != session_of(member.access_token)
    await refused_within(instances.b, member.access_token)
    assert await accepted(instances.b, fresh)
    assert await accepted(instances.a, fresh)


async def test_a_session_ended_by_sql_is_refused_on_every_instance(
    instances: Instances, settings: Settings
) -> None:
    member = await instances.actors.member()
    assert await accepted(instances.a, member.access_token)
    assert await accepted(instances.b, member.access_token)
    await query(settings.database_url or "",
                "update refresh_tokens set revoked_at = now() where family_id = $1",
                session_of(member.access_token))
    await refused_within(instances.a, member.access_token)
    await refused_within(instances.b, member.access_token)


# -- suspension -------------------------------------------------------------------------------


async def test_suspension_ends_the_members_tokens_everywhere_and_for_good(
    instances: Instances, settings: Settings
) -> None:
    member = await instances.actors.member()
    support = await instances.actors.staff("support")
    assert await accepted(instances.b, member.access_token)

    suspended = await instances.a.patch(f"/v1/members/{member.member_id}",
                                        headers=bearer(support), json={"status": "suspended"})
    assert suspended.status_code == 200, suspended.text
    await refused_within(instances.b, member.access_token)
    refresh = await instances.b.post("/v1/auth/refresh",
                                     json={"refresh_token": member.refresh_token})
    assert refresh.status_code == 401

    # Reinstated, the member signs in afresh; nothing from before the suspension comes back.
    reinstated = await instances.a.patch(f"/v1/members/{member.member_id}",
                                         headers=bearer(support), json={"status": "active"})
    assert reinstated.status_code == 200
    refresh = await instances.b.post("/v1/auth/refresh",
                                     json={"refresh_token": member.refresh_token})
    assert refresh.status_code == 401
    assert not await accepted(instances.b, member.access_token)
    rows = await query(settings.database_url or "",
                       "select count(*) filter (where revoked_at is null) as live"
                       "  from refresh_tokens where member_id = $1", member.member_uuid)
    assert rows[0]["live"] == 0
    login = await instances.b.post("/v1/auth/member/login",
                                   json={"email": member.member["email"], "password": PASSWORD})
    assert login.status_code == 200
    assert await accepted(instances.b, login.json()["access_token"])


async def test_suspension_by_sql_is_refused_on_every_instance(
    instances: Instances, settings: Settings
) -> None:
    member = await instances.actors.member()
    assert await accepted(instances.b, member.access_token)
    await query(settings.database_url or "",
                "update members set status = 'suspended' where member_id = $1",
                member.member_uuid)
    await refused_within(instances.b, member.access_token)


# -- staff accounts ---------------------------------------------------------------------------


async def _check_change_ends_tokens(instances: Instances, settings: Settings, role: str,
                                    email: str, change: str) -> None:
    """A ``role`` account signs in on one instance; once ``change`` (SQL on the account, its
    e-mail ``$1``) is made, the other instance refuses its access token and refreshing refuses
    its refresh token."""
    await instances.actors.staff(role, email=email)
    tokens = await staff_login(instances.a, email)
    assert await accepted(instances.b, tokens["access_token"], "/v1/stores")
    await query(settings.database_url or "", change, email)
    await refused_within(instances.b, tokens["access_token"], path="/v1/stores")
    refresh = await instances.b.post("/v1/auth/refresh",
                                     json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401


async def test_deactivating_a_staff_account_ends_its_tokens_everywhere(
    instances: Instances, settings: Settings
) -> None:
    await _check_change_ends_tokens(
        instances, settings, "marketer", "gone@staff.example",
        "update staff set active = false where email = $1")
    live = await query(settings.database_url or "",
                       "select count(*) from refresh_tokens t join staff s using (staff_id)"
                       " where s.email = 'gone@staff.example' and t.revoked_at is null")
    assert live[0]["count"] == 0


async def test_a_role_change_ends_the_tokens_that_carry_the_old_role(
    instances: Instances, settings: Settings
) -> None:
    await _check_change_ends_tokens(
        instances, settings, "admin", "demoted@staff.example",
        "update staff set role = 'analyst' where email = $1")
    # Signed in again, the account works with its new role and nothing more.
    again = await staff_login(instances.b, "demoted@staff.example")
    assert jwt.decode(again["access_token"], options={"verify_signature": False})["role"] \
        == "analyst"
    assert await accepted(instances.a, again["access_token"], "/v1/stores")
    terminals = await instances.a.get("/v1/terminals", headers=bearer(again["access_token"]))
    assert terminals.status_code == 403  # an admin's route


# -- when the listener is lost ----------------------------------------------------------------


async def _terminate_listeners(database_url: str, stop: asyncio.Event) -> int:
    """Terminate every session listener of the database, again and again until ``stop``: the
    push channel is down, and each reconnection is cut as soon as it is made."""
    conn = await asyncpg.connect(database_url)
    terminated = 0
    try:
        while not stop.is_set():
            terminated += await conn.fetchval(
                "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity"
                " where application_name = $1 and datname = current_database()) t",
                LISTENER_NAME)
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return terminated


async def test_standings_are_not_trusted_while_the_listener_is_down(
    instances: Instances, settings: Settings
) -> None:
    member = await instances.actors.member()
    assert await accepted(instances.b, member.access_token)
    stop = asyncio.Event()
    killer = asyncio.create_task(_terminate_listeners(settings.database_url or "", stop))
    try:
        await asyncio.sleep(0.3)  # the listeners are cut: changes from here on go unheard
        await query(settings.database_url or "",
                    "update refresh_tokens set revoked_at = now() where family_id = $1",
                    session_of(member.access_token))
        await refused_within(instances.b, member.access_token)
    finally:
        stop.set()
        assert await killer > 0


async def _passes(revocations: Revocations, principal: MemberPrincipal) -> bool:
    try:
        await revocations.check(principal)
    except AuthenticationFailed:
        return False
    return True


async def test_a_process_that_never_listened_reads_standings_at_most_a_second_old(
    instances: Instances, settings: Settings
) -> None:
    member = await instances.actors.member()
    assert settings.database_url
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        deaf = Revocations(pool, access_ttl=settings.access_token_ttl_seconds)
        principal = instances.b_app.state.services.signer.principal(member.access_token)
        await deaf.check(principal)
        await deaf.check(principal)
        assert deaf.reads == 1  # kept for a moment, but only for a moment
        await query(settings.database_url,
                    "update refresh_tokens set revoked_at = now() where family_id = $1",
                    session_of(member.access_token))
        started = time.monotonic()
        while await _passes(deaf, principal):
            assert time.monotonic() - started <= PROMISE_SECONDS
            await asyncio.sleep(0.01)
        with pytest.raises(AuthenticationFailed, match="session has ended"):
            await deaf.check(principal)
    finally:
        await pool.close()


# -- the request path stays cheap -------------------------------------------------------------


async def test_a_known_token_costs_no_database_read_of_its_standing(
    instances: Instances,
) -> None:
    member = await instances.actors.member()
    other = await instances.actors.member()
    revocations = instances.b_revocations
    # The listener has proven itself since now (on a loaded machine the instance's listener
    # may still be connecting; until it proves itself, standings are read again each second).
    started = time.monotonic()
    async with asyncio.timeout(10):
        while revocations.proven_at < started:  # noqa: ASYNC110 (proven by a callback, polled)
            await asyncio.sleep(0.02)
    before = revocations.reads
    for _ in range(30):
        assert await accepted(instances.b, member.access_token)
        assert await accepted(instances.b, other.access_token)
        await asyncio.sleep(0.02)  # 0.6 s: past several beats of the listener
    # One read per member on first sight, none after, as long as the listener proves itself.
    assert revocations.reads - before == 2


async def test_requests_arriving_together_share_one_read(instances: Instances) -> None:
    member = await instances.actors.member()
    revocations = instances.b_revocations
    before = revocations.reads
    answers = await asyncio.gather(*(instances.b.get("/v1/me", headers=member.headers)
                                     for _ in range(20)))
    assert {answer.status_code for answer in answers} == {200}
    assert revocations.reads - before == 1
