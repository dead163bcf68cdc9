"""Earning rules as staff edit them: versioned, validated at the edge, simulated without writing,
through the API on real PostgreSQL."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from loyalty.core.settings import Settings
from schemas.rules import EarningRules
from tests.conftest import AppWith
from tests.factories import Actors, SignedUp, bearer, purchase_body, query

Client = httpx.AsyncClient
_keys = itertools.count()


def purchase(member: SignedUp, total: int) -> dict[str, Any]:
    return purchase_body(
        member.member_id, total, prefix="RULES",
        lines=[{"sku": "BREAD", "category": "bakery", "quantity": 1, "unit_price": total}])


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"rules-{next(_keys)}"}


@pytest.fixture
async def marketer(actors: Actors) -> dict[str, str]:
    return bearer(await actors.staff("marketer"))


async def versions(client: Client, headers: dict[str, str]) -> list[int]:
    response = await client.get("/v1/earning-rules/versions", headers=headers)
    assert response.status_code == 200, response.text
    return [v["version"] for v in response.json()]


async def test_a_fresh_install_runs_version_1_of_the_defaults(
    client: Client, marketer: dict[str, str]
) -> None:
    response = await client.get("/v1/earning-rules", headers=marketer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 1
    rules = body["rules"]
    assert rules["base"] == {"points": 1, "per_amount": 100}
    visit = rules["actions"]["site_visit"]
    assert (visit["points"], visit["per_day"]) == (1, 1)
    share = rules["actions"]["sns_share"]
    assert (share["points"], share["per_day"], share["per_target"]) == (5, 3, 1)
    assert share["requires_target"] is True
    assert rules["expiry"] == {"type": "rolling", "months": 12}
    assert rules["pending_days"] == 0
    assert await versions(client, marketer) == [1]


async def test_replacing_the_rules_makes_version_2_and_keeps_version_1(
    client: Client, marketer: dict[str, str]
) -> None:
    response = await client.put("/v1/earning-rules",
                                json={"base": {"points": 3, "per_amount": 200}},
                                headers=marketer)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    assert response.json()["rules"]["base"] == {"points": 3, "per_amount": 200}
    current = (await client.get("/v1/earning-rules", headers=marketer)).json()
    assert current["version"] == 2
    assert current["rules"]["base"] == {"points": 3, "per_amount": 200}
    history = (await client.get("/v1/earning-rules/versions", headers=marketer)).json()
    assert [v["version"] for v in history] == [2, 1]
    assert history[1]["rules"]["base"] == {"points": 1, "per_amount": 100}


async def test_a_purchase_after_the_change_earns_by_version_2_and_old_entries_keep_1(
    client: Client, actors: Actors, marketer: dict[str, str]
) -> None:
    member = await actors.member()
    api_key, _ = await actors.terminal("RULES-01")
    till = bearer(api_key)
    before = await client.post("/v1/pos/purchases", json=purchase(member, 10_000),
                               headers={**till, **key()})
    assert before.json()["rule_version"] == 1
    assert before.json()["points_earned"] == 100
    replaced = await client.put("/v1/earning-rules",
                                json={"base": {"points": 2, "per_amount": 100}},
                                headers=marketer)
    assert replaced.json()["version"] == 2

    after = await client.post("/v1/pos/purchases", json=purchase(member, 10_000),
                              headers={**till, **key()})
    assert after.status_code == 201, after.text
    assert after.json()["rule_version"] == 2
    assert after.json()["trace"]["rule_version"] == 2
    assert after.json()["points_earned"] == 200

    history = (await client.get("/v1/me/points/history", headers=member.headers)).json()
    by_purchase = {e["purchase_id"]: e["entry_id"] for e in history["items"]}
    for recorded, version in ((before, 1), (after, 2)):
        entry_id = by_purchase[recorded.json()["purchase_id"]]
        detail = (await client.get(f"/v1/me/points/entries/{entry_id}",
                                   headers=member.headers)).json()
        assert detail["rule_version"] == version
        assert detail["trace"]["rule_version"] == version


@pytest.mark.parametrize(
    ("name", "rules"),
    [
        ("negative base points", {"base": {"points": -1, "per_amount": 100}}),
        ("negative action points", {"actions": {"site_visit": {"points": -5}}}),
        ("unknown condition type", {"multipliers": [
            {"name": "moon", "percent": 200, "when": [{"type": "full_moon"}]}]}),
        ("percent as a string", {"multipliers": [{"name": "double", "percent": "200"}]}),
        ("unknown field", {"base": {"points": 1, "per_amount": 100}, "bonus_rate": 3}),
        ("time window start == end", {"multipliers": [
            {"name": "happy hour", "percent": 150,
             "when": [{"type": "time_window", "start": "17:00:00", "end": "17:00:00"}]}]}),
    ],
)
async def test_invalid_rules_are_400_and_make_no_version(
    client: Client, marketer: dict[str, str], name: str, rules: dict[str, Any]
) -> None:
    response = await client.put("/v1/earning-rules", json=rules, headers=marketer)
    assert response.status_code == 400, (name, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await versions(client, marketer) == [1]


async def test_a_valid_time_window_is_accepted(client: Client,
                                               marketer: dict[str, str]) -> None:
    # The same shape as the refused one, with start and end apart: the 400 was for the times.
    response = await client.put("/v1/earning-rules", json={"multipliers": [
        {"name": "late night", "percent": 150,
         "when": [{"type": "time_window", "start": "22:00:00", "end": "02:00:00"}]}]},
        headers=marketer)
    assert response.status_code == 200, response.text
    assert await versions(client, marketer) == [2, 1]


async def test_simulating_an_action_at_its_cap_gives_0_points_and_the_reason(
    client: Client, marketer: dict[str, str]
) -> None:
    below = await client.post("/v1/earning-rules/simulate",
                              json={"action": {"type": "sns_share", "target": "https://x.test/a",
                                               "today": 2, "for_target": 0}},
                              headers=marketer)
    assert below.status_code == 200, below.text
    assert below.json()["points"] == 5
    for counts, limit in (({"today": 3, "for_target": 0}, "limit of 3 a day"),
                          ({"today": 0, "for_target": 1}, "limit of 1 per target")):
        capped = await client.post(
            "/v1/earning-rules/simulate",
            json={"action": {"type": "sns_share", "target": "https://x.test/a", **counts}},
            headers=marketer)
        assert capped.status_code == 200, capped.text
        body = capped.json()
        assert body["points"] == 0
        assert limit in body["reason"]
        assert body["trace"]["steps"][0]["points"] == 0
    visit = await client.post("/v1/earning-rules/simulate",
                              json={"action": {"type": "site_visit", "today": 1}},
                              headers=marketer)
    assert visit.json()["points"] == 0
    assert "site_visit" in visit.json()["reason"]


async def test_simulating_with_inline_rules_leaves_the_stored_rules_alone(
    client: Client, marketer: dict[str, str]
) -> None:
    inline = {"base": {"points": 5, "per_amount": 100}}
    simulated = await client.post("/v1/earning-rules/simulate",
                                  json={"purchase": {"total": 10_000, "lines": [
                                      {"sku": "X", "unit_price": 10_000}]},
                                        "rules": inline},
                                  headers=marketer)
    assert simulated.status_code == 200, simulated.text
    assert simulated.json()["points"] == 500
    stored = (await client.get("/v1/earning-rules", headers=marketer)).json()
    assert stored["version"] == 1
    assert stored["rules"]["base"] == {"points": 1, "per_amount": 100}
    assert await versions(client, marketer) == [1]
    current = await client.post("/v1/earning-rules/simulate",
                                json={"purchase": {"total": 10_000, "lines": [
                                    {"sku": "X", "unit_price": 10_000}]}},
                                headers=marketer)
    assert current.json()["points"] == 100
    assert current.json()["trace"]["rule_version"] == 1


async def test_an_analyst_cannot_replace_the_rules(client: Client, actors: Actors,
                                                   marketer: dict[str, str]) -> None:
    analyst = bearer(await actors.staff("analyst"))
    response = await client.put("/v1/earning-rules", json={"pending_days": 3},
                                headers=analyst)
    assert response.status_code == 403
    assert await versions(client, marketer) == [1]


# -- bounds, the programme's ceiling, confirmation ---------------------------------------------

# The rule set of the report: 1,000,000 points per 1, three ×1,000 multipliers multiplied.
REPORTED_RULES: dict[str, Any] = {
    "base": {"points": 1_000_000, "per_amount": 1},
    "stacking": "multiply",
    "multipliers": [{"name": f"x1000 {i}", "percent": 100_000} for i in range(3)],
}
# Its numbers brought within their bounds: 10,000 points per 1, three ×100 multiplied.
BOUNDED_BUT_TOO_MUCH: dict[str, Any] = {
    "base": {"points": 10_000, "per_amount": 1},
    "stacking": "multiply",
    "multipliers": [{"name": f"x100 {i}", "percent": 10_000} for i in range(3)],
}
# The most generous rules accepted: 1,000 points per 1, 10^13 points on the largest purchase.
MOST_GENEROUS: dict[str, Any] = {"base": {"points": 1_000, "per_amount": 1}}
DEFAULT_CEILING = 1_000_000


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    return str(response.json()["type"]).rsplit(":", 1)[-1]


async def test_the_reported_rule_set_is_refused_for_numbers_beyond_their_bounds(
    client: Client, marketer: dict[str, str]
) -> None:
    response = await client.put("/v1/earning-rules", json=REPORTED_RULES, headers=marketer)

    assert response.status_code == 400, response.text
    assert problem_code(response) == "validation_failed"
    assert await versions(client, marketer) == [1]


async def test_rules_a_purchase_could_earn_out_of_range_under_are_refused_with_422(
    client: Client, marketer: dict[str, str]
) -> None:
    response = await client.put("/v1/earning-rules", json=BOUNDED_BUT_TOO_MUCH,
                                headers=marketer)

    assert response.status_code == 422, response.text
    assert problem_code(response) == "points_out_of_range"
    detail = response.json()["detail"]
    assert "one purchase of 10000000000 could earn about 10^20 points" in detail
    assert "lower base.points or raise base.per_amount" in detail
    assert await versions(client, marketer) == [1]


async def test_simulating_200_stacked_multipliers_is_refused_with_422(
    client: Client, marketer: dict[str, str]
) -> None:
    stacked = {"base": {"points": 1, "per_amount": 1}, "stacking": "multiply",
               "multipliers": [{"name": f"x2 {i}", "percent": 200} for i in range(200)]}

    response = await client.post("/v1/earning-rules/simulate", headers=marketer, json={
        "purchase": {"total": 10_000, "lines": [{"sku": "X", "unit_price": 10_000}]},
        "rules": stacked})

    assert response.status_code == 422, response.text
    assert problem_code(response) == "points_out_of_range"
    assert 'stack them by "highest"' in response.json()["detail"]


async def test_the_largest_purchase_under_the_most_generous_rules_earns_the_ceiling(
    client: Client, actors: Actors, marketer: dict[str, str]
) -> None:
    # The worst case the ledger can be asked to hold: 10^13 points before the ceiling.
    saved = await client.put("/v1/earning-rules", json=MOST_GENEROUS, headers=marketer)
    assert saved.status_code == 200, saved.text
    member = await actors.member()
    till = bearer((await actors.terminal("RULES-MAX"))[0])

    largest = await client.post("/v1/pos/purchases", json=purchase(member, 10_000_000_000),
                                headers={**till, **key()})
    assert largest.status_code == 201, largest.text
    assert largest.json()["points_earned"] == DEFAULT_CEILING
    assert [(s["rule"], s["points"]) for s in largest.json()["trace"]["steps"]] == [
        ("base", 10**13), ("ceiling", DEFAULT_CEILING - 10**13)]

    # ... and the member goes on earning: nothing near bigint's limit was written.
    again = await client.post("/v1/pos/purchases", json=purchase(member, 9_000_000_000),
                              headers={**till, **key()})
    small = await client.post("/v1/pos/purchases", json=purchase(member, 10),
                              headers={**till, **key()})
    assert (again.status_code, small.status_code) == (201, 201), (again.text, small.text)
    assert small.json()["points_earned"] == 10_000
    assert small.json()["balance"]["available"] == 2 * DEFAULT_CEILING + 10_000


async def test_rules_saved_before_the_bounds_earn_up_to_the_ceiling_at_every_till(
    client: Client, actors: Actors, marketer: dict[str, str], settings: Settings
) -> None:
    # The report's rule set as the service stored it before: every purchase of 10,000 or more
    # was a 500 and the member's balance could end beyond what the ledger holds.
    database = settings.database_url or ""
    await query(database, "insert into earning_rule_versions (version, rules) values (1, $1)"
                " on conflict do nothing", EarningRules())
    await query(database, "insert into earning_rule_versions (version, rules) values (2, $1)",
                REPORTED_RULES)
    member = await actors.member()
    till = bearer((await actors.terminal("RULES-OLD"))[0])

    stored = await client.get("/v1/earning-rules", headers=marketer)
    assert stored.status_code == 200, stored.text
    assert stored.json()["rules"]["base"] == REPORTED_RULES["base"]
    for total in (10, 10_000, 9_000_000_000, 10):
        recorded = await client.post("/v1/pos/purchases", json=purchase(member, total),
                                     headers={**till, **key()})
        assert recorded.status_code == 201, (total, recorded.text)
        assert recorded.json()["points_earned"] == DEFAULT_CEILING
        assert recorded.json()["trace"]["steps"][-1]["rule"] == "ceiling"
    simulated = await client.post("/v1/earning-rules/simulate", headers=marketer, json={
        "purchase": {"total": 10_000, "lines": [{"sku": "X", "unit_price": 10_000}]}})
    assert simulated.status_code == 200, simulated.text
    assert simulated.json()["points"] == DEFAULT_CEILING
    history = await client.get("/v1/earning-rules/versions", headers=marketer)
    assert [v["version"] for v in history.json()] == [2, 1]
    # Replacing them is held to today's bounds.
    refused = await client.put("/v1/tiers", json={"levels": []}, headers=marketer)
    assert refused.status_code == 422, refused.text
    assert problem_code(refused) == "points_out_of_range"


async def test_an_action_earns_at_most_the_ceiling_per_action(
    client: Client, actors: Actors, marketer: dict[str, str]
) -> None:
    saved = await client.put("/v1/earning-rules", headers=marketer, json={
        "actions": {"review": {"points": 1_000_000, "per_target": 1, "requires_target": True}}})
    assert saved.status_code == 200, saved.text
    member = await actors.member()

    simulated = await client.post("/v1/earning-rules/simulate", headers=marketer,
                                  json={"action": {"type": "review", "target": "shop/1"}})
    recorded = await client.post("/v1/me/actions", headers=member.headers,
                                 json={"type": "review", "target": "shop/1"})

    assert (simulated.status_code, recorded.status_code) == (200, 200), recorded.text
    assert simulated.json()["points"] == recorded.json()["points"] == 10_000
    assert [s["rule"] for s in simulated.json()["trace"]["steps"]] == [
        "actions.review", "ceiling"]


async def recorded_purchase(client: Client, member: SignedUp, till: dict[str, str],
                            total: int) -> dict[str, Any]:
    response = await client.post("/v1/pos/purchases", json=purchase(member, total),
                                 headers={**till, **key()})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_rule_change_multiplying_recent_points_beyond_10x_needs_a_confirmation(
    client: Client, actors: Actors, marketer: dict[str, str]
) -> None:
    member = await actors.member()
    till = bearer((await actors.terminal("RULES-CONFIRM"))[0])
    for total in (10_000, 2_345):
        await recorded_purchase(client, member, till, total)  # 100 + 23 points

    per_yen = {"base": {"points": 1, "per_amount": 1}}
    refused = await client.put("/v1/earning-rules", json=per_yen, headers=marketer)

    assert refused.status_code == 422, refused.text
    assert problem_code(refused) == "rule_change_needs_confirmation"
    assert refused.json()["detail"] == (
        "the last 2 purchases earned 123 points and would earn 12345 under these rules "
        "(×100), more than the ×10 a change may make without a confirmation: check the "
        'rules, then send them again with "confirm": true to apply them')
    assert await versions(client, marketer) == [1]

    confirmed = await client.put("/v1/earning-rules", json={**per_yen, "confirm": True},
                                 headers=marketer)
    assert confirmed.status_code == 200, confirmed.text
    assert "confirm" not in confirmed.json()["rules"]
    assert (await recorded_purchase(client, member, till, 100))["points_earned"] == 100


async def test_a_rule_change_within_10x_or_lowering_points_needs_no_confirmation(
    client: Client, actors: Actors, marketer: dict[str, str]
) -> None:
    member = await actors.member()
    till = bearer((await actors.terminal("RULES-MILD"))[0])
    await recorded_purchase(client, member, till, 10_000)

    for base in ({"points": 10, "per_amount": 100}, {"points": 1, "per_amount": 10_000}):
        response = await client.put("/v1/earning-rules", json={"base": base}, headers=marketer)
        assert response.status_code == 200, (base, response.text)
    assert await versions(client, marketer) == [3, 2, 1]


async def test_a_tier_multiplier_change_beyond_10x_needs_a_confirmation(
    client: Client, actors: Actors, marketer: dict[str, str]
) -> None:
    gold = {"code": "gold", "name": "Gold", "threshold": 0, "multiplier_percent": 150}
    assert (await client.put("/v1/tiers", json={"levels": [gold]},
                             headers=marketer)).status_code == 200
    member = await actors.member()
    till = bearer((await actors.terminal("RULES-TIER"))[0])
    reached = await recorded_purchase(client, member, till, 10_000)
    assert reached["tier_reached"] == "gold"
    await recorded_purchase(client, member, till, 10_000)  # at gold: 150 points

    fifty_times = {"levels": [{**gold, "multiplier_percent": 5_000}]}
    refused = await client.put("/v1/tiers", json=fifty_times, headers=marketer)
    assert refused.status_code == 422, refused.text
    assert problem_code(refused) == "rule_change_needs_confirmation"
    assert "earned 300 points and would earn 10000" in refused.json()["detail"]

    confirmed = await client.put("/v1/tiers", json={**fifty_times, "confirm": True},
                                 headers=marketer)
    assert confirmed.status_code == 200, confirmed.text
    assert "confirm" not in confirmed.json()["tiers"]
    assert (await recorded_purchase(client, member, till, 10_000))["points_earned"] == 5_000


async def test_the_confirmation_factor_is_the_programmes_setting(app_with: AppWith) -> None:
    async with app_with(rule_change_confirm_factor=2) as (client, actors):
        marketer = bearer(await actors.staff("marketer"))
        member = await actors.member()
        till = bearer((await actors.terminal("RULES-FACTOR"))[0])
        await recorded_purchase(client, member, till, 10_000)

        triple = {"base": {"points": 3, "per_amount": 100}}
        refused = await client.put("/v1/earning-rules", json=triple, headers=marketer)
        assert refused.status_code == 422, refused.text
        assert "(×3.0), more than the ×2 a change" in refused.json()["detail"]


async def test_the_ceilings_are_the_programmes_settings(app_with: AppWith) -> None:
    async with app_with(max_points_per_purchase=500, max_points_per_action=3) as (client, actors):
        marketer = bearer(await actors.staff("marketer"))
        member = await actors.member()
        till = bearer((await actors.terminal("RULES-SETTING"))[0])

        recorded = await recorded_purchase(client, member, till, 100_000)
        simulated = await client.post("/v1/earning-rules/simulate", headers=marketer, json={
            "purchase": {"total": 100_000, "lines": [{"sku": "X", "unit_price": 100_000}]}})
        shared = await client.post("/v1/me/actions", headers=member.headers,
                                   json={"type": "sns_share", "target": "https://x.test/a"})

        assert recorded["points_earned"] == simulated.json()["points"] == 500
        assert recorded["trace"]["steps"][-1]["detail"] == (
            "at most 500 points per purchase in this programme")
        assert shared.json()["points"] == 3


@pytest.mark.parametrize("today", [-1, 10**30])
async def test_simulating_an_action_with_counts_out_of_bounds_is_400(
    client: Client, marketer: dict[str, str], today: int
) -> None:
    response = await client.post("/v1/earning-rules/simulate", headers=marketer,
                                 json={"action": {"type": "site_visit", "today": today}})

    assert response.status_code == 400, response.text
    assert problem_code(response) == "validation_failed"
