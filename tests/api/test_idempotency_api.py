"""Every write happens once: the same ``Idempotency-Key`` and body replay the first answer, byte
for byte, whoever sends it (a terminal, a staff account, a member) and whichever write it is;
another body under the key is refused; a retry while the first is still running waits a
bounded time, then is told to come back. Real PostgreSQL, several connections at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from tests.conftest import AppWith, held
from tests.factories import (
    ACTIVE,
    PASSWORD,
    Actors,
    SignedUp,
    World,
    bearer,
    member_a_path,
    member_a_purchase,
    new_event,
    new_staff,
    new_store,
    purchase_body,
    query,
    registered_routes,
    until_job_finished,
)
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
_n = itertools.count()


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def fresh_key() -> str:
    return f"idem-{next(_n)}"


# -- a retried adjustment ---------------------------------------------------------------------


async def _adjustments(database_url: str, member_id: str) -> list[asyncpg.Record]:
    return await query(database_url, "select amount, staff_id from point_entries"
                                     " where member_id = $1 and kind = 'adjust'", member_id)


async def _adjusting(actors: Actors) -> tuple[SignedUp, dict[str, str], str]:
    """A member, a support account's headers, and the path on which it adjusts their points."""
    member = await actors.member()
    support = bearer(await actors.staff("support"))
    return member, support, f"/v1/members/{member.member_id}/adjustments"


async def test_a_retried_adjustment_is_applied_once(
    client: Client, actors: Actors, settings: Any,
) -> None:
    member, support, path = await _adjusting(actors)
    body = {"points": 1000, "reason": "Goodwill: late delivery"}

    first = await client.post(path, json=body, headers=keyed(support, "click-1"))
    again = await client.post(path, json=body, headers=keyed(support, "click-1"))

    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert [r["amount"] for r in await _adjustments(settings.database_url,
                                                    member.member_id)] == [1000]
    points = await client.get(f"/v1/members/{member.member_id}/points", headers=support)
    assert points.json()["available"] == 1000
    audits = await query(settings.database_url, "select count(*) from audit_log"
                                                " where action = 'points.adjust'")
    assert audits[0]["count"] == 1
    check_invariants(await ledger_rows(settings.database_url))


async def test_ten_concurrent_retries_of_one_adjustment_write_one_entry(
    client: Client, actors: Actors, settings: Any,
) -> None:
    member, support, path = await _adjusting(actors)
    body = {"points": 250, "reason": "Double-clicked goodwill"}
    responses = await asyncio.gather(*(
        client.post(path, json=body, headers=keyed(support, "ten-clicks")) for _ in range(10)))

    answered = [r for r in responses if r.status_code == 201]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(answered) + len(in_flight) == 10, [r.text for r in responses]
    assert all(r.json()["type"].endswith(":idempotency_key_in_flight") for r in in_flight)
    assert len({r.content for r in answered}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in answered) == 1
    assert [r["amount"] for r in await _adjustments(settings.database_url,
                                                    member.member_id)] == [250]
    check_invariants(await ledger_rows(settings.database_url))


async def test_the_same_key_with_another_body_is_refused_and_writes_nothing(
    client: Client, actors: Actors, settings: Any,
) -> None:
    member, support, path = await _adjusting(actors)
    first = await client.post(path, json={"points": 10, "reason": "Goodwill"},
                              headers=keyed(support, "reused"))
    assert first.status_code == 201, first.text
    for other in ({"points": 11, "reason": "Goodwill"}, {"points": 10, "reason": "Goodwill!"}):
        refused = await client.post(path, json=other, headers=keyed(support, "reused"))
        assert refused.status_code == 422
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith(":idempotency_key_reused")
    other_member = await actors.member()
    refused = await client.post(f"/v1/members/{other_member.member_id}/adjustments",
                                json={"points": 10, "reason": "Goodwill"},
                                headers=keyed(support, "reused"))
    assert refused.status_code == 422
    assert [r["amount"] for r in await _adjustments(settings.database_url,
                                                    member.member_id)] == [10]
    assert await _adjustments(settings.database_url, other_member.member_id) == []


