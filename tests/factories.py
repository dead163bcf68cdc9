"""Factories: the one home of what tests build again and again.

Principals signed up through the API (``Actors``), and a marketer and a till to act through
(``Staffed``); rows written directly when the API would only be slow (``make_members``,
``insert_member``, ``insert_lot``, ``Shop``) and read beside the API (``query``); the time zone
and programme the tests run under (``TOKYO``, ``PROGRAMME``); request bodies
(``purchase_body``), keys, and the populated world of the authorization matrix (``World``).
Test modules import from here, never from one another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar

from loyalty.access.passwords import Passwords
from loyalty.access.staff import create_staff
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import Connection, init_connection
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.points.rules import ensure_default_rules
from schemas.base import Instant

PASSWORD = "correct horse battery"
_numbers = itertools.count(1)


# -- principals ---------------------------------------------------------------------------------


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
    """Makes the principals a test needs, against the test's own database: members signed up
    through the API, staff and terminals made the way the CLI makes them, each returning the
    credential a client would send."""

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
        conn = await _connect(self.settings)
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
        conn = await _connect(self.settings)
        try:
            store = await ensure_store(conn, code=store_code)
            created = await create_terminal(conn, store=store)
        finally:
            await conn.close()
        return created.api_key, str(created.terminal.terminal_id)


async def _connect(settings: Settings) -> Connection:
    assert settings.database_url, "the test's settings name its database"
    conn: Connection = await asyncpg.connect(settings.database_url)
    return conn


# -- rows written directly ----------------------------------------------------------------------


async def query(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement on a connection of its own (jsonb decoded as the service does): for
    tests reading or arranging rows beside the API."""
    conn = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@dataclass
