"""Every effect writes its event into the outbox, in its own transaction: exactly one event of
its type with the right data, none on an idempotent replay, none when the transaction rolls
back, one per affected row for the set-based jobs. Every event any test here reads is decoded
into its payload Struct from the registry (``outbox_since``): the property the OpenAPI document's
``webhooks`` promises a receiver, checked over every row the tests write."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections import Counter
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import msgspec
import pytest

from loyalty.core.db import init_connection
from loyalty.core.ids import uuid7
from loyalty.core.outbox import API_VERSION
from loyalty.core.settings import Settings
from loyalty.insights.dormancy import flag_dormant
from loyalty.members.filter import MemberFilter
from loyalty.members.profiles import record_consents, update_member
from loyalty.points.expiry import expire_points, remind_expiring_points
from loyalty.points.rules import RuleBook, ensure_default_rules
from loyalty.points.tiers import evaluate_tiers
from loyalty.promotions.birthdays import give_birthday_rewards
from loyalty.promotions.coupon_templates import create_template
from loyalty.promotions.coupon_wallet import issue_to_members
from schemas.coupons import CouponTemplateCreate, FixedAmount
from schemas.members import ConsentChoice, ConsentPurpose, StaffMemberUpdate
from schemas.outbox import EVENT_TYPES, envelope_type
from tests.factories import (
    PROGRAMME,
    TOKYO,
    Actors,
    bearer,
    insert_member,
    make_members,
    purchase_body,
)

Client = httpx.AsyncClient
_keys = itertools.count()


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"events-{next(_keys)}"}


class Written(msgspec.Struct):
    seq: int
    type: str
    member_id: UUID | None
    data: dict[str, Any]


async def outbox_since(database_url: str, seq: int = 0) -> list[Written]:
    """The events written after ``seq``, each checked on the way: its type is in the registry,
    its envelope (id, type, occurred_at, api_version, data) decodes as the document says, and
    its ``data`` as the JSON a receiver gets decodes into the type's Struct."""
    conn = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        rows = await conn.fetch(
            "select event_id, seq, type, occurred_at, api_version, member_id, data from outbox"
            " where seq > $1 order by seq", seq)
    finally:
        await conn.close()
    written = []
    for row in rows:
        assert row["type"] in EVENT_TYPES, row["type"]
        assert row["api_version"] == API_VERSION
        sent = json.dumps({"id": str(row["event_id"]), "type": row["type"],
                           "occurred_at": row["occurred_at"].isoformat(),
                           "api_version": row["api_version"], "data": row["data"]})
        envelope: Any = msgspec.json.decode(sent, type=envelope_type(row["type"]))
        if "member_id" in EVENT_TYPES[row["type"]].__struct_fields__:
            assert envelope.data.member_id == row["member_id"], row["type"]
        written.append(Written(row["seq"], row["type"], row["member_id"], row["data"]))
    return written


