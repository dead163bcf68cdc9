"""The audit trail: every staff and till read of a member's personal data or history leaves
exactly one row (a table below decides each read route; a route added without a decision
fails here); the database refuses to change or remove rows except through the retention job;
GET /v1/audit filters and pages them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
from litestar import Litestar

from loyalty.access.audit import delete_old_audit_rows, record_audit
from loyalty.core.db import Connection, init_connection
from loyalty.core.settings import Settings
from tests.conftest import AppWith
from tests.factories import (
    ACTIVE,
    Actors,
    World,
    bearer,
    member_a_path,
    member_a_purchase,
    query,
    registered_routes,
    until_job_finished,
)

Client = httpx.AsyncClient


@dataclass(frozen=True)
class Read:
    caller: str
    action: str
    path: Callable[[World], str] | None = None
    body: Callable[[World], Any] | None = None
    member_subject: bool = True  # the row names member A


def _at(path: str) -> Callable[[World], str]:
    return lambda world: path.format(a=world.member_a_id, **world.extra)


# Reads of a member's personal data or history, by staff or a till: one audit row each.
PERSONAL_READS: dict[tuple[str, str], Read] = {
    ("GET", "/v1/members"): Read("support", "members.search",
                                 lambda _: "/v1/members?q=a@example.com", member_subject=False),
    ("GET", "/v1/members/{member_id:uuid}"): Read("support", "members.read", member_a_path),
    ("GET", "/v1/members/duplicates"): Read("support", "members.duplicates",
                                            member_subject=False),
    ("GET", "/v1/members/{member_id:uuid}/points"): Read(
        "support", "points.read", _at("/v1/members/{a}/points")),
    ("GET", "/v1/members/{member_id:uuid}/points/history"): Read(
        "support", "points.history", _at("/v1/members/{a}/points/history")),
    ("GET", "/v1/members/{member_id:uuid}/tier"): Read(
        "support", "members.tier", _at("/v1/members/{a}/tier")),
    ("POST", "/v1/members/{member_id:uuid}/export"): Read(
        "support", "members.export", _at("/v1/members/{a}/export")),
    ("GET", "/v1/segments/{segment_id:uuid}/members"): Read(
        "marketer", "segments.members", _at("/v1/segments/{segment_id}/members"),
        member_subject=False),
    ("POST", "/v1/segments/preview"): Read(
        "marketer", "segments.preview", body=lambda _: {"definition": ACTIVE},
        member_subject=False),
    ("GET", "/v1/pos/members/lookup"): Read(
        "terminal_x", "pos.members.lookup", _at("/v1/pos/members/lookup?number={number}")),
    ("POST", "/v1/pos/quotes"): Read("terminal_x", "pos.quote", body=member_a_purchase),
    ("POST", "/v1/pos/coupons/validate"): Read(
        "terminal_x", "pos.coupons.validate", body=lambda w: {
            "member": {"id": w.member_a_id}, "coupons": [{"code": "NO-SUCH-CODE"}],
            "lines": [{"sku": "S", "unit_price": 100}]}),
}

# Reads of no member's personal data, and why: left unaudited.
NOT_PERSONAL: dict[tuple[str, str], str] = {
    ("GET", "/v1/pos/whoami"): "the terminal itself",
    ("GET", "/v1/terminals"): "configuration",
    ("GET", "/v1/stores"): "configuration",
    ("GET", "/v1/staff"): "staff accounts, not members; changes to them are audited",
    ("GET", "/v1/staff/{staff_id:uuid}"): "staff accounts, not members",
    ("GET", "/v1/audit"): "the trail itself, admins only: auditing it would add a row per look",
    ("GET", "/v1/tiers"): "configuration",
    ("GET", "/v1/earning-rules"): "configuration",
    ("GET", "/v1/earning-rules/versions"): "configuration",
    ("POST", "/v1/earning-rules/simulate"): "a made-up purchase, no member",
    ("GET", "/v1/earning-rules/backtests/{backtest_id:uuid}"): "aggregates",
    ("GET", "/v1/coupon-templates"): "configuration",
    ("GET", "/v1/coupon-templates/{template_id:uuid}"): "configuration",
    ("GET", "/v1/segments"): "definitions, no members",
    ("GET", "/v1/segments/{segment_id:uuid}"): "a definition, no members",
    ("GET", "/v1/campaigns"): "configuration and counts",
    ("GET", "/v1/campaigns/{campaign_id:uuid}"): "configuration and counts",
    ("GET", "/v1/campaigns/{campaign_id:uuid}/results"): "aggregates",
    ("GET", "/v1/events"): "events with seat counts",
    ("GET", "/v1/events/{event_id:uuid}"): "an event with seat counts",
    ("GET", "/v1/points/grants"): "grants with counts",
    ("GET", "/v1/points/grants/{grant_id:uuid}"): "a grant with counts",
    ("GET", "/v1/analytics/kpis"): "aggregates",
    ("GET", "/v1/analytics/rfm"): "aggregates",
    ("GET", "/v1/analytics/cohorts"): "aggregates",
    ("GET", "/v1/analytics/liability"): "aggregates",
    ("GET", "/v1/jobs"): "operations",
    ("GET", "/v1/jobs/{name:str}/runs"): "operations",
    ("GET", "/v1/webhooks/endpoints"): "configuration",
    ("GET", "/v1/webhooks/endpoints/{endpoint_id:uuid}"): "configuration",
    ("GET", "/v1/webhooks/endpoints/{endpoint_id:uuid}/deliveries"):
        "event ids and types with delivery attempts, no payload",
}
# POSTs that write nothing (tests/api/test_idempotency_api.py READS): reads for this test.
POST_READS = {("POST", "/v1/pos/quotes"), ("POST", "/v1/pos/coupons/validate"),
              ("POST", "/v1/segments/preview"), ("POST", "/v1/earning-rules/simulate"),
              ("POST", "/v1/members/{member_id:uuid}/export")}
# Not staff or terminal routes: the member's own app, signing in, health and the schema.
OUTSIDE = ("/v1/me/", "/v1/auth/", "/health/", "/schema", "/.well-known/", "/metrics")


def _staff_and_terminal_reads(app: Litestar) -> set[tuple[str, str]]:
    return {(method, path) for method, path in registered_routes(app)
            if (method == "GET" or (method, path) in POST_READS)
            and not path.startswith(OUTSIDE) and path != "/v1/me"}


def test_every_staff_and_terminal_read_is_decided(app: Litestar) -> None:
    reads = _staff_and_terminal_reads(app)
    assert PERSONAL_READS.keys() & NOT_PERSONAL.keys() == set()
    assert reads - PERSONAL_READS.keys() - NOT_PERSONAL.keys() == set(), \
        "read routes with no decision whether they read personal data"
    assert (PERSONAL_READS.keys() | NOT_PERSONAL.keys()) - reads == set(), \
        "decisions for routes that no longer exist"


async def _audit_rows(world: World) -> list[asyncpg.Record]:
    assert world.actors.settings.database_url
    return await query(world.actors.settings.database_url,
                       "select actor_kind, action, subject_id from audit_log"
                       " order by recorded_at, audit_id")


async def test_every_personal_read_leaves_exactly_one_audit_row(
    world: World, subtests: pytest.Subtests,
) -> None:
    for (method, route), read in sorted(PERSONAL_READS.items()):
        with subtests.test(msg=f"{method} {route}"):
            before = await _audit_rows(world)
            path = read.path(world) if read.path else route
            body = read.body(world) if read.body else None
            response = await world.client.request(
                method, path, headers=world.headers[read.caller],
                **({"json": body} if body is not None else {}))
            assert response.status_code == 200, response.text
            after = await _audit_rows(world)
            added = after[len(before):]
            assert after[:len(before)] == before
            assert [(r["actor_kind"], r["action"]) for r in added] == [
                ("terminal" if read.caller.startswith("terminal") else "staff", read.action)]
            if read.member_subject:
                assert str(added[0]["subject_id"]) == world.member_a_id


async def test_not_personal_reads_leave_no_row(world: World, subtests: pytest.Subtests) -> None:
    # A sample of the decisions: were one of them wrong, its read would be missing above.
    for path in ("/v1/stores", "/v1/segments", "/v1/analytics/rfm", "/v1/staff"):
        with subtests.test(msg=path):
            before = len(await _audit_rows(world))
            response = await world.client.get(path, headers=world.headers["admin"])
            assert response.status_code == 200, response.text
            assert len(await _audit_rows(world)) == before


# -- append-only ------------------------------------------------------------------------------


async def _one_row(conn: Connection) -> None:
    await record_audit(conn, actor_kind="system", actor_id=None, action="test.row",
                       subject_kind="member", subject_id=None)


@pytest.mark.parametrize("statement", [
    "update audit_log set action = 'edited'",
    "update audit_log set details = '{}'",
    "delete from audit_log",
    "truncate audit_log",
])
async def test_the_database_refuses_to_change_or_remove_audit_rows(
    connections: list[Connection], statement: str,
) -> None:
    conn = connections[0]
    await _one_row(conn)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute(statement)
    rows = await conn.fetch("select action from audit_log")
    assert [r["action"] for r in rows] == ["test.row"]


async def test_the_retention_setting_lets_only_deletes_through(
    connections: list[Connection],
) -> None:
    conn = connections[0]
    await _one_row(conn)
    async with conn.transaction():
        await conn.execute("set local loyalty.audit_retention = 'on'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("update audit_log set action = 'edited'")
    # ``set local`` ended with its transaction: a later delete is refused again.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("delete from audit_log")


async def test_erasure_removes_a_members_values_from_row_text_and_nothing_else(
    connections: list[Connection],
) -> None:
    conn = connections[0]
    taro, other = uuid4(), uuid4()
    for subject in (taro, other):
        await record_audit(conn, actor_kind="staff", actor_id=None, action="members.erase",
                           subject_kind="member", subject_id=subject,
                           details={"reason": "letter from taro@example.com", "n": 1,
                                    "list": ["+819012345678", "kept"]})
    changed = await conn.fetchval("select erase_from_audit_log($1, $2::text[])", taro,
                                  ["taro@example.com", "+819012345678", "absent"])
    assert changed == 1
    rows = await conn.fetch("select subject_id, action, details from audit_log")
    assert {r["subject_id"]: (r["action"], r["details"]) for r in rows} == {
        taro: ("members.erase", {"reason": "letter from [erased]", "n": 1,
                                 "list": ["[erased]", "kept"]}),
        # Rows about others are theirs.
        other: ("members.erase", {"reason": "letter from taro@example.com", "n": 1,
                                  "list": ["+819012345678", "kept"]})}
    # The setting is cleared again: ordinary updates are refused as before.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("update audit_log set details = '{}'")


@pytest.mark.parametrize("statement", [
    # Anything but the erasure of the values named is refused, even with the setting forged.
    "update audit_log set action = 'edited'",
    "update audit_log set details = '{}'",
    """update audit_log set details = '{"reason": "rewritten"}'""",
    "update audit_log set subject_id = gen_random_uuid(),"
    " details = audit_details_erased(details, array['kept'])",
])
async def test_a_forged_erasure_setting_lets_no_other_change_through(
    connections: list[Connection], statement: str,
) -> None:
    conn = connections[0]
    await record_audit(conn, actor_kind="system", actor_id=None, action="test.row",
                       subject_kind="member", subject_id=None, details={"reason": "kept"})
    async with conn.transaction():
        await conn.execute("""set local loyalty.audit_erasure = '["kept"]'""")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement)
    rows = await conn.fetch("select action, details from audit_log")
    assert [(r["action"], r["details"]) for r in rows] == [("test.row", {"reason": "kept"})]


async def test_retention_deletes_whole_old_days_and_is_off_by_default(
    connections: list[Connection], settings: Settings,
) -> None:
    conn = connections[0]
    now = dt.datetime(2026, 6, 10, 15, 0, tzinfo=dt.UTC)
    for recorded in ("2026-05-10T23:59:59+00:00", "2026-05-11T00:00:00+00:00",
                     "2026-06-10T01:00:00+00:00"):
        # Rows written as of another moment: the insert is allowed, only changes are not.
        await conn.execute(
            "insert into audit_log (recorded_at, actor_kind, action, subject_kind)"
            " values ($1, 'system', 'old.row', 'member')", dt.datetime.fromisoformat(recorded))
    assert settings.audit_retention_days == 0
    assert await delete_old_audit_rows(conn, retention_days=0, now=now) == {"deleted": 0}
    assert await delete_old_audit_rows(conn, retention_days=30, now=now) == {"deleted": 1}
    left = await conn.fetch("select recorded_at from audit_log order by recorded_at")
    assert [r["recorded_at"].date().isoformat() for r in left] == ["2026-05-11", "2026-06-10"]


async def test_the_retention_job_runs_with_the_setting(
    fresh_database: str, app_with: AppWith,
) -> None:
    async with app_with(audit_retention_days=30) as (client, actors):
        admin = bearer(await actors.staff("admin"))
        await query(fresh_database,
                    "insert into audit_log (recorded_at, actor_kind, action, subject_kind)"
                    " values (now() - interval '40 days', 'system', 'old.row', 'member')")
        started = await client.post("/v1/jobs/audit_retention/run", headers=admin)
        assert started.status_code == 202, started.text
        run = await until_job_finished(client, admin, "audit_retention",
                                       started.json()["run_id"])
        assert (run["outcome"], run["counts"]) == ("succeeded", {"deleted": 1})
        left = await query(fresh_database, "select action from audit_log order by recorded_at")
        assert "old.row" not in [r["action"] for r in left]
        assert "jobs.run" in [r["action"] for r in left]  # today's rows stay


# -- GET /v1/audit ----------------------------------------------------------------------------


async def test_the_trail_is_filtered_by_actor_subject_action_and_time_and_paged(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    admin = bearer(await actors.staff("admin"))
    support_token = await actors.staff("support")
    support = bearer(support_token)
    alice, bob = await actors.member(), await actors.member()
    for member in (alice, alice, bob):
        assert (await client.get(f"/v1/members/{member.member_id}",
                                 headers=support)).status_code == 200
    me = await client.get("/v1/staff?role=support", headers=admin)
    support_id = me.json()["items"][0]["staff_id"]

    by_support = await client.get(f"/v1/audit?actor={support_id}&action=members.read",
                                  headers=admin)
    assert by_support.status_code == 200, by_support.text
    items = by_support.json()["items"]
    assert [i["subject_id"] for i in items] == [bob.member_id, alice.member_id, alice.member_id]
    assert {i["actor_kind"] for i in items} == {"staff"}

    on_alice = await client.get(f"/v1/audit?subject={alice.member_id}&limit=1", headers=admin)
    assert len(on_alice.json()["items"]) == 1
    rest = await client.get(f"/v1/audit?subject={alice.member_id}&limit=1"
                            f"&cursor={on_alice.json()['next_cursor']}", headers=admin)
    assert len(rest.json()["items"]) == 1
    assert rest.json()["items"][0]["audit_id"] != on_alice.json()["items"][0]["audit_id"]
    assert rest.json().get("next_cursor") is None

    future = await client.get("/v1/audit", params={"from": "2099-01-01T00:00:00+09:00"},
                              headers=admin)
    assert future.json()["items"] == []
    past = await client.get("/v1/audit", params={"to": "2001-01-01T00:00:00Z"}, headers=admin)
    assert past.json()["items"] == []
    for bad in ({"actor": "nobody"}, {"action": "DROP TABLE"}, {"from": "yesterday"},
                {"cursor": "!!"}):
        refused = await client.get("/v1/audit", params=bad, headers=admin)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/v1/audit", headers=support)).status_code == 403



async def test_an_audit_row_says_where_the_request_came_from(app_with: AppWith) -> None:
    """Who, which member, what, when, and from where: the client's address as the rate limits
    read it (loyalty/access/addresses.py, behind trusted proxies the nearest untrusted hop;
    tested there); none for what no request did."""
    async with app_with() as (client, actors):
        member = await actors.member()
        database = actors.settings.database_url
        assert database
        read = await client.get(f"/v1/members/{member.member_id}",
                                headers=bearer(await actors.staff("support")))
        assert read.status_code == 200, read.text
        listed = await client.get("/v1/audit", params={"action": "members.read"},
                                  headers=bearer(await actors.staff("admin")))
        # The test client's peer is named "testclient" (tests/conftest.py asgi_transport).
        assert [item["address"] for item in listed.json()["items"]] == ["testclient"]
        conn = await asyncpg.connect(database)
        try:
            await init_connection(conn)
            await record_audit(conn, actor_kind="system", actor_id=None, action="jobs.test",
                               subject_kind="job", subject_id=None)
        finally:
            await conn.close()
        rows = await query(database, "select address from audit_log where action = 'jobs.test'")
        assert [row["address"] for row in rows] == [None]