class Staffed:
    """A client with a marketer and a till signed in to act through, and the database to read
    what they did from."""

    client: httpx.AsyncClient
    actors: Actors
    database_url: str
    marketer: dict[str, str]
    till: dict[str, str]

    async def fetch(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        return await query(self.database_url, statement, *args)

    async def value(self, statement: str, *args: Any) -> Any:
        return (await self.fetch(statement, *args))[0][0]



async def make_members(database_url: str, count: int, *, status: str = "active") -> list[UUID]:
    """``count`` members with empty balances, written in one statement, in member-id order:
    for tests that need a crowd (signing thousands up through the API would only be slow)."""
    conn: Connection = await asyncpg.connect(database_url)
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


# The columns a test may set on a member written directly; the rest keep their defaults.
_MEMBER_COLUMNS = frozenset({"member_id", "status", "birth_date", "joined_at", "merged_into"})


async def insert_member(conn: Connection, name: str, **columns: object) -> UUID:
    """A member named ``name`` (its name key too) with an empty balance, written directly:
    ``columns`` (of ``_MEMBER_COLUMNS``) are set as given, the others keep their defaults."""
    unknown = columns.keys() - _MEMBER_COLUMNS
    assert not unknown, f"not a member column a test sets: {sorted(unknown)}"
    names = ["name", "name_key", *columns]
    placeholders = ", ".join(["$1", "$1", *(f"${n}" for n in range(2, len(columns) + 2))])
    member_id: UUID = await conn.fetchval(
        f"""
        with m as (insert into members ({", ".join(names)}) values ({placeholders})
                   returning member_id)
        insert into point_balances (member_id) select member_id from m returning member_id
        """, name, *columns.values())  # noqa: S608 - column names from the test's own keyword arguments
    return member_id


async def insert_lot(conn: Connection, member_id: UUID, earned: dt.datetime, points: int, *,
                     expires: dt.datetime | None = None,
                     outcomes: tuple[tuple[dt.datetime, str, int], ...] = (),
                     origin_lot_id: UUID | None = None) -> UUID:
    """A lot as the ledger writes it, written directly: the entry that earned it (a transfer
    when it continues ``origin_lot_id``), the lot, and for each outcome (when, entry kind,
    points) an entry drawing on it with its allocation; the member's balance kept equal to the
    sum of their entries."""
    kind = "earn" if origin_lot_id is None else "transfer"
    entry_id = await conn.fetchval(
        "insert into point_entries (member_id, entry_id, kind, amount, reason, source,"
        " created_at) values ($1, uuid_v7(), $2, $3, 'test', 'system', $4) returning entry_id",
        member_id, kind, points, earned)
    taken = sum(p for _, _, p in outcomes)
    lot_id: UUID = await conn.fetchval(
        "insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,"
        " available_at, released_at, expires_at, origin_lot_id)"
        " values ($1, uuid_v7(), $2, $3, $4, $5, $5, $5, $6, $7) returning lot_id",
        member_id, entry_id, points, points - taken, earned, expires, origin_lot_id)
    for when, outcome, drawn in outcomes:
        await conn.execute(
            """
            with e as (
                insert into point_entries (member_id, entry_id, kind, amount, reason, source,
                                           created_at)
                values ($1, uuid_v7(), $3, -$4::bigint, 'test', 'system', $5)
                returning entry_id
            )
            insert into point_allocations (member_id, entry_id, lot_id, points)
            select $1, entry_id, $2, -$4::bigint from e
            """, member_id, lot_id, outcome, drawn, when)
    await conn.execute(
        "update point_balances set available ="
        " (select sum(amount) from point_entries where member_id = $1) where member_id = $1",
        member_id)
    return lot_id


_shop_receipts = itertools.count()


class Shop:
    """Rows made directly, as a factory would: members, and purchases at one till."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.store_id: UUID | None = None
        self.terminal_id: UUID | None = None

    async def open(self) -> Shop:
        await ensure_default_rules(self.conn)
        self.store_id = await self.conn.fetchval(
            "insert into stores (code, name) values ('RFM-1', 'RFM') returning store_id")
        self.terminal_id = await self.conn.fetchval(
            """
            insert into terminals (store_id, name, key_prefix, key_hash)
            values ($1, 'till', 'rfm-test', '\\x00') returning terminal_id
            """, self.store_id)
        return self

    @classmethod
    async def reopen(cls, conn: Connection) -> Shop:
        """The shop ``open`` made earlier in this transaction, to buy there again."""
        shop = cls(conn)
        row = await conn.fetchrow(
            "select s.store_id, t.terminal_id from stores s join terminals t using (store_id)"
            " where s.code = 'RFM-1'")
        assert row is not None, "open the shop first"
        shop.store_id, shop.terminal_id = row["store_id"], row["terminal_id"]
        return shop

    async def member(self, name: str, status: str = "active") -> UUID:
        return await insert_member(self.conn, name, status=status)

    async def buy(self, member_id: UUID, when: dt.datetime, total: int,
                  returned: int = 0) -> None:
        await self.conn.execute(
            """
            insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                                   occurred_at, currency, total, lines, points_earned,
                                   points_redeemed, rule_version, returned_amount, recorded_at)
            values ($1, uuid_v7(), $2, $3, $4, $5, 'JPY', $6, '[]', 0, 0, 1, $7, $5)
            """, member_id, self.store_id, self.terminal_id, f"R-{next(_shop_receipts)}", when,
            total, returned)

    async def merge(self, merged: UUID, into: UUID) -> None:
        await self.conn.execute(
            "update members set status = 'merged', merged_into = $2 where member_id = $1",
            merged, into)


AT_RISK_NOW = dt.datetime(2026, 6, 1, 0, 0, tzinfo=dt.UTC)


async def hand_flagged(conn: Connection) -> dict[str, UUID]:
    """Members and their purchases, in days before AT_RISK_NOW; with multiple 2 and at least 3
    purchase occasions, a member is at risk when whole days since the last purchase > 2 x the
    median gap.

    member  purchases, days ago       gaps counted        median  over  days since  at risk
    ann     41, 31, 21                 10, 10                  10    20          21  yes
    ben     40, 30, 20                 10, 10                  10    20          20  no: not beyond
    cal     126, 36, 29, 22, 15        90, 7, 7, 7              7    14          15  yes
            (the mean gap, 27.75, would wait 55.5 days)
    dee     100, 90                    10                       -     -          90  no: 2 occasions
    eve     41, 31, 21                 dormant                  -     -           -  no
    gus     41, 21; fay's 31 (merged)  10, 10                  10    20          21  yes
    hal     35.5, 35, 25.5, 25, 15     (0.5), 9.5, (0.5), 10  9.75  19.5          15  no
            (a receipt half a day after another is the same occasion: 3 occasions; counting
            the half days, the median would be 5 and hal at risk)
    ivy     41, 31, 21                 suspended                -     -           -  no
    jon     41, 31, 21; one in 5 days  10, 10                  10    20          21  yes
    kim     21                         one purchase             -     -           -  no

    fay (merged into gus) and lea (erased, bought like ann) are never flagged themselves.
    """
    day = dt.timedelta(days=1)
    shop = await Shop(conn).open()
    people = {name: await shop.member(name) for name in
              ("ann", "ben", "cal", "dee", "fay", "gus", "hal", "jon", "kim")}
    people["eve"] = await shop.member("eve", "dormant")
    people["ivy"] = await shop.member("ivy", "suspended")
    people["lea"] = await shop.member("lea", "erased")
    purchases = {
        "ann": (41, 31, 21), "ben": (40, 30, 20), "cal": (126, 36, 29, 22, 15), "dee": (100, 90),
        "eve": (41, 31, 21), "gus": (41, 21), "fay": (31,), "hal": (35.5, 35, 25.5, 25, 15),
        "ivy": (41, 31, 21), "jon": (41, 31, 21, -5), "kim": (21,), "lea": (41, 31, 21),
    }
    for name, days in purchases.items():
        for ago in days:
            await shop.buy(people[name], AT_RISK_NOW - ago * day, 1_000)
    await shop.merge(people["fay"], people["gus"])
    return people


# -- values ------------------------------------------------------------------------------------

# The business's time zone in the tests (the default LOYALTY_TIMEZONE), and the programme that
# the domain tests pass in: yen, Tokyo business days.
TOKYO = ZoneInfo("Asia/Tokyo")
PROGRAMME = Programme(currency="JPY", timezone=TOKYO)


def instant(moment: dt.datetime) -> Instant:
    """``moment`` as the schemas type a moment on the wire (what decoding a body would give)."""
    return Instant(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                   moment.second, moment.microsecond, moment.tzinfo, fold=moment.fold)


# -- request bodies -----------------------------------------------------------------------------

_receipts = itertools.count()


def purchase_body(member: str | UUID | dict[str, str], total: int, *,
                  lines: list[dict[str, Any]] | None = None, receipt_id: str | None = None,
                  occurred_at: dt.datetime | str | None = None, prefix: str = "R",
                  **fields: Any) -> dict[str, Any]:
    """A POS purchase in yen by ``member`` (an id, or the body's member reference itself): one
    line worth the total unless ``lines`` are given, a receipt id of its own (``prefix`` and a
    number) unless ``receipt_id`` is, now unless ``occurred_at`` says when; ``fields`` (coupons,
    redeem_points, ...) are added as they are."""
    if occurred_at is None:
        occurred_at = dt.datetime.now(dt.UTC)
    return {
        "member": member if isinstance(member, dict) else {"id": str(member)},
        "receipt_id": f"{prefix}-{next(_receipts)}" if receipt_id is None else receipt_id,
        "occurred_at": occurred_at.isoformat() if isinstance(occurred_at, dt.datetime)
        else occurred_at,
        "total": total,
        "currency": "JPY",
        "lines": lines if lines is not None else [{"sku": "S", "unit_price": total}],
        **fields,
    }


async def until_job_finished(client: httpx.AsyncClient, headers: dict[str, str], name: str,
                             run_id: int) -> dict[str, Any]:
    """The run of job ``name`` once it is no longer running, as ``/v1/jobs`` lists it."""
    async with asyncio.timeout(30):
        while True:
            runs = (await client.get(f"/v1/jobs/{name}/runs", headers=headers)).json()["items"]
            run = next(r for r in runs if r["run_id"] == run_id)
            if run["outcome"] != "running":
                return dict(run)
            await asyncio.sleep(0.05)


# -- keys ---------------------------------------------------------------------------------------


def new_private_pem() -> str:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# -- the world of the authorization matrix ------------------------------------------------------

CALLERS = ("anonymous", "member_a", "member_b", "terminal_x", "admin", "marketer", "analyst",
           "support")
STAFF = {"admin", "marketer", "analyst", "support"}
A_CONTACT = {"email": "a@example.com", "phone": "090-1111-2222", "postal_code": "100-0001",
             "birth_date": "1985-04-01"}
ACTIVE = {"type": "status", "statuses": ["active"]}
_unique = itertools.count()


@dataclass
class World:
    """What the requests refer to: member A, a spare terminal, the credentials of each caller."""

    headers: dict[str, dict[str, str]]
    member_a_id: str
    spare_terminal_id: str
    client: httpx.AsyncClient
    actors: Actors
    extra: dict[str, Any] = field(default_factory=dict)


def idempotency() -> dict[str, str]:
    return {"Idempotency-Key": f"matrix-{next(_unique)}"}


def new_store(_: World) -> dict[str, Any]:
    return {"code": f"S{next(_unique)}", "name": "A store"}


def new_staff(_: World) -> dict[str, Any]:
    return {"email": f"made{next(_unique)}@staff.example", "password": PASSWORD,
            "role": "analyst"}


def member_a_purchase(world: World) -> dict[str, Any]:
    return purchase_body(world.member_a_id, 1000, receipt_id=f"M-{next(_unique)}",
                         occurred_at="2026-01-05T10:00:00+09:00")


def new_event(_: World) -> dict[str, Any]:
    return {"name": f"Event {next(_unique)}", "place": "2F", "capacity": 10, "points": 5,
            "starts_at": "2030-01-05T10:00:00+09:00", "ends_at": "2030-01-05T12:00:00+09:00"}


def registered_routes(app: Litestar) -> set[tuple[str, str]]:
    """Every (method, path) the API answers, leaving out the OPTIONS litestar adds to each and
    the staff console's pages (cookie sessions, not bearer tokens: tests/console)."""
    return {
        (method, route.path)
        for route in app.routes
        for method in getattr(route, "methods", ())
        if method not in {"OPTIONS", "HEAD"} and not route.path.startswith("/console")
    }


def member_a_path(world: World) -> str:
    return f"/v1/members/{world.member_a_id}"


async def make_world(client: httpx.AsyncClient, actors: Actors) -> World:
    """Member A with a purchase, member B, two terminals, a staff account of each role, and one
    of each object the routes name (a coupon template, a segment, a grant, a launched campaign,
    two events with seats taken)."""
    member_a = await actors.member(**A_CONTACT)
    member_b = await actors.member(email="b@example.com")
    terminal_key, _ = await actors.terminal("STORE-X")
    _, spare_terminal = await actors.terminal("STORE-Y")
    headers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "member_a": member_a.headers,
        "member_b": member_b.headers,
        "terminal_x": bearer(terminal_key),
    }
    for role in sorted(STAFF):
        headers[role] = bearer(await actors.staff(role))
    await actors.staff("support", email="login@staff.example")
    assert actors.settings.database_url is not None
    login_staff = await query(actors.settings.database_url,
                              "select staff_id from staff where email = 'login@staff.example'")
    refresh_tokens = [(await actors.member()).refresh_token for _ in range(len(CALLERS))]
    spare_members = [(await actors.member()).member_id for _ in range(len(CALLERS))]
    bought = await client.post(
        "/v1/pos/purchases", headers={**bearer(terminal_key), **idempotency()},
        json=purchase_body(member_a.member_id, 10_000, receipt_id="WORLD-1",
                           occurred_at="2026-01-05T10:00:00+09:00"))
    assert bought.status_code == 201, bought.text
    history = await client.get("/v1/me/points/history", headers=member_a.headers)
    marketer = headers["marketer"]

    async def made(path: str, body: dict[str, Any], field: str,
                   extra_headers: dict[str, str] | None = None) -> str:
        response = await client.post(path, headers={**marketer, **(extra_headers or {})},
                                     json=body)
        assert response.status_code == 201, response.text
        return str(response.json()[field])

    template_id = await made("/v1/coupon-templates", {
        "name": "World", "discount": {"type": "fixed_amount", "amount": 10}}, "template_id")
    segment_id = await made("/v1/segments", {"name": "Active", "definition": ACTIVE},
                            "segment_id")
    grant_id = await made("/v1/points/grants", {
        "points": 1, "reason": "world grant", "members": [member_a.member_id]}, "grant_id",
        idempotency())
    campaign_id = await made("/v1/campaigns", {
        "name": "World", "members": [member_a.member_id],
        "action": {"type": "issue_coupon", "template_id": template_id}}, "campaign_id")
    launched = await client.post(f"/v1/campaigns/{campaign_id}/launch",
                                 headers={**marketer, **idempotency()})
    assert launched.status_code == 200, launched.text
    # Two open events: one tomorrow (members reserve and give back seats), one under way
    # that member A has a seat at (the till checks them in).
    now = dt.datetime.now(dt.UTC)
    events = []
    for starts in (now + dt.timedelta(days=1), now - dt.timedelta(minutes=30)):
        events.append(await made("/v1/events", {
            "name": "World", "place": "2F", "capacity": 10, "points": 5,
            "invitation_only": False, "starts_at": starts.isoformat(),
            "ends_at": (starts + dt.timedelta(hours=3)).isoformat()}, "event_id"))
    for event_id, member in ((events[0], member_a), (events[0], member_b),
                             (events[1], member_a)):
        reserved = await client.post(f"/v1/me/events/{event_id}/rsvp", headers=member.headers)
        assert reserved.status_code == 201, reserved.text
    # Two webhook endpoints (one to delete) and a delivery of a test event to the first.
    hooks = []
    for description in ("world", "spare"):
        created = await client.post("/v1/webhooks/endpoints", headers=headers["admin"], json={
            "url": "https://93.184.216.34/hooks", "event_types": ["points.earned"],
            "description": description})
        assert created.status_code == 201, created.text
        hooks.append(created.json()["endpoint_id"])
    tested = await client.post(f"/v1/webhooks/endpoints/{hooks[0]}/test",
                               headers=headers["admin"])
    assert tested.status_code == 202, tested.text
    today = dt.datetime.now(ZoneInfo(actors.settings.timezone)).date().isoformat()
    backtest = await client.post("/v1/earning-rules/backtest", headers=headers["marketer"],
                                 json={"rules": {}, "from": today, "to": today})
    assert backtest.status_code == 200, backtest.text
    return World(headers, member_a.member_id, spare_terminal, client, actors, {
        "login_email": "a@example.com", "staff_email": "login@staff.example",
        "login_staff_id": str(login_staff[0]["staff_id"]),
        "refresh_tokens": refresh_tokens, "spare_members": spare_members,
        "number": member_a.member["member_number"], "purchase_id": bought.json()["purchase_id"],
        "a_contact": [member_a.member[f] for f in A_CONTACT],
        "entry_id": history.json()["items"][0]["entry_id"], "template_id": template_id,
        "segment_id": segment_id, "grant_id": grant_id, "campaign_id": campaign_id,
        "event_id": events[0], "checkin_event_id": events[1],
        "webhook_endpoint_id": hooks[0], "spare_webhook_endpoint_id": hooks[1],
        "webhook_delivery_id": tested.json()["delivery_id"],
        "backtest_id": backtest.json()["backtest_id"],
    })
