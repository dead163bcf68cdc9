"""Campaigns: a random control group fixed at launch, the action for the treated group only,
launching exactly once however often it is asked, and results that compare the two groups."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from loyalty.core.db import init_connection
from loyalty.core.programme import Programme
from loyalty.points.rules import RuleBook
from loyalty.promotions.campaigns import launch_due_campaigns
from tests.conftest import AppWith, held
from tests.factories import Actors, SignedUp, Staffed, bearer, make_members, purchase_body
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
_n = itertools.count()
TOKYO = Programme(currency="JPY", timezone=__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))


def launch_key() -> dict[str, str]:
    return {"Idempotency-Key": f"launch-{next(_n)}"}


def moment(**delta: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(**delta)


class Office(Staffed):
    async def segment(self, definition: dict[str, Any]) -> str:
        response = await self.client.post("/v1/segments", headers=self.marketer, json={
            "name": f"Segment {next(_n)}", "definition": definition})
        assert response.status_code == 201, response.text
        return str(response.json()["segment_id"])

    async def template(self, **fields: Any) -> str:
        response = await self.client.post("/v1/coupon-templates", headers=self.marketer, json={
            "name": "Come back", "discount": {"type": "fixed_amount", "amount": 300}, **fields})
        assert response.status_code == 201, response.text
        return str(response.json()["template_id"])

    async def campaign(self, **fields: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/campaigns", headers=self.marketer, json={
            "name": f"Campaign {next(_n)}", **fields})
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def launch(self, campaign: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(f"/v1/campaigns/{campaign['campaign_id']}/launch",
                                          headers={**self.marketer, **launch_key()})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def results(self, campaign: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.get(f"/v1/campaigns/{campaign['campaign_id']}/results",
                                         headers=self.marketer)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def buy(self, member: str, total: int, when: dt.datetime | None = None
                  ) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/pos/purchases", json=purchase_body(member, total, occurred_at=when, prefix="CP"),
            headers={**self.till, "Idempotency-Key": f"cp-{next(_n)}"})
        assert response.status_code == 201, response.text
        return dict(response.json())


async def _office(client: Client, actors: Actors, database_url: str) -> Office:
    till, _ = await actors.terminal("CAMPAIGN-1")
    return Office(client, actors, database_url, bearer(await actors.staff("marketer")),
                  bearer(till))


@pytest.fixture
async def office(client: Client, actors: Actors, settings: Any) -> Office:
    return await _office(client, actors, settings.database_url)


@pytest.fixture
async def busy_office(fresh_database: str, app_with: AppWith) -> AsyncIterator[Office]:
    """An office whose app has a pool big enough for many requests at once."""
    async for client, actors in held(app_with(db_pool_max=20)):
        yield await _office(client, actors, fresh_database)


# -- the acceptance case ---------------------------------------------------------------------


async def test_hundred_thousand_members_ten_percent_holdout_issue_to_the_treated_only(
    office: Office,
) -> None:
    members = await make_members(office.database_url, 100_000)
    # Noise the segment must leave out.
    await make_members(office.database_url, 500, status="suspended")
    segment = await office.segment({"type": "status", "statuses": ["active"]})
    template = await office.template()
    campaign = await office.campaign(segment_id=segment, holdout_percent=10,
                                     action={"type": "issue_coupon", "template_id": template})
    launched = await office.launch(campaign)
    assert launched["status"] == "launched"
    assert (launched["eligible"], launched["treated"], launched["control"]) == (
        100_000, 90_000, 10_000)
    assert launched["actioned"] == 90_000

    groups = {row["arm"]: row["n"] for row in await office.fetch(
        "select arm, count(*) as n from campaign_members group by arm")}
    assert groups == {"treated": 90_000, "control": 10_000}
    # Exactly the treated group holds the coupon; nobody in control does.
    assert await office.value(
        """
        select count(*) from member_coupons mc
          join campaign_members cm on cm.member_id = mc.member_id
         where cm.arm = 'treated' and mc.campaign_id = cm.campaign_id
        """) == 90_000
    assert await office.value("select count(*) from member_coupons") == 90_000
    assert await office.value(
        """
        select count(*) from member_coupons mc join campaign_members cm using (member_id)
         where cm.arm = 'control'
        """) == 0
    assert await office.value(
        "select count(distinct member_id) from campaign_members") == 100_000
    assert set(members) >= {r["member_id"] for r in await office.fetch(
        "select member_id from campaign_members")}

    # A few purchases after launch: three treated members spend, one control member does.
    treated = [r["member_id"] for r in await office.fetch(
        "select member_id from campaign_members where arm = 'treated' order by member_id"
        " limit 3")]
    (control,) = [r["member_id"] for r in await office.fetch(
        "select member_id from campaign_members where arm = 'control' order by member_id"
        " limit 1")]
    for member, total in zip(treated, (1_000, 2_000, 3_000), strict=True):
        await office.buy(str(member), total)
    await office.buy(str(control), 900)
    results = await office.results(campaign)
    assert (results["treated"]["members"], results["control"]["members"]) == (90_000, 10_000)
    assert (results["treated"]["purchasers"], results["control"]["purchasers"]) == (3, 1)
    assert (results["treated"]["revenue"], results["control"]["revenue"]) == (6_000, 900)
    assert results["treated"]["revenue_per_member"] == pytest.approx(6_000 / 90_000)
    assert results["revenue_per_member_uplift"]["estimate"] == pytest.approx(
        6_000 / 90_000 - 900 / 10_000)

    # Launching twice changes nothing.
    again = await office.launch(campaign)
    assert again == launched
    assert await office.value("select count(*) from member_coupons") == 90_000
    assert await office.value("select count(*) from campaign_members") == 100_000


# -- results, by hand ------------------------------------------------------------------------


async def test_results_compare_the_groups_with_a_confidence_interval(office: Office) -> None:
    members = [await office.actors.member() for _ in range(8)]
    campaign = await office.campaign(
        members=[m.member_id for m in members], holdout_percent=50,
        action={"type": "bonus_points", "points": 25})
    launched = await office.launch(campaign)
    assert (launched["treated"], launched["control"]) == (4, 4)
    arms = {str(r["member_id"]): r["arm"] for r in await office.fetch(
        "select member_id, arm from campaign_members")}
    treated = sorted(m for m, arm in arms.items() if arm == "treated")
    control = sorted(m for m, arm in arms.items() if arm == "control")
    # Treated: two of four buy, for 1,000 and 3,000 (revenue per member 0, 0, 1,000, 3,000).
    # Control: one of four buys, for 1,000 (0, 0, 0, 1,000).
    await office.buy(treated[0], 1_000)
    await office.buy(treated[1], 3_000)
    await office.buy(control[0], 1_000)
    results = await office.results(campaign)
    t, c = results["treated"], results["control"]
    assert (t["members"], t["purchasers"], t["revenue"], t["points_granted"]) == (4, 2, 4_000, 100)
    assert (c["members"], c["purchasers"], c["revenue"], c["points_granted"]) == (4, 1, 1_000, 0)
    assert (t["purchase_rate"], c["purchase_rate"]) == (0.5, 0.25)
    assert (t["revenue_per_member"], c["revenue_per_member"]) == (1_000, 250)
    # Revenue per member: means 1,000 and 250; sample variances 2,000,000 and 250,000;
    # standard error sqrt(2,000,000/4 + 250,000/4) = 750; margin 1.96 × 750.
    uplift = results["revenue_per_member_uplift"]
    assert uplift["estimate"] == 750
    assert uplift["low"] == pytest.approx(750 - 1.959964 * 750, abs=0.01)
    assert uplift["high"] == pytest.approx(750 + 1.959964 * 750, abs=0.01)
    # Purchase rate: 0.5 - 0.25; variances p(1-p)·n/(n-1): 1/3 and 0.25.
    rate = results["purchase_rate_uplift"]
    margin = 1.959964 * math.sqrt((1 / 3) / 4 + 0.25 / 4)
    assert rate["estimate"] == 0.25
    assert rate["low"] == pytest.approx(0.25 - margin, abs=1e-4)
    assert rate["high"] == pytest.approx(0.25 + margin, abs=1e-4)


async def test_results_of_a_draft_are_refused(office: Office) -> None:
    member = await office.actors.member()
    campaign = await office.campaign(members=[member.member_id],
                                     action={"type": "bonus_points", "points": 5})
    response = await office.client.get(f"/v1/campaigns/{campaign['campaign_id']}/results",
                                       headers=office.marketer)
    assert response.status_code == 409
    assert response.json()["type"].endswith(":campaign_not_launched")


# -- each action -----------------------------------------------------------------------------


async def test_bonus_points_go_to_the_treated_once_even_when_launched_again(
    office: Office,
) -> None:
    members = [await office.actors.member() for _ in range(10)]
    campaign = await office.campaign(members=[m.member_id for m in members],
                                     holdout_percent=20,
                                     action={"type": "bonus_points", "points": 100,
                                             "reason": "Autumn thanks"})
    launched = await office.launch(campaign)
    assert (launched["treated"], launched["control"], launched["actioned"]) == (8, 2, 8)
    await office.launch(campaign)
    rows = await ledger_rows(office.database_url)
    assert sorted(e["amount"] for e in rows.entries) == [100] * 8
    assert {e["reason"] for e in rows.entries} == {"Autumn thanks"}
    treated = {r["member_id"] for r in await office.fetch(
        "select member_id from campaign_members where arm = 'treated'")}
    assert {e["member_id"] for e in rows.entries} == treated
    check_invariants(rows)


async def test_a_multiplier_window_doubles_points_for_the_treated_only(office: Office) -> None:
    members = [await office.actors.member() for _ in range(4)]
    campaign = await office.campaign(
        members=[m.member_id for m in members], holdout_percent=50,
        ends_at=moment(days=7).isoformat(), action={"type": "points_multiplier", "percent": 200})
    await office.launch(campaign)
    arms = {str(r["member_id"]): r["arm"] for r in await office.fetch(
        "select member_id, arm from campaign_members")}
    for member in members:
        earned = await office.buy(member.member_id, 1_000)
        expected = 20 if arms[member.member_id] == "treated" else 10
        assert earned["points_earned"] == expected, arms[member.member_id]
        if expected == 20:
            assert earned["trace"]["steps"][-1]["rule"] == "campaign"
    # The quote agrees, and a purchase from before the campaign started earns plain points.
    treated = next(m for m, arm in arms.items() if arm == "treated")

    async def quoted(when: dt.datetime) -> int:
        response = await office.client.post("/v1/pos/quotes", headers=office.till, json={
            "member": {"id": treated}, "receipt_id": "Q", "total": 1_000, "currency": "JPY",
            "occurred_at": when.isoformat(), "lines": [{"sku": "X", "unit_price": 1_000}]})
        assert response.status_code == 200, response.text
        return int(response.json()["points_earned"])

    assert await quoted(moment()) == 20
    assert await quoted(moment(hours=-1)) == 10


async def test_event_invitations_reach_the_treated_who_may_then_reserve(office: Office) -> None:
    members = [await office.actors.member() for _ in range(4)]
    event = await office.client.post("/v1/events", headers=office.marketer, json={
        "name": "Tasting", "place": "2F", "capacity": 10, "points": 30,
        "starts_at": moment(days=2).isoformat(), "ends_at": moment(days=2, hours=2).isoformat()})
    assert event.status_code == 201, event.text
    event_id = event.json()["event_id"]
    campaign = await office.campaign(members=[m.member_id for m in members], holdout_percent=50,
                                     action={"type": "event_invitation", "event_id": event_id})
    launched = await office.launch(campaign)
    assert launched["actioned"] == 2
    arms = {str(r["member_id"]): r["arm"] for r in await office.fetch(
        "select member_id, arm from campaign_members")}
    for member in members:
        rsvp = await office.client.post(f"/v1/me/events/{event_id}/rsvp",
                                        headers=member.headers)
        assert rsvp.status_code == (201 if arms[member.member_id] == "treated" else 403)


# -- audience, budget, consent, schedule -----------------------------------------------------


async def test_budget_cap_takes_a_random_sample_keeping_the_holdout_share(
    office: Office,
) -> None:
    await make_members(office.database_url, 1_000)
    segment = await office.segment({"type": "status", "statuses": ["active"]})
    campaign = await office.campaign(segment_id=segment, holdout_percent=10, max_members=90,
                                     action={"type": "issue_coupon",
                                             "template_id": await office.template()})
    launched = await office.launch(campaign)
    assert (launched["eligible"], launched["treated"], launched["control"]) == (1_000, 90, 10)
    assert await office.value("select count(*) from member_coupons") == 90


async def test_only_members_who_consented_are_messaged(office: Office) -> None:
    agreed = await office.actors.member(consents=[{
        "purpose": "marketing_email", "granted": True, "text_version": "v1"}])
    declined = await office.actors.member(consents=[{
        "purpose": "marketing_email", "granted": False, "text_version": "v1"}])
    never_asked = await office.actors.member()
    withdrew = await office.actors.member(consents=[{
        "purpose": "marketing_email", "granted": True, "text_version": "v1"}])
    changed = await office.client.put("/v1/me/consents", headers=withdrew.headers, json={
        "consents": [{"purpose": "marketing_email", "granted": False, "text_version": "v2"}]})
    assert changed.status_code == 200, changed.text
    everyone = [agreed, declined, never_asked, withdrew]
    campaign = await office.campaign(members=[m.member_id for m in everyone],
                                     channel="marketing_email",
                                     action={"type": "issue_coupon",
                                             "template_id": await office.template()})
    launched = await office.launch(campaign)
    assert (launched["treated"], launched["messaged"], launched["actioned"]) == (4, 1, 4)
    messaged = [str(r["member_id"]) for r in await office.fetch(
        "select member_id from campaign_members where messaged")]
    assert messaged == [agreed.member_id]


async def test_a_scheduled_campaign_starts_when_due_with_the_segment_as_it_is_then(
    office: Office,
) -> None:
    early = await office.actors.member()
    segment = await office.segment({"type": "status", "statuses": ["active"]})
    starts = moment(hours=2)
    campaign = await office.campaign(segment_id=segment, starts_at=starts.isoformat(),
                                     action={"type": "bonus_points", "points": 10})
    scheduled = await office.launch(campaign)
    assert scheduled["status"] == "scheduled"
    assert await office.value("select count(*) from campaign_members") == 0
    late = await office.actors.member()
    conn = await asyncpg.connect(office.database_url)
    await init_connection(conn)
    try:
        assert await launch_due_campaigns(conn, rulebook=RuleBook(), programme=TOKYO,
                                          now=starts - dt.timedelta(minutes=1)) == 0
        assert await launch_due_campaigns(conn, rulebook=RuleBook(), programme=TOKYO,
                                          now=starts) == 1
        assert await launch_due_campaigns(conn, rulebook=RuleBook(), programme=TOKYO,
                                          now=starts + dt.timedelta(hours=1)) == 0
    finally:
        await conn.close()
    got = await office.client.get(f"/v1/campaigns/{campaign['campaign_id']}",
                                  headers=office.marketer)
    assert (got.json()["status"], got.json()["treated"]) == ("launched", 2)
    granted = {str(r["member_id"]) for r in await office.fetch(
        "select member_id from point_entries where grant_id is not null")}
    assert granted == {early.member_id, late.member_id}


async def test_ten_launches_at_once_assign_and_act_once(busy_office: Office) -> None:
    members = await make_members(busy_office.database_url, 2_000)
    campaign = await busy_office.campaign(
        members=[str(m) for m in members], holdout_percent=25,
        action={"type": "bonus_points", "points": 7})
    responses = await asyncio.gather(*(
        busy_office.client.post(f"/v1/campaigns/{campaign['campaign_id']}/launch",
                                headers={**busy_office.marketer, **launch_key()})
        for _ in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert await busy_office.value("select count(*) from campaign_members") == 2_000
    assert await busy_office.value(
        "select count(*) from campaign_members where arm = 'control'") == 500
    rows = await ledger_rows(busy_office.database_url)
    assert len(rows.entries) == 1_500
    assert {e["amount"] for e in rows.entries} == {7}
    check_invariants(rows)
    final = await busy_office.client.get(f"/v1/campaigns/{campaign['campaign_id']}",
                                         headers=busy_office.marketer)
    assert (final.json()["status"], final.json()["actioned"]) == ("launched", 1_500)


@pytest.mark.parametrize(("fields", "status"), [
    ({"members": [], "action": {"type": "bonus_points", "points": 5}}, 400),
    ({"action": {"type": "bonus_points", "points": 5}}, 400),
    ({"segment_id": "00000000-0000-7000-8000-000000000000",
      "action": {"type": "bonus_points", "points": 5}}, 422),
    ({"members": ["00000000-0000-7000-8000-000000000000"],
      "action": {"type": "issue_coupon", "template_id": "00000000-0000-7000-8000-000000000000"}},
     422),
    ({"members": ["00000000-0000-7000-8000-000000000000"],
      "action": {"type": "points_multiplier", "percent": 150}}, 400),
    ({"members": ["00000000-0000-7000-8000-000000000000"], "holdout_percent": 95,
      "action": {"type": "bonus_points", "points": 5}}, 400),
    ({"members": ["00000000-0000-7000-8000-000000000000"],
      "starts_at": "2030-01-02T00:00:00+09:00", "ends_at": "2030-01-01T00:00:00+09:00",
      "action": {"type": "bonus_points", "points": 5}}, 400),
])
async def test_bad_campaigns_are_refused_and_nothing_is_made(
    office: Office, fields: dict[str, Any], status: int,
) -> None:
    response = await office.client.post("/v1/campaigns", headers=office.marketer,
                                        json={"name": "Bad", **fields})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await office.value("select count(*) from campaigns") == 0


async def test_analysts_read_but_cannot_launch(office: Office) -> None:
    member: SignedUp = await office.actors.member()
    campaign = await office.campaign(members=[member.member_id],
                                     action={"type": "bonus_points", "points": 5})
    analyst = bearer(await office.actors.staff("analyst"))
    listed = await office.client.get("/v1/campaigns", headers=analyst)
    assert [c["campaign_id"] for c in listed.json()["items"]] == [campaign["campaign_id"]]
    refused = await office.client.post(f"/v1/campaigns/{campaign['campaign_id']}/launch",
                                       headers={**analyst, **launch_key()})
    assert refused.status_code == 403
    assert await office.value("select status from campaigns") == "draft"
    assert UUID(campaign["campaign_id"])
