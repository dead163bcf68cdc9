"""Factories for API tests: members signed up through the API, staff and terminals made the way
the CLI makes them, each returning the credential a client would send."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from loyalty.access.passwords import Passwords
from loyalty.access.staff import create_staff
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.settings import Settings

PASSWORD = "correct horse battery"
_numbers = itertools.count(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class SignedUp:
    member: dict[str, Any]
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)

    @property
    def member_id(self) -> str:
        return str(self.member["member_id"])

    @property
    def member_uuid(self) -> UUID:
        return UUID(self.member_id)


class Actors:
    """Makes the principals a test needs, against the test's own database."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._passwords = Passwords(time_cost=1, memory_kib=8, parallelism=1)

    async def member(self, **fields: Any) -> SignedUp:
        n = next(_numbers)
        body = {"name": f"Member {n}", "password": PASSWORD, **fields}
        if "email" not in fields and "phone" not in fields:
            body["email"] = f"member{n}@example.com"
        response = await self.client.post("/v1/auth/member/register", json=body)
        assert response.status_code == 201, response.text
        data = response.json()
        return SignedUp(data["member"], data["tokens"]["access_token"],
                        data["tokens"]["refresh_token"])

    async def staff(self, role: str, *, email: str | None = None) -> str:
        """An access token for a new staff account with ``role``."""
        email = email or f"{role}{next(_numbers)}@staff.example"
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            password_hash = await self._passwords.hash(PASSWORD)
            await create_staff(conn, email=email, password_hash=password_hash, role=role)
        finally:
            await conn.close()
        response = await self.client.post("/v1/auth/staff/login",
                                          json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def terminal(self, store_code: str = "STORE-X") -> tuple[str, str]:
        """(api_key, terminal_id) for a new terminal of ``store_code``."""
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            store = await ensure_store(conn, code=store_code)
            created = await create_terminal(conn, store=store)
        finally:
            await conn.close()
        return created.api_key, str(created.terminal.terminal_id)


@pytest.fixture
def actors(client: httpx.AsyncClient, settings: Settings) -> Actors:
    return Actors(client, settings)


async def make_members(database_url: str, count: int, *, status: str = "active") -> list[UUID]:
    """``count`` members with empty balances, written in one statement, in member-id order:
    for tests that need a crowd (signing thousands up through the API would only be slow)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            with made as (
                insert into members (name, name_key, email, status)
                select 'Crowd ' || n, 'crowd' || n,
                       'crowd-' || n || '-' || gen_random_uuid() || '@example.com', $2
                  from generate_series(1, $1) as n
                returning member_id
            ), balances as (
                insert into point_balances (member_id) select member_id from made
            )
            select member_id from made order by member_id
            """,
            count, status)
    finally:
        await conn.close()
    return [row["member_id"] for row in rows]