async def last_seq(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        seq: int = await conn.fetchval("select coalesce(max(seq), 0) from outbox")
    finally:
        await conn.close()
    return seq


def of_type(events: list[Written], type_: str) -> list[Written]:
    return [e for e in events if e.type == type_]


@pytest.fixture
def actors(client: Client, settings: Settings) -> Actors:
    return Actors(client, settings)


@pytest.fixture
async def till(actors: Actors) -> dict[str, str]:
    api_key, _ = await actors.terminal("EVENTS-1")
    return bearer(api_key)


@pytest.fixture
def database(settings: Settings) -> str:
    assert settings.database_url
    return settings.database_url


# -- members ---------------------------------------------------------------------------------


async def test_registration_writes_member_registered_with_the_profile(
        actors: Actors, database: str) -> None:
    member = await actors.member(email="hana@example.com", name="Hana Sato")
    [event] = of_type(await outbox_since(database), "member.registered")
    assert event.member_id == member.member_uuid
    assert event.data["email"] == "hana@example.com"
    assert event.data["name"] == "Hana Sato"
    assert event.data["member_number"] == member.member["member_number"]


async def test_a_profile_change_writes_member_updated_and_a_status_change_its_own(
        client: Client, actors: Actors, database: str) -> None:
    member = await actors.member()
    admin = bearer(await actors.staff("admin"))
    seq = await last_seq(database)
    headers = {**admin, **key()}
    body = {"postal_code": "150-0001", "status": "suspended"}
    changed = await client.patch(f"/v1/members/{member.member_id}", json=body, headers=headers)
    assert changed.status_code == 200, changed.text
    replayed = await client.patch(f"/v1/members/{member.member_id}", json=body,
                                  headers=headers)
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    events = await outbox_since(database, seq)
    assert sorted(e.type for e in events) == ["member.status_changed", "member.updated"]
    [updated] = of_type(events, "member.updated")
    assert updated.data["changed"] == ["postal_code"]
    assert updated.data["postal_code"] == "150-0001"
    [status] = of_type(events, "member.status_changed")
    assert (status.data["from_status"], status.data["to_status"], status.data["reason"]) == (
        "active", "suspended", "staff")


async def test_a_rolled_back_change_leaves_no_event(actors: Actors, database: str,
                                                   settings: Settings) -> None:
    member = await actors.member()
    seq = await last_seq(database)
    conn = await asyncpg.connect(database)
    try:
        await init_connection(conn)
        transaction = conn.transaction()
        await transaction.start()
        await update_member(conn, member.member_uuid,
                            StaffMemberUpdate(name="Someone Else", status="suspended"),
                            region="JP")
        # The effect wrote its events inside the transaction...
        assert await conn.fetchval("select count(*) from outbox where seq > $1", seq) == 2
        await expire_points(conn, now=dt.datetime.now(dt.UTC))
        await transaction.rollback()
    finally:
        await conn.close()
    # ...and they went with it.
    assert await outbox_since(database, seq) == []


async def test_merging_writes_member_merged_with_the_points_moved(
        client: Client, actors: Actors, database: str, till: dict[str, str]) -> None:
    survivor, merged = await actors.member(), await actors.member()
    bought = await client.post("/v1/pos/purchases", json=purchase_body(merged.member_id, 5_000),
                               headers={**till, **key()})
    assert bought.status_code == 201, bought.text
    admin = bearer(await actors.staff("admin"))
    seq = await last_seq(database)
    response = await client.post(f"/v1/members/{survivor.member_id}/merge",
                                 json={"from_member_id": merged.member_id},
                                 headers={**admin, **key()})
    assert response.status_code == 200, response.text
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["member.merged"]
    assert events[0].member_id == survivor.member_uuid
    assert events[0].data["merged_member_id"] == merged.member_id
    assert events[0].data["points_moved"] == 50
    assert events[0].data["balance"] == {"available": 50, "pending": 0}


# -- the till ------------------------------------------------------------------------------------


async def test_a_purchase_writes_purchase_recorded_and_points_earned_once_per_key(
        client: Client, actors: Actors, database: str, till: dict[str, str]) -> None:
    member = await actors.member()
    seq = await last_seq(database)
    body = purchase_body(member.member_id, 12_345, lines=[
        {"sku": "TEA", "category": "drinks", "unit_price": 12_345}])
    headers = {**till, **key()}
    first = await client.post("/v1/pos/purchases", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post("/v1/pos/purchases", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["purchase.recorded", "points.earned"]
    recorded, earned = events
    purchase_id = first.json()["purchase_id"]
    assert recorded.data["purchase_id"] == purchase_id
    assert recorded.data["total"] == 12_345
    assert recorded.data["points_earned"] == 123
    assert recorded.data["store_code"] == "EVENTS-1"
    assert recorded.data["lines"] == [{"sku": "TEA", "unit_price": 12_345,
                                       "category": "drinks", "quantity": 1}]
    assert earned.data["points"] == 123
    assert earned.data["purchase_id"] == purchase_id
    assert earned.data["source"] == "purchase"
    assert earned.data["balance"] == first.json()["balance"]
    assert {e.member_id for e in events} == {member.member_uuid}


async def test_racing_purchases_write_one_pair_each_and_a_racing_key_one_pair(
        client: Client, actors: Actors, database: str, till: dict[str, str]) -> None:
    member = await actors.member()
    seq = await last_seq(database)
    # Ten purchases at once for one member: most find the ledger moved and go again under
    # the lock; each writes its events once, with the posting that lands.
    answers = await asyncio.gather(*(
        client.post("/v1/pos/purchases", json=purchase_body(member.member_id, 1_000),
                    headers={**till, **key()}) for _ in range(10)))
    assert [a.status_code for a in answers] == [201] * 10
    # The same key five times at once: one purchase, one pair of events.
    same = {**till, **key()}
    body = purchase_body(member.member_id, 2_000)
    replays = await asyncio.gather(*(
        client.post("/v1/pos/purchases", json=body, headers=same) for _ in range(5)))
    assert {r.status_code for r in replays} <= {201, 409}
    events = await outbox_since(database, seq)
    assert Counter(e.type for e in events) == {"purchase.recorded": 11, "points.earned": 11}
    recorded = {e.data["purchase_id"] for e in of_type(events, "purchase.recorded")}
    assert recorded == {a.json()["purchase_id"] for a in answers} | {
        r.json()["purchase_id"] for r in replays if r.status_code == 201}


async def test_redeeming_and_returning_write_their_events(
        client: Client, actors: Actors, database: str, till: dict[str, str]) -> None:
    member = await actors.member()
    earned = await client.post("/v1/pos/purchases",
                               json=purchase_body(member.member_id, 10_000),
                               headers={**till, **key()})
    assert earned.status_code == 201, earned.text
    seq = await last_seq(database)
    spent = await client.post("/v1/pos/purchases",
                              json=purchase_body(member.member_id, 2_000, redeem_points=50),
                              headers={**till, **key()})
    assert spent.status_code == 201, spent.text
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["purchase.recorded", "points.redeemed",
                                        "points.earned"]
    assert events[1].data["points"] == 50
    seq = await last_seq(database)
    purchase_id = spent.json()["purchase_id"]
    returned = await client.post(f"/v1/pos/purchases/{purchase_id}/returns",
                                 json={"amount": 2_000}, headers={**till, **key()})
    assert returned.status_code == 201, returned.text
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["purchase.returned", "points.reversed",
                                        "points.reversed"]
    assert events[0].data["amount"] == 2_000
    earned_points = spent.json()["points_earned"]
    assert earned_points > 0
    assert events[0].data["points_reversed"] == earned_points
    assert events[0].data["points_restored"] == 50
    # Earned points taken back are negative, redeemed points given back positive.
    assert sorted(e.data["points"] for e in events[1:]) == [-earned_points, 50]


async def test_a_staff_adjustment_writes_points_adjusted(
        client: Client, actors: Actors, database: str) -> None:
    member = await actors.member()
    admin = bearer(await actors.staff("admin"))
    seq = await last_seq(database)
    response = await client.post(f"/v1/members/{member.member_id}/adjustments",
                                 json={"points": 30, "reason": "goodwill"},
                                 headers={**admin, **key()})
    assert response.status_code == 201, response.text
    [event] = await outbox_since(database, seq)
    assert event.type == "points.adjusted"
    assert (event.data["points"], event.data["reason"]) == (30, "goodwill")
    assert event.data["entry_id"] == response.json()["entry_id"]


async def test_coupons_issued_redeemed_and_reinstated_write_their_events(
        client: Client, actors: Actors, database: str, till: dict[str, str]) -> None:
    member = await actors.member()
    marketer = bearer(await actors.staff("marketer"))
    template = await client.post("/v1/coupon-templates", headers=marketer, json={
        "name": "Ten off", "discount": {"type": "fixed_amount", "amount": 10}})
    assert template.status_code == 201, template.text
    template_id = template.json()["template_id"]
    seq = await last_seq(database)
    issued = await client.post(f"/v1/coupon-templates/{template_id}/issue",
                               json={"members": [member.member_id]},
                               headers={**marketer, **key()})
    assert issued.status_code == 201, issued.text
    [event] = await outbox_since(database, seq)
    assert event.type == "coupon.issued"
    assert (event.data["template_id"], event.data["source"]) == (template_id, "staff")
    coupon_id = event.data["coupon_id"]

    seq = await last_seq(database)
    bought = await client.post("/v1/pos/purchases", headers={**till, **key()},
                               json=purchase_body(member.member_id, 990, lines=[
                                   {"sku": "S", "unit_price": 1_000}],
                                   coupons=[{"coupon_id": coupon_id}]))
    assert bought.status_code == 201, bought.text
    events = await outbox_since(database, seq)
    [redeemed] = of_type(events, "coupon.redeemed")
    assert (redeemed.data["coupon_id"], redeemed.data["discount"]) == (coupon_id, 10)
    assert redeemed.data["purchase_id"] == bought.json()["purchase_id"]

    seq = await last_seq(database)
    returned = await client.post(
        f"/v1/pos/purchases/{bought.json()['purchase_id']}/returns", json={"amount": 990},
        headers={**till, **key()})
    assert returned.status_code == 201, returned.text
    [reinstated] = of_type(await outbox_since(database, seq), "coupon.reinstated")
    assert reinstated.data["coupon_id"] == coupon_id
    assert reinstated.data["redemption_id"] == redeemed.data["redemption_id"]


async def test_a_campaign_launch_writes_campaign_launched_and_its_coupons(
        client: Client, actors: Actors, database: str) -> None:
    members = [await actors.member() for _ in range(3)]
    marketer = bearer(await actors.staff("marketer"))
    template = await client.post("/v1/coupon-templates", headers=marketer, json={
        "name": "Welcome", "discount": {"type": "fixed_amount", "amount": 10}})
    campaign = await client.post("/v1/campaigns", headers=marketer, json={
        "name": "Welcome", "members": [m.member_id for m in members],
        "action": {"type": "issue_coupon", "template_id": template.json()["template_id"]}})
    assert campaign.status_code == 201, campaign.text
    campaign_id = campaign.json()["campaign_id"]
    seq = await last_seq(database)
    launch = f"/v1/campaigns/{campaign_id}/launch"
    launched = await client.post(launch, headers={**marketer, **key()})
    assert launched.status_code == 200, launched.text
    again = await client.post(launch, headers={**marketer, **key()})
    assert again.status_code == 200, again.text
    events = await outbox_since(database, seq)
    counts = Counter(e.type for e in events)
    assert counts == {"coupon.issued": 3, "campaign.launched": 1}
    [event] = of_type(events, "campaign.launched")
    assert event.member_id is None
    assert (event.data["campaign_id"], event.data["treated"]) == (campaign_id, 3)
    assert {e.member_id for e in of_type(events, "coupon.issued")} == {
        m.member_uuid for m in members}


async def test_a_reservation_and_a_check_in_write_event_rsvp_and_event_checked_in(
        client: Client, actors: Actors, database: str, till: dict[str, str]) -> None:
    member = await actors.member()
    marketer = bearer(await actors.staff("marketer"))
    starts = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    event = await client.post("/v1/events", headers=marketer, json={
        "name": "Tasting", "place": "2F", "capacity": 10, "points": 5,
        "invitation_only": False, "starts_at": starts.isoformat(),
        "ends_at": (starts + dt.timedelta(hours=3)).isoformat()})
    assert event.status_code == 201, event.text
    event_id = event.json()["event_id"]
    seq = await last_seq(database)
    reserved = await client.post(f"/v1/me/events/{event_id}/rsvp", headers=member.headers)
    assert reserved.status_code == 201, reserved.text
    again = await client.post(f"/v1/me/events/{event_id}/rsvp", headers=member.headers)
    assert again.status_code in (200, 201), again.text
    checked = await client.post(f"/v1/pos/events/{event_id}/checkins",
                                json={"member": {"id": member.member_id}},
                                headers={**till, **key()})
    assert checked.status_code == 201, checked.text
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["event.rsvp", "event.checked_in", "points.earned"]
    assert events[0].data["event_id"] == event_id
    assert events[1].data["points_earned"] == 5
    assert events[2].data["source"] == "action"


async def test_a_tier_reached_at_the_till_and_lost_at_evaluation_writes_tier_changed(
        client: Client, actors: Actors, database: str, till: dict[str, str]) -> None:
    marketer = bearer(await actors.staff("marketer"))
    template = await client.post("/v1/coupon-templates", headers=marketer, json={
        "name": "Silver welcome", "discount": {"type": "fixed_amount", "amount": 10}})
    template_id = template.json()["template_id"]
    tiers = await client.put("/v1/tiers", headers=marketer, json={"levels": [
        {"code": "SILVER", "name": "Silver", "threshold": 10_000, "multiplier_percent": 150,
         "coupon_template_id": template_id}]})
    assert tiers.status_code == 200, tiers.text
    member = await actors.member()
    bought_at = dt.datetime.now(dt.UTC)
    seq = await last_seq(database)
    bought = await client.post("/v1/pos/purchases", headers={**till, **key()},
                               json=purchase_body(member.member_id, 12_000,
                                                  occurred_at=bought_at))
    assert bought.json()["tier_reached"] == "SILVER", bought.text
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["purchase.recorded", "points.earned", "tier.changed",
                                        "coupon.issued"]
    changed, issued = events[2:]
    assert (changed.data["from_tier"], changed.data["to_tier"]) == (None, "SILVER")
    assert changed.data["coupon_id"] == issued.data["coupon_id"]
    assert (issued.data["source"], issued.data["template_id"]) == ("tier", template_id)

    # Two years on, the rolling window holds nothing: down to no tier, set-based.
    seq = await last_seq(database)
    conn = await asyncpg.connect(database)
    try:
        await init_connection(conn)
        result = await evaluate_tiers(conn, rulebook=RuleBook(),
                                      now=bought_at + dt.timedelta(days=730), tz=TOKYO)
    finally:
        await conn.close()
    assert result["changed"] == 1
    [down] = await outbox_since(database, seq)
    assert down.type == "tier.changed"
    assert (down.member_id, down.data["from_tier"], down.data["to_tier"],
            down.data["reason"]) == (member.member_uuid, "SILVER", None,
                                     "period-end evaluation")


# -- set-based jobs ---------------------------------------------------------------------------


async def test_a_bulk_grant_writes_one_points_earned_per_member(
        client: Client, actors: Actors, database: str) -> None:
    members = [await actors.member() for _ in range(3)]
    marketer = bearer(await actors.staff("marketer"))
    seq = await last_seq(database)
    granted = await client.post("/v1/points/grants", headers={**marketer, **key()}, json={
        "points": 7, "reason": "sorry for the wait", "members": [m.member_id for m in members]})
    assert granted.status_code == 201, granted.text
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["points.earned"] * 3
    assert sorted(str(e.member_id) for e in events) == sorted(m.member_id for m in members)
    assert {(e.data["points"], e.data["reason"]) for e in events} == {
        (7, "sorry for the wait")}
    assert all(e.data["balance"] == {"available": 7, "pending": 0} for e in events)


async def test_expiry_writes_one_points_expired_per_member(database: str) -> None:
    members = await make_members(database, 3)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    await _give_lots(database, members, [(10, past), (5, past)])
    seq = await last_seq(database)
    conn = await asyncpg.connect(database)
    try:
        await init_connection(conn)
        totals = await expire_points(conn, now=dt.datetime.now(dt.UTC), batch_size=2)
        again = await expire_points(conn, now=dt.datetime.now(dt.UTC))
    finally:
        await conn.close()
    assert totals["members"] == 3
    assert again["members"] == 0
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["points.expired"] * 3
    assert sorted(str(e.member_id) for e in events) == sorted(map(str, members))
    assert all(e.data["points"] == 15 for e in events)
    assert all(e.data["balance"] == {"available": 0, "pending": 0} for e in events)


async def test_dormancy_writes_one_status_change_per_member_and_reactivation_its_own(
        database: str) -> None:
    members = await make_members(database, 5)
    now = dt.datetime(2026, 8, 1, 3, tzinfo=TOKYO)
    conn = await asyncpg.connect(database)
    try:
        await init_connection(conn)
        await conn.execute("update members set last_activity_at = $2"
                           " where member_id = any($1::uuid[])", members[:4],
                           now - dt.timedelta(days=400))
        seq = await conn.fetchval("select coalesce(max(seq), 0) from outbox")
        flagged = await flag_dormant(conn, now=now, tz=TOKYO, days=180, batch_size=2)
        # A dormant member's activity makes them active again, through the trigger.
        await conn.execute("update members set last_activity_at = $2 where member_id = $1",
                           members[0], now + dt.timedelta(hours=1))
    finally:
        await conn.close()
    assert flagged["flagged"] == 4
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["member.status_changed"] * 5
    dormancies, [back] = events[:4], events[4:]
    assert {e.member_id for e in dormancies} == set(members[:4])
    assert {(e.data["to_status"], e.data["reason"]) for e in dormancies} == {
        ("dormant", "inactivity")}
    assert (back.member_id, back.data["from_status"], back.data["to_status"],
            back.data["reason"], back.data["campaign_id"]) == (
        members[0], "dormant", "active", "activity", None)


async def test_expiring_soon_is_written_once_per_member_and_expiry_day(database: str) -> None:
    members = await make_members(database, 3)
    now = dt.datetime(2026, 12, 1, 0, 10, tzinfo=TOKYO)
    day = dt.timedelta(days=1)
    # Member 0: two lots expiring on 5 December (one reminder of both), one on 6 December
    # (another); member 1: a lot expiring after the window (none yet); member 2: nothing.
    await _give_lots(database, members[:1], [(10, now + 4 * day),
                                            (5, now + 4 * day + dt.timedelta(hours=1)),
                                            (3, now + 5 * day)])
    await _give_lots(database, members[1:2], [(8, now + 20 * day)])
    seq = await last_seq(database)
    conn = await asyncpg.connect(database)
    try:
        await init_connection(conn)
        runs = [await remind_expiring_points(conn, now=now + n * dt.timedelta(hours=1),
                                             tz=TOKYO, days_ahead=7) for n in range(3)]
    finally:
        await conn.close()
    assert [r["reminded"] for r in runs] == [2, 0, 0]
    events = await outbox_since(database, seq)
    assert [e.type for e in events] == ["points.expiring_soon"] * 2
    assert {e.member_id for e in events} == {members[0]}
    assert sorted((e.data["expires_on"], e.data["points"]) for e in events) == [
        ("2026-12-05", 15), ("2026-12-06", 3)]


async def test_birthday_rewards_write_points_earned_and_coupon_issued_per_member(
        fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await init_connection(conn)
        await ensure_default_rules(conn)
        born = [await insert_member(conn, f"Birthday {n}", birth_date=dt.date(1990, 3, 10),
                                    joined_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
                for n in range(2)]
        await insert_member(conn, "Not today", birth_date=dt.date(1990, 6, 1))
        template = await create_template(conn, CouponTemplateCreate(
            name="Happy birthday", discount=FixedAmount(amount=500)), staff_id=None)
        now = dt.datetime(2026, 3, 10, 0, 30, tzinfo=TOKYO)
        for _ in range(2):
            await give_birthday_rewards(conn, now=now, tz=TOKYO, points=100,
                                        coupon_template_id=template.template_id,
                                        rulebook=RuleBook(), programme=PROGRAMME, batch_size=1)
    finally:
        await conn.close()
    events = await outbox_since(fresh_database)
    assert Counter((e.type, e.member_id) for e in events) == {
        **{("points.earned", m): 1 for m in born}, **{("coupon.issued", m): 1 for m in born}}
    earned = of_type(events, "points.earned")
    assert {(e.data["points"], e.data["source"], e.data["reason"]) for e in earned} == {
        (100, "birthday", "birthday reward 2026")}
    assert {e.data["source"] for e in of_type(events, "coupon.issued")} == {"birthday"}


async def _give_lots(database: str, members: list[UUID],
                     lots: list[tuple[int, dt.datetime]]) -> None:
    """Released lots of ``points`` expiring at the moments given, for each member, with their
    entries and balances, written directly."""
    conn = await asyncpg.connect(database)
    try:
        async with conn.transaction():
            for member in members:
                for points, expires in lots:
                    entry = await conn.fetchval(
                        """
                        insert into point_entries (member_id, entry_id, kind, amount, reason,
                                                   source, created_at)
                        values ($1, uuid_v7(), 'adjust', $2, 'test lot', 'staff', now())
                        returning entry_id
                        """, member, points)
                    await conn.execute(
                        """
                        insert into point_lots (member_id, lot_id, entry_id, points, remaining,
                                                earned_at, available_at, released_at,
                                                expires_at)
                        values ($1, uuid_v7(), $2, $3, $3, $4, $4, $4, $5)
                        """, member, entry, points, expires - dt.timedelta(days=30), expires)
                await conn.execute(
                    "update point_balances set available = available + $2,"
                    " lifetime_earned = lifetime_earned + $2 where member_id = $1",
                    member, sum(points for points, _ in lots))
    finally:
        await conn.close()


async def test_messaging_events_say_on_which_channels_the_member_may_be_messaged(
        fresh_database: str) -> None:
    """points.expiring_soon and coupon.issued go out for every member, each with the member's
    marketing consent per channel as it stands in the transaction that writes it: never asked
    is no, as a campaign's ``messaged`` reads it (docs/privacy.md, "Consent")."""
    members = await make_members(fresh_database, 3)
    now = dt.datetime(2026, 12, 1, 0, 10, tzinfo=TOKYO)
    await _give_lots(fresh_database, members, [(10, now + dt.timedelta(days=2))])
    conn = await asyncpg.connect(fresh_database)
    try:
        await init_connection(conn)
        # Member 0: e-mail yes, push withdrawn after being given; member 1: push only;
        # member 2: never asked.
        answers: list[tuple[UUID, dict[ConsentPurpose, bool]]] = [
            (members[0], {"marketing_email": True, "push": True}), (members[0], {"push": False}),
            (members[1], {"push": True})]
        for member, choices in answers:
            await record_consents(conn, member, [
                ConsentChoice(purpose=purpose, granted=granted, text_version="v1")
                for purpose, granted in choices.items()], actor_kind="member", actor_id=member)
        seq = await last_seq(fresh_database)
        assert (await remind_expiring_points(conn, now=now, tz=TOKYO, days_ahead=7))[
            "reminded"] == 3
        template = await create_template(conn, CouponTemplateCreate(
            name="Thank you", discount=FixedAmount(amount=300)), staff_id=None)
        await issue_to_members(conn, template_id=template.template_id,
                               member_filter=MemberFilter.members(members), issue_id=uuid7(),
                               source="staff", campaign_id=None, now=now, tz=TOKYO.key)
    finally:
        await conn.close()
    events = await outbox_since(fresh_database, seq)
    expected = {members[0]: {"marketing_email": True, "push": False},
                members[1]: {"marketing_email": False, "push": True},
                members[2]: {"marketing_email": False, "push": False}}
    for type_ in ("points.expiring_soon", "coupon.issued"):
        assert {e.member_id: e.data["may_message"] for e in of_type(events, type_)} == expected
