"""Earning rules as staff edit them: versioned, validated at the edge, simulated without writing,
through the API on real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import httpx
import pytest

from tests.api.conftest import Actors, SignedUp, bearer

Client = httpx.AsyncClient
_keys = itertools.count()


def purchase(member: SignedUp, total: int) -> dict[str, Any]:
    return {
        "member": {"id": member.member_id},
        "receipt_id": f"RULES-{next(_keys)}",
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "total": total,
        "currency": "JPY",
        "lines": [{"sku": "BREAD", "category": "bakery", "quantity": 1, "unit_price": total}],
    }


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