# -- keys belong to whoever sent them ---------------------------------------------------------


@dataclass(frozen=True)
class StaffWrite:
    role: str
    path: Callable[[dict[str, str]], str]
    body: Callable[[dict[str, str]], dict[str, Any]]
    written: str  # SQL counting what the writes made: two writes' worth, not one


STAFF_WRITES = {
    "adjustment": StaffWrite(
        "admin", lambda s: f"/v1/members/{s['member']}/adjustments",
        lambda _: {"points": 5, "reason": "Goodwill"},
        "select count(*) = 2 from point_entries where kind = 'adjust'"),
    "grant": StaffWrite(
        "marketer", lambda _: "/v1/points/grants",
        lambda s: {"points": 5, "reason": "Spring thanks", "members": [s["member"]]},
        "select count(*) = 2 from point_grants"),
    "coupon issue": StaffWrite(
        "marketer", lambda s: f"/v1/coupon-templates/{s['template']}/issue",
        lambda s: {"members": [s["member"]]}, "select count(*) = 2 from member_coupons"),
    "code batch": StaffWrite(
        "marketer", lambda s: f"/v1/coupon-templates/{s['template']}/codes",
        lambda _: {"count": 2}, "select count(*) = 4 from coupon_codes"),
    "segment": StaffWrite(
        "marketer", lambda _: "/v1/segments",
        lambda _: {"name": "Active", "definition": ACTIVE},
        "select count(*) = 2 from segments"),
}


@pytest.mark.parametrize("write", STAFF_WRITES.values(), ids=STAFF_WRITES.keys())
async def test_a_key_of_one_staff_account_is_independent_of_another_accounts(
    client: Client, actors: Actors, settings: Any, write: StaffWrite,
) -> None:
    member = await actors.member()
    first_staff = bearer(await actors.staff(write.role))
    second_staff = bearer(await actors.staff(write.role))
    template = await client.post("/v1/coupon-templates", headers=bearer(
        await actors.staff("marketer")), json={
        "name": "Shared", "discount": {"type": "fixed_amount", "amount": 10}})
    scene = {"member": member.member_id, "template": template.json()["template_id"]}
    path, body = write.path(scene), write.body(scene)

    mine = await client.post(path, json=body, headers=keyed(first_staff, "shared-key"))
    theirs = await client.post(path, json=body, headers=keyed(second_staff, "shared-key"))
    assert mine.status_code == theirs.status_code == 201, (mine.text, theirs.text)
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.content != mine.content
    again = await client.post(path, json=body, headers=keyed(first_staff, "shared-key"))
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == mine.content
    assert (await query(settings.database_url, write.written))[0][0]


async def test_members_keys_are_their_own(client: Client, actors: Actors) -> None:
    alice, bob = await actors.member(), await actors.member()
    body = {"type": "site_visit"}
    for member in (alice, bob):
        response = await client.post("/v1/me/actions", json=body,
                                     headers=keyed(member.headers, "visit"))
        assert response.status_code == 200, response.text
        assert response.json()["points"] == 1
        assert "idempotent-replayed" not in response.headers


# -- required where money moves ---------------------------------------------------------------


