"""Events: staff create and edit them, campaigns invite members, members reserve seats (capacity
holds exactly under concurrency), a till checks members in and attendance earns points once."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from loyalty.core.errors import Conflict, NotFound
from loyalty.core.settings import Settings
from loyalty.members.filter import MemberFilter
from loyalty.promotions.store_events import invite_members
from tests.conftest import AppWith, held
from tests.factories import Actors, SignedUp, Staffed, bearer
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
_n = itertools.count()
NOW = dt.datetime.now(dt.UTC)


def at(hours: float) -> str:
    """An instant ``hours`` from now, as the API takes it."""
    return (NOW + dt.timedelta(hours=hours)).isoformat()


class Scene(Staffed):

    async def event(self, **fields: Any) -> dict[str, Any]:
        body = {"name": f"Tasting {next(_n)}", "place": "Shibuya store, 2F",
                "starts_at": at(24), "ends_at": at(26), "capacity": 10, "points": 30, **fields}
        response = await self.client.post("/v1/events", json=body, headers=self.marketer)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def invite(self, event: dict[str, Any], *members: SignedUp,
                     campaign_id: UUID | None = None) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await invite_members(
                conn, event_id=UUID(event["event_id"]),
                member_filter=MemberFilter.members(m.member_uuid for m in members),
                campaign_id=campaign_id, now=dt.datetime.now(dt.UTC))
        finally:
            await conn.close()

    async def rsvp(self, event: dict[str, Any], member: SignedUp) -> httpx.Response:
        return await self.client.post(f"/v1/me/events/{event['event_id']}/rsvp",
                                      headers=member.headers)

    async def check_in(self, event: dict[str, Any], member: dict[str, Any], *,
                       key: str | None = None, till: dict[str, str] | None = None,
                       ) -> httpx.Response:
        return await self.client.post(
            f"/v1/pos/events/{event['event_id']}/checkins", json={"member": member},
            headers={**(till or self.till), "Idempotency-Key": key or f"ci-{next(_n)}"})

    async def counts(self) -> dict[str, Any]:
        """What a refused request must leave as it was."""
        return {
            "reservations": [tuple(r) for r in await self.fetch(
                "select member_id, event_id, reserved_at, cancelled_at from event_reservations"
                " order by 1, 2")],
            "seats": [tuple(r) for r in await self.fetch(
                "select event_id, reserved, capacity, status from events order by 1")],
            "checkins": await self.value("select count(*) from event_checkins"),
            "entries": await self.value("select count(*) from point_entries"),
            "actions": await self.value("select count(*) from member_actions"),
            "keys": await self.value("select count(*) from idempotency_keys"),
        }


async def _scene(client: Client, actors: Actors, database_url: str) -> Scene:
    marketer = bearer(await actors.staff("marketer"))
    api_key, _ = await actors.terminal("EVENT-1")
    return Scene(client, actors, database_url, marketer, bearer(api_key))


@pytest.fixture
async def scene(client: Client, actors: Actors, settings: Settings) -> Scene:
    assert settings.database_url
    return await _scene(client, actors, settings.database_url)


@pytest.fixture
async def crowd(fresh_database: str, app_with: AppWith) -> AsyncIterator[Scene]:
    """A scene whose app has a pool big enough for many requests at once."""
    async for client, actors in held(app_with(db_pool_max=25)):
        yield await _scene(client, actors, fresh_database)


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).removeprefix("urn:loyalty:problem:")


# -- staff -----------------------------------------------------------------------------------


async def test_staff_create_read_and_page_through_events(scene: Scene) -> None:
    made = [await scene.event(starts_at=at(24 * day), ends_at=at(24 * day + 2))
            for day in (3, 1, 2)]
    first = made[0]
    assert first["status"] == "scheduled"
    assert first["invitation_only"] is True
    assert (first["capacity"], first["points"], first["reserved"], first["checked_in"]) == (
        10, 30, 0, 0)
    assert first["store_code"] is None
    got = await scene.client.get(f"/v1/events/{first['event_id']}", headers=scene.marketer)
    assert got.json() == first

    analyst = bearer(await scene.actors.staff("analyst"))
    seen, cursor = [], None
    while True:
        page = (await scene.client.get("/v1/events", headers=analyst, params={
            "limit": 1, **({"cursor": cursor} if cursor else {})})).json()
        seen += [e["event_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [made[0]["event_id"], made[2]["event_id"], made[1]["event_id"]]
    refused = await scene.client.post("/v1/events", headers=analyst, json={})
    assert refused.status_code == 403


async def test_event_bound_to_a_store_and_edited(scene: Scene) -> None:
    await scene.actors.terminal("SHIBUYA")
    event = await scene.event(store_code="SHIBUYA", invitation_only=False)
    assert event["store_code"] == "SHIBUYA"
    assert event["invitation_only"] is False
    edited = await scene.client.patch(f"/v1/events/{event['event_id']}", headers=scene.marketer,
                                      json={"name": "  Sake tasting ", "store_code": None,
                                            "capacity": 3})
    assert edited.status_code == 200, edited.text
    assert (edited.json()["name"], edited.json()["store_code"], edited.json()["capacity"]) == (
        "Sake tasting", None, 3)
    assert edited.json()["place"] == event["place"]


async def test_capacity_never_goes_below_the_seats_reserved(scene: Scene) -> None:
    event = await scene.event(invitation_only=False)
    for _ in range(2):
        assert (await scene.rsvp(event, await scene.actors.member())).status_code == 201
    path = f"/v1/events/{event['event_id']}"
    before = await scene.counts()
    refused = await scene.client.patch(path, headers=scene.marketer, json={"capacity": 1})
    assert refused.status_code == 409
    assert problem_code(refused) == "capacity_below_reserved"
    assert await scene.counts() == before
    lowered = await scene.client.patch(path, headers=scene.marketer, json={"capacity": 2})
    assert (lowered.json()["capacity"], lowered.json()["reserved"]) == (2, 2)
    full = await scene.rsvp(event, await scene.actors.member())
    assert problem_code(full) == "event_full"


async def test_a_cancelled_event_stays_cancelled(scene: Scene) -> None:
    event = await scene.event()
    path = f"/v1/events/{event['event_id']}"
    cancelled = await scene.client.patch(path, headers=scene.marketer,
                                         json={"status": "cancelled"})
    assert cancelled.json()["status"] == "cancelled"
    again = await scene.client.patch(path, headers=scene.marketer, json={"status": "scheduled"})
    assert again.status_code == 409
    assert problem_code(again) == "event_cancelled"
    assert (await scene.client.get(path, headers=scene.marketer)).json()["status"] == "cancelled"


@pytest.mark.parametrize(("change", "status", "code"), [
    ({"ends_at": at(20)}, 422, "ends_before_start"),
    ({"store_code": "NOWHERE"}, 422, "unknown_store"),
    ({"name": "   "}, 422, "invalid_input"),
    ({"starts_at": "2030-01-01T10:00:00"}, 400, "validation_failed"),
    ({"capacity": 0}, 400, "validation_failed"),
    ({"capacity": "10"}, 400, "validation_failed"),
    ({"points": -1}, 400, "validation_failed"),
    ({"reserved": 5}, 400, "validation_failed"),
    ({"status": "cancelled"}, 400, "validation_failed"),
    ({"place": "x" * 201}, 400, "validation_failed"),
])
async def test_bad_event_input_is_refused_and_creates_nothing(
    scene: Scene, change: dict[str, Any], status: int, code: str,
) -> None:
    body = {"name": "Tasting", "place": "2F", "starts_at": at(24), "ends_at": at(26),
            "capacity": 10, **change}
    response = await scene.client.post("/v1/events", json=body, headers=scene.marketer)
    assert response.status_code == status, response.text
    assert problem_code(response) == code
    assert await scene.value("select count(*) from events") == 0


async def test_bad_edits_change_nothing(scene: Scene) -> None:
    event = await scene.event()
    path = f"/v1/events/{event['event_id']}"
    for body, status, code in [({"ends_at": at(1)}, 422, "ends_before_start"),
                               ({"store_code": "NOWHERE"}, 422, "unknown_store"),
                               ({"capacity": None}, 400, "validation_failed"),
                               ({"status": "finished"}, 400, "validation_failed")]:
        response = await scene.client.patch(path, json=body, headers=scene.marketer)
        assert response.status_code == status, response.text
        assert problem_code(response) == code
    assert (await scene.client.get(path, headers=scene.marketer)).json() == event
    unknown = await scene.client.patch(f"/v1/events/{UUID(int=5)}", json={},
                                       headers=scene.marketer)
    assert (unknown.status_code, problem_code(unknown)) == (404, "event_not_found")


# -- invitations -----------------------------------------------------------------------------


async def test_invite_members_is_idempotent_and_skips_suspended_erased_and_merged(
    scene: Scene,
) -> None:
    event = await scene.event()
    active, dormant, suspended, erased, merged, survivor = [
        await scene.actors.member() for _ in range(6)]
    support = bearer(await scene.actors.staff("support"))
    response = await scene.client.patch(f"/v1/members/{suspended.member_id}", headers=support,
                                        json={"status": "suspended"})
    assert response.status_code == 200, response.text
    response = await scene.client.post(f"/v1/members/{survivor.member_id}/merge",
                                       headers={**support, "Idempotency-Key": "merge"},
                                       json={"from_member_id": merged.member_id})
    assert response.status_code == 200, response.text
    conn = await asyncpg.connect(scene.database_url)
    try:
        await conn.execute("update members set status = 'dormant' where member_id = $1",
                           dormant.member_uuid)
        await conn.execute("update members set status = 'erased' where member_id = $1",
                           erased.member_uuid)
    finally:
        await conn.close()

    campaign = UUID(int=42)
    everyone = (active, dormant, suspended, erased, merged)
    assert await scene.invite(event, *everyone, campaign_id=campaign) == 2
    assert await scene.invite(event, *everyone) == 0
    rows = await scene.fetch("select member_id, campaign_id from event_invitations")
    assert sorted((r["member_id"], r["campaign_id"]) for r in rows) == sorted(
        [(active.member_uuid, campaign), (dormant.member_uuid, campaign)])
    # Inviting more later adds only the new ones.
    assert await scene.invite(event, active, survivor) == 1


async def test_invitations_to_a_missing_cancelled_or_ended_event_are_refused(
    scene: Scene,
) -> None:
    member = await scene.actors.member()
    missing = {"event_id": str(UUID(int=7))}
    with pytest.raises(NotFound) as not_found:
        await scene.invite(missing, member)
    assert not_found.value.code == "event_not_found"
    ended = await scene.event(starts_at=at(-3), ends_at=at(-1))
    with pytest.raises(Conflict) as over:
        await scene.invite(ended, member)
    assert over.value.code == "event_ended"
    cancelled = await scene.event()
    await scene.client.patch(f"/v1/events/{cancelled['event_id']}", headers=scene.marketer,
                             json={"status": "cancelled"})
    with pytest.raises(Conflict) as off:
        await scene.invite(cancelled, member)
    assert off.value.code == "event_cancelled"
    assert await scene.value("select count(*) from event_invitations") == 0


# -- reservations ----------------------------------------------------------------------------


async def test_fifty_invited_members_racing_for_ten_seats_get_exactly_ten(crowd: Scene) -> None:
    event = await crowd.event(capacity=10)
    members = [await crowd.actors.member() for _ in range(50)]
    assert await crowd.invite(event, *members) == 50
    responses = await asyncio.gather(*(crowd.rsvp(event, m) for m in members))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 10
    assert statuses.count(409) == 40
    assert {problem_code(r) for r in responses if r.status_code == 409} == {"event_full"}
    assert sorted(r.json()["seats_left"] for r in responses if r.status_code == 201) == list(
        range(10))
    assert await crowd.value("select reserved from events") == 10
    rows = await crowd.fetch("select member_id from event_reservations")
    winners = {UUID(r.json()["member_id"]) for r in responses if r.status_code == 201}
    assert {r["member_id"] for r in rows} == winners
    assert len(rows) == 10


async def test_one_member_sending_ten_rsvps_at_once_holds_one_seat(crowd: Scene) -> None:
    event = await crowd.event(capacity=10)
    member = await crowd.actors.member()
    await crowd.invite(event, member)
    responses = await asyncio.gather(*(crowd.rsvp(event, member) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["reserved_at"] for r in responses}) == 1
    assert await crowd.value("select reserved from events") == 1
    assert await crowd.value("select count(*) from event_reservations") == 1


async def test_a_seat_given_back_is_given_back_once(crowd: Scene) -> None:
    event = await crowd.event(capacity=2, invitation_only=False)
    member = await crowd.actors.member()
    assert (await crowd.rsvp(event, member)).status_code == 201
    path = f"/v1/me/events/{event['event_id']}/rsvp"
    responses = await asyncio.gather(*(crowd.client.delete(path, headers=member.headers)
                                       for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [204] + [404] * 9
    assert {problem_code(r) for r in responses if r.status_code == 404} == {"not_reserved"}
    assert await crowd.value("select reserved from events") == 0
    # Reserving again takes a seat again.
    assert (await crowd.rsvp(event, member)).status_code == 201
    assert await crowd.value("select reserved from events") == 1
    assert await crowd.value(
        "select count(*) from event_reservations where cancelled_at is null") == 1


async def test_reservations_that_may_not_be_made_are_refused_with_their_own_code(
    scene: Scene,
) -> None:
    member = await scene.actors.member()
    uninvited = await scene.actors.member()
    by_invitation = await scene.event()
    ended = await scene.event(starts_at=at(-3), ends_at=at(-1), invitation_only=False)
    cancelled = await scene.event()
    full = await scene.event(capacity=1)
    for event in (by_invitation, cancelled, full):
        await scene.invite(event, member)
    assert (await scene.rsvp(full, await _invited(scene, full))).status_code == 201
    await scene.client.patch(f"/v1/events/{cancelled['event_id']}", headers=scene.marketer,
                             json={"status": "cancelled"})
    before = await scene.counts()
    cases = [(by_invitation, uninvited, 403, "not_invited"),
             (ended, member, 409, "event_ended"),
             (cancelled, member, 409, "event_cancelled"),
             (full, member, 409, "event_full"),
             ({"event_id": str(UUID(int=9))}, member, 404, "event_not_found")]
    for event, who, status, code in cases:
        response = await scene.rsvp(event, who)
        assert (response.status_code, problem_code(response)) == (status, code)
    assert await scene.counts() == before


async def _invited(scene: Scene, event: dict[str, Any]) -> SignedUp:
    member = await scene.actors.member()
    await scene.invite(event, member)
    return member


async def test_open_events_take_anyone_and_suspended_members_are_refused(scene: Scene) -> None:
    event = await scene.event(invitation_only=False)
    member = await scene.actors.member()
    reserved = await scene.rsvp(event, member)
    assert reserved.status_code == 201
    assert reserved.json()["seats_left"] == 9
    suspended = await scene.actors.member()
    support = bearer(await scene.actors.staff("support"))
    await scene.client.patch(f"/v1/members/{suspended.member_id}", headers=support,
                             json={"status": "suspended"})
    refused = await scene.rsvp(event, suspended)
    # Suspension ends the member's sessions: the token is refused before the event's own
    # check (409 member_suspended) is reached.
    assert (refused.status_code, problem_code(refused)) == (401, "session_ended")


async def test_my_events_lists_upcoming_soonest_first_then_past_latest_first(
    scene: Scene,
) -> None:
    member = await scene.actors.member()
    later = await scene.event(starts_at=at(48), ends_at=at(50))
    soon = await scene.event(starts_at=at(2), ends_at=at(4), invitation_only=False)
    under_way = await scene.event(starts_at=at(-1), ends_at=at(1))
    long_ago = await scene.event(starts_at=at(50), ends_at=at(52))
    yesterday = await scene.event(starts_at=at(26), ends_at=at(28))
    await scene.event()  # neither invited nor reserved: not listed
    for event in (later, under_way, long_ago, yesterday):
        await scene.invite(event, member)
    # Invited while they were ahead; then the marketer records when they really happened.
    for event, starts, ends in ((long_ago, -50, -48), (yesterday, -26, -24)):
        moved = await scene.client.patch(f"/v1/events/{event['event_id']}",
                                         headers=scene.marketer,
                                         json={"starts_at": at(starts), "ends_at": at(ends)})
        assert moved.status_code == 200, moved.text
    assert (await scene.rsvp(soon, member)).status_code == 201
    assert (await scene.rsvp(under_way, member)).status_code == 201

    expected = [under_way, soon, later, yesterday, long_ago]
    whole = (await scene.client.get("/v1/me/events", headers=member.headers)).json()
    assert [e["event_id"] for e in whole["items"]] == [e["event_id"] for e in expected]
    assert whole["next_cursor"] is None
    states = {e["event_id"]: (e["invited"], e["reserved"], e["checked_in"])
              for e in whole["items"]}
    assert states[soon["event_id"]] == (False, True, False)
    assert states[under_way["event_id"]] == (True, True, False)
    assert states[later["event_id"]] == (True, False, False)
    assert whole["items"][0]["seats_left"] == 9
    assert whole["items"][0]["reserved_at"] is not None
    assert whole["items"][2]["reserved_at"] is None

    paged, cursor = [], None
    while True:
        page = (await scene.client.get("/v1/me/events", headers=member.headers, params={
            "limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == whole["items"]
    other = await scene.actors.member()
    assert (await scene.client.get("/v1/me/events", headers=other.headers)).json() == {
        "items": [], "next_cursor": None}
    bad = await scene.client.get("/v1/me/events", headers=member.headers,
                                 params={"cursor": "bm90IGEgY3Vyc29y"})
    assert (bad.status_code, problem_code(bad)) == (422, "invalid_input")


# -- check-in --------------------------------------------------------------------------------


async def _seated(scene: Scene, event: dict[str, Any]) -> SignedUp:
    member = await scene.actors.member()
    await scene.invite(event, member)
    assert (await scene.rsvp(event, member)).status_code == 201
    return member


async def test_check_in_awards_the_event_points_once(scene: Scene) -> None:
    event = await scene.event(starts_at=at(0.5), ends_at=at(3), points=30)
    member = await _seated(scene, event)
    ref = {"id": member.member_id}
    first = await scene.check_in(event, ref, key="door-1")
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["points_earned"], body["balance"], body["member_id"]) == (
        30, {"available": 30, "pending": 0}, member.member_id)
    replay = await scene.check_in(event, ref, key="door-1")
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    again = await scene.check_in(event, ref, key="door-2")
    assert (again.status_code, problem_code(again)) == (409, "already_checked_in")

    (entry,) = await scene.fetch("select * from point_entries")
    assert (entry["kind"], entry["source"], entry["amount"], entry["reason"]) == (
        "earn", "action", 30, f"Attended {event['name']}")
    assert str(entry["action_id"]) == body["action_id"]
    (action,) = await scene.fetch("select * from member_actions")
    assert (action["action"], action["target"], action["points"]) == (
        "event_attendance", event["event_id"], 30)
    (checkin,) = await scene.fetch("select * from event_checkins")
    assert (str(checkin["event_id"]), checkin["points"], str(checkin["action_id"])) == (
        event["event_id"], 30, body["action_id"])
    assert await scene.value("select last_activity_at from members where member_id = $1",
                             member.member_uuid) == checkin["checked_in_at"]
    lot_expiry = await scene.value("select expires_at from point_lots")
    assert lot_expiry is not None
    assert lot_expiry > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    check_invariants(await ledger_rows(scene.database_url))

    read = (await scene.client.get(f"/v1/events/{event['event_id']}",
                                   headers=scene.marketer)).json()
    assert (read["reserved"], read["checked_in"]) == (1, 1)
    mine = (await scene.client.get("/v1/me/events", headers=member.headers)).json()["items"]
    assert (mine[0]["checked_in"], mine[0]["checked_in_at"] is not None) == (True, True)
    history = (await scene.client.get("/v1/me/points/history", headers=member.headers)).json()
    assert [(e["amount"], e["reason"]) for e in history["items"]] == [
        (30, f"Attended {event['name']}")]
    # Checked in: the seat is no longer given back.
    cancel = await scene.client.delete(f"/v1/me/events/{event['event_id']}/rsvp",
                                       headers=member.headers)
    assert (cancel.status_code, problem_code(cancel)) == (409, "already_checked_in")


async def test_twenty_concurrent_check_ins_of_one_member_award_once(crowd: Scene) -> None:
    event = await crowd.event(starts_at=at(-0.5), ends_at=at(2), points=50)
    member = await _seated(crowd, event)
    responses = await asyncio.gather(*(
        crowd.check_in(event, {"id": member.member_id}, key=f"race-{i}") for i in range(20)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1
    assert statuses.count(409) == 19
    assert {problem_code(r) for r in responses if r.status_code == 409} == {
        "already_checked_in"}
    retries = await asyncio.gather(*(
        crowd.check_in(event, {"id": member.member_id}, key="same-key") for _ in range(20)))
    assert {r.status_code for r in retries} == {409}
    rows = await ledger_rows(crowd.database_url)
    assert [e["amount"] for e in rows.entries] == [50]
    check_invariants(rows)
    assert await crowd.value("select count(*) from event_checkins") == 1
    assert await crowd.value("select count(*) from member_actions") == 1


async def test_retries_of_one_check_in_replay_it(crowd: Scene) -> None:
    event = await crowd.event(starts_at=at(-0.5), ends_at=at(2), points=50)
    member = await _seated(crowd, event)
    responses = await asyncio.gather(*(
        crowd.check_in(event, {"id": member.member_id}, key="one-key") for _ in range(20)))
    assert [r.status_code for r in responses] == [201] * 20
    assert len({r.content for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    rows = await ledger_rows(crowd.database_url)
    assert [e["amount"] for e in rows.entries] == [50]
    check_invariants(rows)


async def test_check_in_racing_a_cancellation_never_checks_in_without_a_seat(
    crowd: Scene,
) -> None:
    event = await crowd.event(starts_at=at(-0.5), ends_at=at(2), capacity=20, points=10)
    members = [await _seated(crowd, event) for _ in range(12)]
    path = f"/v1/me/events/{event['event_id']}/rsvp"
    responses = await asyncio.gather(*(
        request for m in members for request in (
            crowd.check_in(event, {"id": m.member_id}),
            crowd.client.delete(path, headers=m.headers))))
    outcomes = [(responses[2 * i].status_code, responses[2 * i + 1].status_code)
                for i in range(len(members))]
    # Exactly one of the two wins for each member: checked in (seat kept), or seat given back.
    assert set(outcomes) <= {(201, 409), (409, 204)}, outcomes
    checked_in = {r["member_id"] for r in await crowd.fetch(
        "select member_id from event_checkins")}
    held = {r["member_id"] for r in await crowd.fetch(
        "select member_id from event_reservations where cancelled_at is null")}
    assert checked_in == held
    assert len(checked_in) == sum(o == (201, 409) for o in outcomes)
    assert await crowd.value("select reserved from events") == len(held)
    check_invariants(await ledger_rows(crowd.database_url))


async def test_check_ins_that_may_not_be_made_are_refused_with_their_own_code(
    scene: Scene, actors: Actors,
) -> None:
    await actors.terminal("OTHER-STORE")
    key, _ = await actors.terminal("BOUND-STORE")
    bound_till = bearer(key)
    bound = await scene.event(starts_at=at(-0.5), ends_at=at(2), store_code="BOUND-STORE")
    open_now = await scene.event(starts_at=at(-0.5), ends_at=at(2))
    ended = await scene.event(starts_at=at(-3), ends_at=at(-1))
    cancelled = await scene.event(starts_at=at(-0.5), ends_at=at(2))
    not_yet = await scene.event(starts_at=at(5), ends_at=at(7))
    member = await scene.actors.member()
    for event in (bound, open_now, cancelled, not_yet):
        await scene.invite(event, member)
        assert (await scene.rsvp(event, member)).status_code == 201
    await scene.client.patch(f"/v1/events/{cancelled['event_id']}", headers=scene.marketer,
                             json={"status": "cancelled"})
    unseated = await scene.actors.member()
    suspended = await _seated(scene, open_now)
    support = bearer(await scene.actors.staff("support"))
    await scene.client.patch(f"/v1/members/{suspended.member_id}", headers=support,
                             json={"status": "suspended"})
    ref = {"id": member.member_id}

    before = await scene.counts()
    cases = [(bound, ref, scene.till, 403, "event_at_another_store"),
             (open_now, {"id": unseated.member_id}, scene.till, 409, "not_reserved"),
             (open_now, {"id": suspended.member_id}, scene.till, 409, "member_suspended"),
             (ended, ref, scene.till, 409, "event_ended"),
             (cancelled, ref, scene.till, 409, "event_cancelled"),
             (not_yet, ref, scene.till, 409, "checkin_not_open"),
             ({"event_id": str(UUID(int=3))}, ref, scene.till, 404, "event_not_found"),
             (open_now, {"id": str(UUID(int=4))}, scene.till, 404, "member_not_found"),
             (open_now, {"id": member.member_id, "number": "123"}, scene.till, 400,
              "validation_failed")]
    for event, who, till, status, code in cases:
        response = await scene.check_in(event, who, till=till)
        assert (response.status_code, problem_code(response)) == (status, code), code
    no_key = await scene.client.post(f"/v1/pos/events/{open_now['event_id']}/checkins",
                                     json={"member": ref}, headers=scene.till)
    assert (no_key.status_code, problem_code(no_key)) == (400, "validation_failed")
    assert await scene.counts() == before

    at_its_store = await scene.check_in(bound, ref, till=bound_till)
    assert at_its_store.status_code == 201, at_its_store.text


async def test_check_in_by_card_or_number_and_without_points(scene: Scene) -> None:
    free = await scene.event(starts_at=at(-0.5), ends_at=at(2), points=0)
    paid = await scene.event(starts_at=at(-0.5), ends_at=at(2), points=15)
    member = await _seated(scene, free)
    await scene.invite(paid, member)
    assert (await scene.rsvp(paid, member)).status_code == 201
    number = {"number": member.member["member_number"]}
    free_in = await scene.check_in(free, number)
    assert free_in.status_code == 201, free_in.text
    assert (free_in.json()["points_earned"], free_in.json()["balance"]["available"]) == (0, 0)
    again = await scene.check_in(free, number)
    assert problem_code(again) == "already_checked_in"
    card = (await scene.client.get("/v1/me/card", headers=member.headers)).json()["token"]
    paid_in = await scene.check_in(paid, {"card": card})
    assert paid_in.status_code == 201, paid_in.text
    assert paid_in.json()["balance"]["available"] == 15
    rows = await ledger_rows(scene.database_url)
    assert [e["amount"] for e in rows.entries] == [15]
    check_invariants(rows)
    assert await scene.value("select count(*) from event_checkins") == 2
    assert await scene.value("select count(*) from member_actions") == 2


async def test_members_cannot_claim_attendance_from_the_app_even_if_the_rules_name_it(
    scene: Scene, actors: Actors,
) -> None:
    admin = bearer(await actors.staff("admin"))
    rules = (await scene.client.get("/v1/earning-rules", headers=admin)).json()["rules"]
    rules["actions"]["event_attendance"] = {"points": 50}
    saved = await scene.client.put("/v1/earning-rules", json=rules, headers=admin)
    assert saved.status_code == 200, saved.text
    member = await actors.member()
    claimed = await scene.client.post("/v1/me/actions", json={"type": "event_attendance"},
                                      headers=member.headers)
    assert claimed.status_code == 422
    assert problem_code(claimed) == "unknown_action"
    assert await scene.value("select count(*) from point_entries") == 0
