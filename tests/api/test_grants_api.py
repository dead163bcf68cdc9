"""Bulk points grants through the API: one entry per member per grant, whatever is retried,
raced or repeated; only active and dormant members get anything; the ledger stays whole."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from loyalty.core.db import init_connection
from loyalty.core.idempotency import request_hash
from loyalty.core.ids import uuid7
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.points.grants import MemberList, create_grant, run_grant
from loyalty.points.rules import RuleBook
from schemas.grants import GrantRequest
from tests.factories import Actors, SignedUp, bearer, purchase_body, query
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
_n = itertools.count()
URL = "/v1/points/grants"


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


@pytest.fixture
async def marketer(actors: Actors) -> dict[str, str]:
    return bearer(await actors.staff("marketer"))


async def members(actors: Actors, count: int, **fields: Any) -> list[SignedUp]:
    return [await actors.member(**fields) for _ in range(count)]


def ids(signed_up: list[SignedUp]) -> list[str]:
    return [m.member_id for m in signed_up]


async def sql(settings: Settings, statement: str, *args: Any) -> Any:
    assert settings.database_url
    return await query(settings.database_url, statement, *args)


async def grant_entries(settings: Settings, grant_id: str) -> list[dict[str, Any]]:
    rows = await sql(settings, "select * from point_entries where grant_id = $1"
                               " order by member_id", UUID(grant_id))
    return [dict(r) for r in rows]


def purchase(member_id: str, total: int) -> dict[str, Any]:
    return purchase_body(member_id, total, prefix="G")


# -- a grant to a list -----------------------------------------------------------------------


async def test_grant_to_a_list_credits_each_member_once_and_keeps_the_ledger_whole(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    listed = await members(actors, 12)
    api_key, _ = await actors.terminal("GRANT-1")
    bought = await client.post("/v1/pos/purchases", json=purchase(listed[0].member_id, 5_000),
                               headers=keyed(bearer(api_key), "before-the-grant"))
    assert bought.status_code == 201
    before = await ledger_rows(settings.database_url)

    response = await client.post(URL, json={"points": 300, "reason": "Spring thank-you",
                                            "members": ids(listed)},
                                 headers=keyed(marketer, "spring-1"))
    assert response.status_code == 201, response.text
    assert "idempotent-replayed" not in response.headers
    grant = response.json()
    assert grant["status"] == "done"
    assert grant["target"] == {"kind": "members", "listed": 12}
    assert (grant["members_granted"], grant["points_granted"]) == (12, 3_600)
    assert (grant["unknown_members"], grant["members_skipped"]) == (0, 0)
    assert grant["source"] == "staff"
    assert grant["expires_at"] is not None

    entries = await grant_entries(settings, grant["grant_id"])
    assert sorted(str(e["member_id"]) for e in entries) == sorted(ids(listed))
    assert {(e["kind"], e["amount"], e["source"], e["reason"]) for e in entries} == {
        ("earn", 300, "staff", "Spring thank-you")}
    assert {e["staff_id"] for e in entries} == {UUID(grant["staff_id"])}
    rows = await ledger_rows(settings.database_url)
    entry_ids = {e["entry_id"] for e in entries}
    lots = [lot for lot in rows.lots if lot["entry_id"] in entry_ids]
    assert len(lots) == 12
    assert {(lot["points"], lot["remaining"]) for lot in lots} == {(300, 300)}
    assert all(lot["released_at"] is not None for lot in lots)
    assert {lot["expires_at"] for lot in lots} == {dt.datetime.fromisoformat(grant["expires_at"])}
    available = {str(b["member_id"]): b["available"] for b in rows.balances}
    assert available[listed[0].member_id] == 50 + 300
    assert all(available[m] == 300 for m in ids(listed[1:]))
    # A new version makes a purchase that read a balance before the grant read it again.
    versions = {b["member_id"]: b["version"] for b in before.balances}
    assert all(b["version"] == versions[b["member_id"]] + 1 for b in rows.balances)
    check_invariants(rows)

    mine = await client.get("/v1/me/points", headers=listed[1].headers)
    assert mine.json()["available"] == 300
    shown = await client.get(f"{URL}/{grant['grant_id']}", headers=marketer)
    assert shown.json() == grant


async def test_the_same_key_and_body_again_replay_the_grant_without_new_entries(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    listed = await members(actors, 3)
    body = {"points": 50, "reason": "Apology for the outage", "members": ids(listed)}
    first = await client.post(URL, json=body, headers=keyed(marketer, "outage"))
    again = await client.post(URL, json=body, headers=keyed(marketer, "outage"))
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(await grant_entries(settings, first.json()["grant_id"])) == 3
    rows = await ledger_rows(settings.database_url)
    assert len(rows.entries) == 3
    assert [b["available"] for b in rows.balances] == [50, 50, 50]
    audits = await sql(settings, "select subject_id, details from audit_log"
                                 " where action = 'points.grant'")
    assert [(str(a["subject_id"]), a["details"]["points"]) for a in audits] == [
        (first.json()["grant_id"], 50)]


async def test_ten_concurrent_identical_requests_grant_each_member_once(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    listed = await members(actors, 8)
    body = {"points": 20, "reason": "Rainy day bonus", "members": ids(listed)}
    responses = await asyncio.gather(*(
        client.post(URL, json=body, headers=keyed(marketer, "rainy-day")) for _ in range(10)))
    assert [r.status_code for r in responses] == [201] * 10
    assert len({r.json()["grant_id"] for r in responses}) == 1
    assert {(r.json()["status"], r.json()["members_granted"]) for r in responses} == {
        ("done", 8)}
    assert [r.headers.get("idempotent-replayed") for r in responses].count(None) == 1
    entries = await grant_entries(settings, responses[0].json()["grant_id"])
    assert sorted(str(e["member_id"]) for e in entries) == sorted(ids(listed))
    rows = await ledger_rows(settings.database_url)
    assert len(rows.entries) == 8
    check_invariants(rows)
    grants = await sql(settings, "select count(*) from point_grants")
    assert grants[0]["count"] == 1


async def test_another_body_under_the_same_key_is_refused_and_changes_nothing(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    listed = await members(actors, 2)
    body = {"points": 10, "reason": "Welcome back", "members": ids(listed)}
    first = await client.post(URL, json=body, headers=keyed(marketer, "welcome"))
    assert first.status_code == 201
    before = await ledger_rows(settings.database_url)
    for other in ({**body, "points": 11}, {**body, "members": ids(listed[:1])},
                  {**body, "reason": "Welcome back!"}):
        refused = await client.post(URL, json=other, headers=keyed(marketer, "welcome"))
        assert refused.status_code == 422
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith(":idempotency_key_reused")
    assert await ledger_rows(settings.database_url) == before
    shown = await client.get(f"{URL}/{first.json()['grant_id']}", headers=marketer)
    assert shown.json() == first.json()


async def test_a_grant_interrupted_between_batches_is_finished_by_the_same_request(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    listed = await members(actors, 5)
    body = {"points": 15, "reason": "Interrupted", "members": ids(listed)}
    audience = MemberList.of(m.member_uuid for m in listed)
    # The key is the marketer's own: the grant keeps it with the account that sent it.
    (staff,) = await sql(settings, "select staff_id from staff where role = 'marketer'")
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        # What a request that died after its first batch leaves behind.
        grant_id = await create_grant(
            conn, points=15, reason="Interrupted", target=audience, rulebook=RuleBook(),
            programme=Programme(currency="JPY", timezone=ZoneInfo(settings.timezone)),
            now=dt.datetime.now(dt.UTC), staff_id=staff["staff_id"],
            idempotency_key="interrupted",
            request_hash=request_hash("POST", URL, msgspec.convert(body, GrantRequest)))
        assert grant_id is not None
        assert not await run_grant(conn, grant_id, audience, now=dt.datetime.now(dt.UTC),
                                   batch_size=2, max_batches=1)
    finally:
        await conn.close()
    assert len(await grant_entries(settings, str(grant_id))) == 2

    response = await client.post(URL, json=body, headers=keyed(marketer, "interrupted"))
    assert response.status_code == 201, response.text
    assert response.headers["idempotent-replayed"] == "true"
    grant = response.json()
    assert (grant["grant_id"], grant["status"]) == (str(grant_id), "done")
    assert (grant["members_granted"], grant["points_granted"]) == (5, 75)
    entries = await grant_entries(settings, str(grant_id))
    assert sorted(str(e["member_id"]) for e in entries) == sorted(ids(listed))
    check_invariants(await ledger_rows(settings.database_url))


# -- who gets nothing ------------------------------------------------------------------------


async def test_suspended_erased_and_merged_members_and_unknown_ids_get_nothing(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    active, dormant, suspended, erased, merged, survivor = await members(actors, 6)
    support = bearer(await actors.staff("support"))
    patched = await client.patch(f"/v1/members/{suspended.member_id}", headers=support,
                                 json={"status": "suspended"})
    assert patched.status_code == 200, patched.text
    joined = await client.post(f"/v1/members/{survivor.member_id}/merge",
                               headers={**support, "Idempotency-Key": "merge"},
                               json={"from_member_id": merged.member_id})
    assert joined.status_code == 200, joined.text
    await sql(settings, "update members set status = 'dormant' where member_id = $1",
              dormant.member_uuid)
    await sql(settings, "update members set status = 'erased' where member_id = $1",
              erased.member_uuid)
    unknown = [str(uuid7()), str(uuid7())]
    listed = [active, dormant, suspended, erased, merged, survivor]

    response = await client.post(URL, json={
        "points": 100, "reason": "Anniversary", "members": ids(listed) + unknown + unknown[:1]},
        headers=keyed(marketer, "anniversary"))
    assert response.status_code == 201, response.text
    grant = response.json()
    assert grant["target"] == {"kind": "members", "listed": 8}
    assert (grant["members_granted"], grant["points_granted"]) == (3, 300)
    assert (grant["unknown_members"], grant["members_skipped"]) == (2, 3)
    entries = await grant_entries(settings, grant["grant_id"])
    assert sorted(str(e["member_id"]) for e in entries) == sorted(
        [active.member_id, dormant.member_id, survivor.member_id])
    check_invariants(await ledger_rows(settings.database_url))


async def test_a_list_of_100000_ids_fits_in_one_request(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    member = await actors.member()
    listed = [member.member_id] + [str(uuid7()) for _ in range(99_999)]
    response = await client.post(URL, json={"points": 1, "reason": "Everyone we ever knew",
                                            "members": listed},
                                 headers=keyed(marketer, "everyone"))
    assert response.status_code == 201, response.text
    grant = response.json()
    assert (grant["members_granted"], grant["unknown_members"]) == (1, 99_999)
    assert grant["target"] == {"kind": "members", "listed": 100_000}
    too_many = await client.post(URL, json={"points": 1, "reason": "Too many",
                                            "members": [*listed, str(uuid7())]},
                                 headers=keyed(marketer, "too-many"))
    assert too_many.status_code == 400


# -- racing purchases ------------------------------------------------------------------------


async def test_purchases_racing_two_grants_are_all_recorded_once(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    listed = await members(actors, 30)
    api_key, _ = await actors.terminal("GRANT-RACE")
    till = bearer(api_key)
    grants = [
        client.post(URL, json={"points": 7, "reason": "Race A", "members": ids(listed)},
                    headers=keyed(marketer, "race-a")),
        client.post(URL, json={"points": 11, "reason": "Race B",
                               "members": ids(listed)[::-1]},
                    headers=keyed(marketer, "race-b")),
    ]
    purchases = [
        client.post("/v1/pos/purchases", json=purchase(m.member_id, 1_000 * (1 + i % 3)),
                    headers=keyed(till, f"race-{m.member_id}-{i}"))
        for m in listed for i in range(2)
    ]
    # Grants first in the list, so they start while the purchases are still arriving.
    responses = await asyncio.gather(*grants, *purchases)
    assert [r.status_code for r in responses] == [201] * len(responses), [
        r.text for r in responses if r.status_code != 201]
    grant_a, grant_b = (r.json() for r in responses[:2])
    assert (grant_a["members_granted"], grant_b["members_granted"]) == (30, 30)

    rows = await ledger_rows(settings.database_url)
    check_invariants(rows)
    per_member: dict[str, list[int]] = {m: [] for m in ids(listed)}
    for entry in rows.entries:
        per_member[str(entry["member_id"])].append(entry["amount"])
    # Each member: one entry per grant, and the 10 and 20 points of their two purchases.
    assert all(sorted(amounts) == [7, 10, 11, 20] for amounts in per_member.values())
    for grant in (grant_a, grant_b):
        assert len(await grant_entries(settings, grant["grant_id"])) == 30
    balances = {str(b["member_id"]): b["available"] for b in rows.balances}
    assert all(balances[m] == 7 + 11 + 10 + 20 for m in ids(listed))


# -- a grant to a segment --------------------------------------------------------------------


async def test_grant_to_a_segment_reaches_its_active_and_dormant_members_only(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
) -> None:
    golfers = await members(actors, 3)
    tennis_players = await members(actors, 2)
    support = bearer(await actors.staff("support"))
    # Attributes segments select on are staff's to set.
    for member, club in [*((m, "golf") for m in golfers), *((m, "tennis") for m in tennis_players)]:
        response = await client.patch(f"/v1/members/{member.member_id}", headers=support,
                                      json={"attributes": {"club": club}})
        assert response.status_code == 200, response.text
    await client.patch(f"/v1/members/{golfers[2].member_id}", headers=support,
                       json={"status": "suspended"})
    await sql(settings, "update members set status = 'dormant' where member_id = $1",
              golfers[1].member_uuid)
    segment = await client.post("/v1/segments", headers=marketer, json={
        "name": "Golfers", "definition": {"type": "attribute", "key": "club",
                                          "test": {"op": "eq", "value": "golf"}}})
    assert segment.status_code == 201, segment.text
    segment_id = segment.json()["segment_id"]

    response = await client.post(URL, json={"points": 40, "reason": "Golf open",
                                            "segment_id": segment_id},
                                 headers=keyed(marketer, "golf-open"))
    assert response.status_code == 201, response.text
    grant = response.json()
    assert grant["target"] == {"kind": "segment", "segment_id": segment_id}
    assert (grant["members_granted"], grant["points_granted"]) == (2, 80)
    assert (grant["unknown_members"], grant["members_skipped"]) == (0, None)
    entries = await grant_entries(settings, grant["grant_id"])
    assert sorted(str(e["member_id"]) for e in entries) == sorted(ids(golfers[:2]))
    check_invariants(await ledger_rows(settings.database_url))


async def test_a_grant_to_an_unknown_segment_is_404_and_records_nothing(
    client: Client, marketer: dict[str, str], settings: Settings,
) -> None:
    response = await client.post(URL, json={"points": 5, "reason": "Nobody",
                                            "segment_id": str(uuid7())},
                                 headers=keyed(marketer, "nobody"))
    assert response.status_code == 404
    assert response.json()["type"].endswith(":segment_not_found")
    assert (await sql(settings, "select count(*) from point_grants"))[0]["count"] == 0


# -- reading and refusing --------------------------------------------------------------------


async def test_grants_are_listed_newest_first_a_page_at_a_time(
    client: Client, actors: Actors, marketer: dict[str, str],
) -> None:
    member = await actors.member()
    made = []
    for n in range(3):
        response = await client.post(URL, json={"points": 1 + n, "reason": f"Grant {n}",
                                                "members": [member.member_id]},
                                     headers=keyed(marketer, f"page-{n}"))
        made.append(response.json()["grant_id"])
    first = await client.get(URL, params={"limit": 2}, headers=marketer)
    assert [g["grant_id"] for g in first.json()["items"]] == made[::-1][:2]
    second = await client.get(URL, params={"limit": 2, "cursor": first.json()["next_cursor"]},
                              headers=marketer)
    assert [g["grant_id"] for g in second.json()["items"]] == made[:1]
    assert second.json()["next_cursor"] is None
    bad = await client.get(URL, params={"cursor": "not a cursor"}, headers=marketer)
    assert bad.status_code == 400  # not even base64url: the parameter's pattern refuses it
    missing = await client.get(f"{URL}/{uuid7()}", headers=marketer)
    assert missing.status_code == 404
    assert missing.json()["type"].endswith(":grant_not_found")


@pytest.mark.parametrize(("body", "status"), [
    ({"points": 5, "reason": "Both", "members": ["MEMBER"], "segment_id": "SEGMENT"}, 400),
    ({"points": 5, "reason": "Neither"}, 400),
    ({"points": 5, "reason": "Empty", "members": []}, 400),
    ({"points": 0, "reason": "Zero", "members": ["MEMBER"]}, 400),
    ({"points": 1_000_001, "reason": "Too much", "members": ["MEMBER"]}, 400),
    ({"points": "5", "reason": "A string", "members": ["MEMBER"]}, 400),
    ({"points": 5, "reason": "Not an id", "members": ["member-1"]}, 400),
    ({"points": 5, "reason": "Extra", "members": ["MEMBER"], "expires_at": "never"}, 400),
    ({"points": 5, "reason": "     ", "members": ["MEMBER"]}, 422),
])
async def test_bad_requests_are_refused_and_change_nothing(
    client: Client, actors: Actors, settings: Settings, marketer: dict[str, str],
    body: dict[str, Any], status: int,
) -> None:
    member = await actors.member()
    placeholders = {"MEMBER": member.member_id, "SEGMENT": str(uuid7())}
    if "members" in body:
        body = {**body, "members": [placeholders.get(m, m) for m in body["members"]]}
    if "segment_id" in body:
        body = {**body, "segment_id": placeholders[body["segment_id"]]}
    response = await client.post(URL, json=body, headers=keyed(marketer, "bad"))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await ledger_rows(settings.database_url)).entries == []
    assert (await sql(settings, "select count(*) from point_grants"))[0]["count"] == 0


async def test_a_grant_needs_an_idempotency_key(
    client: Client, actors: Actors, marketer: dict[str, str],
) -> None:
    member = await actors.member()
    response = await client.post(URL, json={"points": 5, "reason": "No key",
                                            "members": [member.member_id]}, headers=marketer)
    assert response.status_code == 400


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40)
    | st.uuids().map(str) | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=10,
)
_bodies = st.one_of(_values, st.dictionaries(
    st.sampled_from(["points", "reason", "members", "segment_id", "kind", "target"]),
    _values, max_size=5))


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
async def test_no_grant_body_makes_a_500(
    client: Client, marketer: dict[str, str], body: Any,
) -> None:
    response = await client.post(URL, json=body, headers=keyed(marketer, "fuzz"))
    assert response.status_code < 500, response.text