async def test_money_moving_staff_writes_need_a_key(
    client: Client, actors: Actors, settings: Any,
) -> None:
    member, spare = await actors.member(), await actors.member()
    admin = bearer(await actors.staff("admin"))
    template = await client.post("/v1/coupon-templates", headers=admin, json={
        "name": "Keyless", "discount": {"type": "fixed_amount", "amount": 10}})
    campaign = await client.post("/v1/campaigns", headers=admin, json={
        "name": "Keyless", "members": [member.member_id],
        "action": {"type": "bonus_points", "points": 5}})
    assert campaign.status_code == 201, campaign.text
    writes = [
        (f"/v1/members/{member.member_id}/adjustments", {"points": 5, "reason": "Goodwill"}),
        (f"/v1/members/{member.member_id}/merge", {"from_member_id": spare.member_id}),
        (f"/v1/campaigns/{campaign.json()['campaign_id']}/launch", None),
        ("/v1/points/grants", {"points": 5, "reason": "No key", "members": [member.member_id]}),
        (f"/v1/coupon-templates/{template.json()['template_id']}/issue",
         {"members": [member.member_id]}),
    ]
    for path, body in writes:
        response = await client.post(path, headers=admin, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["type"].endswith(":validation_failed")
        assert "Idempotency-Key" in response.text
    assert (await ledger_rows(settings.database_url)).entries == []
    left = await query(settings.database_url, """
        select (select status from campaigns) as campaign,
               (select count(*) from members where status = 'merged') as merged,
               (select count(*) from member_coupons) as coupons""")
    assert dict(left[0]) == {"campaign": "draft", "merged": 0, "coupons": 0}


# -- a retry while the first is in flight -----------------------------------------------------


@pytest.fixture
async def impatient(fresh_database: str, app_with: AppWith
                    ) -> AsyncIterator[tuple[Client, Actors, str]]:
    """The service with a short wait for a key in flight (100 ms)."""
    async for client, actors in held(app_with(idempotency_wait_ms=100)):
        yield client, actors, fresh_database


async def _until_someone_waits_for(blocker: asyncpg.Connection) -> None:
    """Until another backend waits for a lock ``blocker`` holds: a condition, polled, not a
    guess at how long the request takes to get there."""
    pid = await blocker.fetchval("select pg_backend_pid()")
    for _ in range(1000):
        if await blocker.fetchval(
                "select count(*) from pg_stat_activity where $1 = any(pg_blocking_pids(pid))",
                pid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("nothing ever waited for the blocker's lock")


async def test_a_retry_while_the_first_is_in_flight_is_told_to_come_back(
    impatient: tuple[Client, Actors, str],
) -> None:
    client, actors, database_url = impatient
    survivor, merged = await actors.member(), await actors.member()
    support = keyed(bearer(await actors.staff("support")), "merge-1")
    path = f"/v1/members/{survivor.member_id}/merge"
    body = {"from_member_id": merged.member_id}

    # Hold the survivor's balance row: the merge claims its key, then waits for the row.
    blocker = await asyncpg.connect(database_url)
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("select 1 from point_balances where member_id = $1 for update",
                              survivor.member_uuid)
        first = asyncio.create_task(client.post(path, json=body, headers=support))
        await _until_someone_waits_for(blocker)

        retried = await asyncio.wait_for(client.post(path, json=body, headers=support), 10)
        assert retried.status_code == 409, retried.text
        assert retried.headers["content-type"].startswith("application/problem+json")
        assert retried.json()["type"].endswith(":idempotency_key_in_flight")
        assert int(retried.headers["retry-after"]) >= 1
        await holding.rollback()
        answered = await first
    finally:
        await blocker.close()

    assert answered.status_code == 200, answered.text
    assert "idempotent-replayed" not in answered.headers
    replayed = await client.post(path, json=body, headers=support)
    assert replayed.status_code == 200
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == answered.content
    audits = await query(database_url, "select count(*) from audit_log"
                                       " where action = 'members.merge'")
    assert audits[0]["count"] == 1


async def test_a_burst_of_keyed_grants_larger_than_the_pool_is_answered(
    fresh_database: str, app_with: AppWith,
) -> None:
    # A grant commits in batches on a pool connection while its key is held elsewhere: were
    # that a second pool connection, twelve requests on a pool of four could each hold one
    # and wait for another forever.
    async for client, actors in held(app_with(db_pool_max=4)):
        members = [await actors.member() for _ in range(3)]
        marketer = keyed(bearer(await actors.staff("marketer")), "burst")
        body = {"points": 5, "reason": "Burst", "members": [m.member_id for m in members]}
        responses = await asyncio.wait_for(asyncio.gather(*(
            client.post("/v1/points/grants", json=body, headers=marketer)
            for _ in range(12))), 60)
        granted = [r for r in responses if r.status_code == 201]
        assert len(granted) + sum(r.status_code == 409 for r in responses) == 12
        assert len({r.json()["grant_id"] for r in granted}) == 1
        entries = await query(fresh_database, "select count(*) from point_entries")
        assert entries[0]["count"] == 3


async def test_the_cleanup_job_ages_out_every_principals_keys(
    client: Client, actors: Actors, settings: Any,
) -> None:
    member = await actors.member()
    till_key, _ = await actors.terminal("CLEAN-01")
    support = bearer(await actors.staff("support"))
    sent = [
        await client.patch("/v1/me", json={"name": "Kept a while"},
                           headers=keyed(member.headers, "mine")),
        await client.post("/v1/pos/purchases", json=_purchase_for(member.member_id),
                          headers=keyed(bearer(till_key), "till")),
        await client.post(f"/v1/members/{member.member_id}/adjustments",
                          json={"points": 5, "reason": "Goodwill"},
                          headers=keyed(support, "staff")),
    ]
    assert [r.status_code for r in sent] == [200, 201, 201], [r.text for r in sent]
    assert (await query(settings.database_url,
                        "select count(*) from idempotency_keys"))[0]["count"] == 3
    await query(settings.database_url,
                "update idempotency_keys set created_at = now() - interval '73 hours'")
    admin = bearer(await actors.staff("admin"))
    started = await client.post("/v1/jobs/idempotency_cleanup/run", headers=admin)
    assert started.status_code == 202, started.text
    run = await until_job_finished(client, admin, "idempotency_cleanup", started.json()["run_id"])
    assert (run["outcome"], run["counts"]) == ("succeeded", {"deleted": 3})
    assert (await query(settings.database_url,
                        "select count(*) from idempotency_keys"))[0]["count"] == 0


def _purchase_for(member_id: str) -> dict[str, Any]:
    return purchase_body(member_id, 1000, prefix="CLEAN", occurred_at="2026-01-05T10:00:00+09:00")


# -- every write replays ----------------------------------------------------------------------


def webhook_path(world: World) -> str:
    return f"/v1/webhooks/endpoints/{world.extra['webhook_endpoint_id']}"


@dataclass(frozen=True)
class Write:
    caller: str
    status: int = 200
    body: Callable[[World], Any] | None = None
    path: Callable[[World], str] | None = None
    required: bool = False


async def _unlaunched_campaign(world: World) -> str:
    response = await world.client.post("/v1/campaigns", headers=world.headers["marketer"],
                                       json={"name": "Later", "members": [world.member_a_id],
                                             "action": {"type": "bonus_points", "points": 3}})
    assert response.status_code == 201, response.text
    return str(response.json()["campaign_id"])


def _utc_today() -> str:
    """Today in UTC: today or yesterday in the business time zone, never after it."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def _consents(_: World) -> dict[str, Any]:
    return {"consents": [{"purpose": "marketing_email", "granted": True, "text_version": "v1"}]}


WRITES: dict[tuple[str, str], Write] = {
    # the member app
    ("PATCH", "/v1/me"): Write("member_a", body=lambda _: {"name": "Renamed Member"}),
    ("PUT", "/v1/me/consents"): Write("member_a", body=_consents),
    ("POST", "/v1/me/actions"): Write("member_a", body=lambda _: {"type": "site_visit"}),
    ("POST", "/v1/me/events/{event_id:uuid}/rsvp"): Write(
        "member_a", 201, path=lambda w: f"/v1/me/events/{w.extra['spare_event_id']}/rsvp"),
    ("DELETE", "/v1/me/events/{event_id:uuid}/rsvp"): Write(
        "member_b", 204, path=lambda w: f"/v1/me/events/{w.extra['event_id']}/rsvp"),
    # tills
    ("POST", "/v1/pos/purchases"): Write("terminal_x", 201, member_a_purchase, required=True),
    ("POST", "/v1/pos/purchases/{purchase_id:uuid}/returns"): Write(
        "terminal_x", 201, lambda _: {"amount": 100}, required=True,
        path=lambda w: f"/v1/pos/purchases/{w.extra['purchase_id']}/returns"),
    ("POST", "/v1/pos/events/{event_id:uuid}/checkins"): Write(
        "terminal_x", 201, lambda w: {"member": {"id": w.member_a_id}}, required=True,
        path=lambda w: f"/v1/pos/events/{w.extra['checkin_event_id']}/checkins"),
    ("POST", "/v1/me/erasure/cancel"): Write("member_b"),  # pending: replay_world
    # members, points and merges (staff)
    ("PATCH", "/v1/members/{member_id:uuid}"): Write(
        "support", body=lambda _: {"name": "Corrected"}, path=member_a_path),
    ("POST", "/v1/members/{member_id:uuid}/adjustments"): Write(
        "support", 201, lambda _: {"points": 5, "reason": "goodwill"}, required=True,
        path=lambda w: f"{member_a_path(w)}/adjustments"),
    ("POST", "/v1/members/{member_id:uuid}/merge"): Write(
        "support", body=lambda w: {"from_member_id": w.extra["spare_members"][0]},
        required=True, path=lambda w: f"{member_a_path(w)}/merge"),
    # a spare member's erasure, then its cancel (sorted after it)
    ("POST", "/v1/members/{member_id:uuid}/erasure"): Write(
        "support", 202, lambda _: {"reason": "by letter"},
        path=lambda w: f"/v1/members/{w.extra['spare_members'][1]}/erasure"),
    ("POST", "/v1/members/{member_id:uuid}/erasure/cancel"): Write(
        "support", path=lambda w: f"/v1/members/{w.extra['spare_members'][1]}/erasure/cancel"),
    ("POST", "/v1/points/grants"): Write(
        "marketer", 201, lambda w: {"points": 5, "reason": "replayed grant",
                                    "members": [w.member_a_id]}, required=True),
    # the programme
    ("PUT", "/v1/earning-rules"): Write("marketer", body=lambda _: {}),
    ("PUT", "/v1/tiers"): Write("marketer", body=lambda _: {}),
    ("POST", "/v1/coupon-templates"): Write("marketer", 201, lambda _: {
        "name": "Replayed", "discount": {"type": "fixed_amount", "amount": 10}}),
    ("PATCH", "/v1/coupon-templates/{template_id:uuid}"): Write(
        "marketer", body=lambda _: {"name": "Renamed"},
        path=lambda w: f"/v1/coupon-templates/{w.extra['template_id']}"),
    ("POST", "/v1/coupon-templates/{template_id:uuid}/codes"): Write(
        "marketer", 201, lambda _: {"count": 3},
        path=lambda w: f"/v1/coupon-templates/{w.extra['template_id']}/codes"),
    ("POST", "/v1/coupon-templates/{template_id:uuid}/issue"): Write(
        "marketer", 201, lambda w: {"members": [w.member_a_id]}, required=True,
        path=lambda w: f"/v1/coupon-templates/{w.extra['template_id']}/issue"),
    ("POST", "/v1/segments"): Write(
        "marketer", 201, lambda _: {"name": "Active", "definition": ACTIVE}),
    ("PATCH", "/v1/segments/{segment_id:uuid}"): Write(
        "marketer", body=lambda _: {"name": "Renamed"},
        path=lambda w: f"/v1/segments/{w.extra['segment_id']}"),
    ("POST", "/v1/campaigns"): Write("marketer", 201, lambda w: {
        "name": "Replayed", "members": [w.member_a_id],
        "action": {"type": "bonus_points", "points": 2}}),
    ("POST", "/v1/campaigns/{campaign_id:uuid}/launch"): Write(
        "marketer", required=True,
        path=lambda w: f"/v1/campaigns/{w.extra['draft_campaign_id']}/launch"),
    ("POST", "/v1/events"): Write("marketer", 201, new_event),
    ("PATCH", "/v1/events/{event_id:uuid}"): Write(
        "marketer", body=lambda _: {"name": "Renamed"},
        path=lambda w: f"/v1/events/{w.extra['event_id']}"),
    # administration
    ("POST", "/v1/stores"): Write("admin", 201, new_store),
    ("POST", "/v1/staff"): Write("admin", 201, new_staff),
    ("PATCH", "/v1/staff/{staff_id:uuid}"): Write(
        "admin", body=lambda _: {"display_name": "Replayed"},
        path=lambda w: f"/v1/staff/{w.extra['login_staff_id']}"),
    ("DELETE", "/v1/terminals/{terminal_id:uuid}"): Write(
        "admin", 204, path=lambda w: f"/v1/terminals/{w.spare_terminal_id}"),
    ("POST", "/v1/earning-rules/backtest"): Write(
        "marketer", body=lambda _: {"rules": {"base": {"points": 2}},
                                    "from": _utc_today(), "to": _utc_today()}),
    ("POST", "/v1/jobs/{name:str}/run"): Write(
        "admin", 202, path=lambda _: "/v1/jobs/idempotency_cleanup/run"),
    # webhooks
    ("PATCH", "/v1/webhooks/endpoints/{endpoint_id:uuid}"): Write(
        "admin", body=lambda _: {"description": "Replayed"}, path=webhook_path),
    ("DELETE", "/v1/webhooks/endpoints/{endpoint_id:uuid}"): Write(
        "admin", 204,
        path=lambda w: f"/v1/webhooks/endpoints/{w.extra['spare_webhook_endpoint_id']}"),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id:uuid}/test"): Write(
        "admin", 202, path=lambda w: f"{webhook_path(w)}/test"),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry"):
        Write("admin", 202, path=lambda w: f"{webhook_path(w)}/deliveries/"
                                           f"{w.extra['webhook_delivery_id']}/retry"),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id:uuid}/replay"): Write(
        "admin", 202, lambda _: {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
        path=lambda w: f"{webhook_path(w)}/replay"),
}

# Writes that take no key, and why (docs/decisions/0012-idempotency-for-every-write.md): their
# answer is a credential (tokens, a terminal's API key), which must not be kept in plain text
# for a replay, or they are not writes of business data.
NOT_KEYED = {
    ("POST", "/v1/auth/member/register"), ("POST", "/v1/auth/member/login"),
    ("POST", "/v1/auth/staff/login"), ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"), ("POST", "/v1/terminals"),
    # A webhook endpoint's signing secret, shown once (api/webhooks.py).
    ("POST", "/v1/webhooks/endpoints"),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id:uuid}/rotate-secret"),
    # An offline till's queue: each item carries its own key, and is written and replayed as
    # its single request would be (tests/api/test_batches_api.py).
    ("POST", "/v1/pos/batches"),
    # Their bodies are passwords, reset tokens and codes, which decision 0003 keeps only hashed;
    # a retry is harmless (the new password is set again, a spent token or code is refused).
    ("PUT", "/v1/me/password"), ("PUT", "/v1/staff/me/password"),
    ("POST", "/v1/auth/member/password-reset/confirm"), ("POST", "/v1/me/verify"),
    # The answer is the same for everyone, and a retry asks for one more mail, counted by its
    # per-contact limit; for a code, the newest replaces the one before.
    ("POST", "/v1/auth/member/password-reset"), ("POST", "/v1/me/verification"),
    # Its body is the member's password, which is never kept, not even as the body's hash (a
    # fast hash of a password can be guessed offline); asking again answers the pending one.
    ("DELETE", "/v1/me"),
}
# POSTs that write nothing.
READS = {
    ("POST", "/v1/pos/quotes"), ("POST", "/v1/pos/coupons/validate"),
    ("POST", "/v1/segments/preview"), ("POST", "/v1/earning-rules/simulate"),
    # A member's data export: its audit row is the only write, and a new document is made
    # each time (tests/api/test_member_export.py).
    ("POST", "/v1/members/{member_id:uuid}/export"),
}

# What any write leaves behind: a replay must leave all of it as it was.
FOOTPRINT = """
select (select count(*) from audit_log) as audits,
       (select count(*) from point_entries) as entries,
       (select count(*) from member_actions) as actions,
       (select count(*) from member_consents) as consents,
       (select max(updated_at) from members) as members_updated,
       (select count(*) from event_reservations where cancelled_at is null) as seats,
       (select count(*) from job_runs) as job_runs,
       (select count(*) from earning_rule_versions) as rule_versions,
       (select count(*) from coupon_codes) as codes,
       (select count(*) from member_erasures) as erasures,
       (select count(*) from member_erasures where cancelled_at is not null) as cancelled,
       (select count(*) from rule_backtests) as backtests
"""


def test_every_write_route_is_keyed_or_says_why_not(app: Litestar) -> None:
    writes = {(m, p) for m, p in registered_routes(app) if m in {"POST", "PUT", "PATCH",
                                                                 "DELETE"}}
    assert writes - READS - NOT_KEYED == WRITES.keys()


def test_the_key_is_in_the_openapi_of_every_keyed_write(app: Litestar) -> None:
    paths = app.openapi_schema.to_schema()["paths"]
    for (method, route), write in WRITES.items():
        operation = paths[route.replace(":uuid", "").replace(":str", "")][method.lower()]
        keys = [p for p in operation.get("parameters", [])
                if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        assert len(keys) == 1, (method, route)
        assert keys[0].get("required", False) == write.required, (method, route)
        if write.status != 204:
            content = operation["responses"][str(write.status)]["content"]["application/json"]
            assert "$ref" in content["schema"], (method, route, content)


@pytest.fixture
async def replay_world(world: World) -> World:
    world.extra["draft_campaign_id"] = await _unlaunched_campaign(world)
    spare = await world.client.post("/v1/events", headers=world.headers["marketer"],
                                    json={**new_event(world), "invitation_only": False})
    assert spare.status_code == 201, spare.text
    world.extra["spare_event_id"] = spare.json()["event_id"]
    asked = await world.client.request("DELETE", "/v1/me", headers=world.headers["member_b"],
                                       json={"password": PASSWORD})
    assert asked.status_code == 202, asked.text
    return world


async def test_every_write_replays_its_first_answer_and_writes_nothing_more(
    replay_world: World, subtests: pytest.Subtests,
) -> None:
    world = replay_world
    database_url = world.actors.settings.database_url
    assert database_url is not None
    for (method, route), write in sorted(WRITES.items()):
        with subtests.test(msg=f"{method} {route}"):
            path = write.path(world) if write.path else route
            body = write.body(world) if write.body else None
            headers = keyed(world.headers[write.caller], fresh_key())
            before = await query(database_url, FOOTPRINT)
            first = await world.client.request(method, path, headers=headers, json=body)
            assert first.status_code == write.status, first.text
            assert "idempotent-replayed" not in first.headers
            after = await query(database_url, FOOTPRINT)
            assert after != before, "the first request wrote nothing the test can see"

            again = await world.client.request(method, path, headers=headers, json=body)
            assert again.status_code == write.status, again.text
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
            assert await query(database_url, FOOTPRINT) == after
