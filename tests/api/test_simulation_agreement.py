"""The rule simulator marketers use and the till agree, point for point, on random purchases."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from loyalty.core.settings import Settings
from tests.factories import Actors, SignedUp, bearer, purchase_body

Client = httpx.AsyncClient

PURCHASES = 1_000
MEMBERS = 20
STORE = "SHIBUYA-01"
SKUS = ["COFFEE", "BEANS-1KG", "MUG", "TEA", "CAKE", "SANDWICH"]
CATEGORIES = ["drinks", "food", "goods", "uncategorised"]


def rich_rules(now: dt.datetime) -> dict[str, Any]:
    """Rules under which almost every purchase meets a multiplier, a bonus or a rounding."""
    return {
        "base": {"points": 3, "per_amount": 200},
        "rounding": "round",
        "stacking": "multiply",
        "multipliers": [
            {"name": "drinks x1.5", "percent": 150,
             "when": [{"type": "category", "categories": ["drinks"]}]},
            {"name": "beans x3", "percent": 300,
             "when": [{"type": "sku", "skus": ["BEANS-1KG", "TEA"]}]},
            {"name": "flagship x1.2", "percent": 120,
             "when": [{"type": "store", "stores": [STORE]}]},
            {"name": "weekend food x2", "percent": 200,
             "when": [{"type": "weekday", "days": ["sat", "sun"]},
                      {"type": "category", "categories": ["food"]}]},
            {"name": "late night x1.75", "percent": 175,
             "when": [{"type": "time_window", "start": "22:00:00", "end": "02:00:00"}]},
            {"name": "lunch x1.1", "percent": 110,
             "when": [{"type": "time_window", "start": "11:30:00", "end": "13:30:00"}]},
            {"name": "birthday x2", "percent": 200, "when": [{"type": "birthday_month"}]},
            {"name": "launch fortnight x1.3", "percent": 130,
             "valid_from": (now - dt.timedelta(days=20)).isoformat(),
             "valid_until": (now - dt.timedelta(days=6)).isoformat()},
        ],
        "bonuses": [
            {"type": "first_purchase", "points": 50},
            {"type": "birthday_month", "points": 200},
        ],
    }


@dataclass
class Shopper:
    signed_up: SignedUp
    birth_date: dt.date | None
    available: int = 0
    purchases: int = 0
    birthday_bonus_years: set[int] = field(default_factory=set)


def random_lines(rng: random.Random) -> list[dict[str, Any]]:
    return [{"sku": rng.choice(SKUS), "category": rng.choice(CATEGORIES),
             "quantity": rng.randint(1, 4),
             "unit_price": rng.choice([0, 1, 99, 150, 333, 480, 1_000, 2_499, 12_345])}
            for _ in range(rng.randint(1, 5))]


def random_total(rng: random.Random, line_sum: int) -> int:
    roll = rng.random()
    if roll < 0.6 or line_sum == 0:
        return line_sum
    if roll < 0.9:
        return rng.randint(0, line_sum)  # discounted at the till
    return line_sum - line_sum // 10


def random_moment(rng: random.Random, now: dt.datetime) -> dt.datetime:
    """A moment in the last 30 days, written in one of several UTC offsets."""
    instant = now - dt.timedelta(seconds=rng.randint(60, 30 * 24 * 3600))
    offset = dt.timezone(dt.timedelta(hours=rng.choice([0, 9, -5, 5.5])))
    return instant.astimezone(offset)


async def test_simulation_and_recorded_purchase_agree_on_1000_random_purchases(
    client: Client, actors: Actors, settings: Settings
) -> None:
    rng = random.Random(20261123)
    tz = ZoneInfo(settings.timezone)
    now = dt.datetime.now(dt.UTC)
    marketer = bearer(await actors.staff("marketer"))
    api_key, _ = await actors.terminal(STORE)
    till = bearer(api_key)
    saved = await client.put("/v1/earning-rules", json=rich_rules(now), headers=marketer)
    assert saved.status_code == 200, saved.text

    # Birth months of the window, so birthday bonuses and multipliers come up.
    window_months = sorted({(now - dt.timedelta(days=d)).astimezone(tz).month
                            for d in range(31)})
    shoppers = []
    for n in range(MEMBERS):
        birth_date = None
        if n % 4:
            month = rng.choice(window_months) if n % 4 != 3 else rng.randint(1, 12)
            birth_date = dt.date(rng.randint(1950, 2005), month, rng.randint(1, 28))
        fields = {"birth_date": birth_date.isoformat()} if birth_date else {}
        shoppers.append(Shopper(await actors.member(**fields), birth_date))

    seen: Counter[str] = Counter()
    for n in range(PURCHASES):
        shopper = rng.choice(shoppers)
        lines = random_lines(rng)
        total = random_total(rng, sum(li["quantity"] * li["unit_price"] for li in lines))
        occurred_at = random_moment(rng, now)
        most = min(shopper.available, total)
        redeem = rng.randint(1, most) if most and rng.random() < 0.3 else 0
        local_year = occurred_at.astimezone(tz).year

        simulated = await client.post("/v1/earning-rules/simulate", headers=marketer, json={
            "purchase": {
                "store_code": STORE, "occurred_at": occurred_at.isoformat(), "total": total,
                "lines": lines, "redeem_points": redeem,
                "first_purchase": shopper.purchases == 0,
                "birth_date": shopper.birth_date.isoformat() if shopper.birth_date else None,
                "birthday_bonus_given_this_year": local_year in shopper.birthday_bonus_years,
            }})
        assert simulated.status_code == 200, simulated.text
        recorded = await client.post("/v1/pos/purchases", headers={
            **till, "Idempotency-Key": f"agree-{n}"}, json=purchase_body(
            shopper.signed_up.member_id, total, receipt_id=f"AGREE-{n}",
            occurred_at=occurred_at, lines=lines, redeem_points=redeem,
            discount=sum(li["quantity"] * li["unit_price"] for li in lines) - total))
        assert recorded.status_code == 201, recorded.text

        sim, rec = simulated.json(), recorded.json()
        context = f"purchase {n}: {lines=} {total=} {redeem=} {occurred_at=}"
        assert rec["points_earned"] == sim["points"], context
        assert rec["points_redeemed"] == redeem, context
        assert [(s["rule"], s["points"]) for s in rec["trace"]["steps"]] == [
            (s["rule"], s["points"]) for s in sim["trace"]["steps"]], context
        assert rec["trace"] == sim["trace"], context
        assert rec["balance"]["available"] == shopper.available - redeem + rec["points_earned"]

        shopper.available = rec["balance"]["available"]
        shopper.purchases += 1
        steps = {s["rule"] for s in rec["trace"]["steps"]}
        if "birthday_month" in steps:
            shopper.birthday_bonus_years.add(local_year)
        seen.update(steps)
        seen.update(m for line in rec["trace"]["lines"] for m in line["multipliers"])
        seen["redeemed"] += bool(redeem)
        seen["discounted"] += total < sum(li["quantity"] * li["unit_price"] for li in lines)

    # The agreement above is only worth something if every rule actually came into play.
    assert seen["first_purchase"] == MEMBERS
    assert seen["birthday_month"] >= 3
    for multiplier in rich_rules(now)["multipliers"]:
        assert seen[multiplier["name"]] > 0, multiplier["name"]
    assert seen["redeemed"] > 50, seen
    assert seen["discounted"] > 50, seen


async def test_simulation_quote_purchase_and_entry_agree_where_the_ceiling_applies(
    client: Client, actors: Actors
) -> None:
    """Rules generous enough that some purchases pass the programme's ceiling (1,000,000 by
    default) and some do not: every view of each purchase shows the same points and trace."""
    rng = random.Random(20261204)
    marketer = bearer(await actors.staff("marketer"))
    api_key, _ = await actors.terminal(STORE)
    till = bearer(api_key)
    saved = await client.put("/v1/earning-rules", headers=marketer, json={
        "base": {"points": 100, "per_amount": 1}, "stacking": "multiply", "multipliers": [
            {"name": "drinks x2", "percent": 200,
             "when": [{"type": "category", "categories": ["drinks"]}]},
            {"name": "mugs x1.5", "percent": 150,
             "when": [{"type": "sku", "skus": ["MUG"]}]}]})
    assert saved.status_code == 200, saved.text
    shopper = await actors.member()
    capped = 0
    for n in range(30):
        lines: list[dict[str, Any]] = [{"sku": rng.choice(SKUS), "category": rng.choice(CATEGORIES),
                  "quantity": 1, "unit_price": rng.choice([99, 500, 2_000, 6_000, 12_345])}
                 for _ in range(rng.randint(1, 2))]
        total = sum(li["quantity"] * li["unit_price"] for li in lines)
        body = purchase_body(shopper.member_id, total, receipt_id=f"CAP-{n}", lines=lines)

        simulated = await client.post("/v1/earning-rules/simulate", headers=marketer, json={
            "purchase": {"store_code": STORE, "total": total, "lines": lines,
                         "first_purchase": n == 0}})
        quoted = await client.post("/v1/pos/quotes", headers=till, json=body)
        recorded = await client.post("/v1/pos/purchases", json=body,
                                     headers={**till, "Idempotency-Key": f"cap-{n}"})
        assert (simulated.status_code, quoted.status_code, recorded.status_code) == (
            200, 200, 201), (simulated.text, quoted.text, recorded.text)
        history = (await client.get("/v1/me/points/history", headers=shopper.headers)).json()
        entry_id = next(e["entry_id"] for e in history["items"]
                        if e["purchase_id"] == recorded.json()["purchase_id"])
        entry = (await client.get(f"/v1/me/points/entries/{entry_id}",
                                  headers=shopper.headers)).json()

        points = recorded.json()["points_earned"]
        assert points <= 1_000_000
        assert simulated.json()["points"] == quoted.json()["points_earned"] == points
        assert entry["amount"] == points
        trace = recorded.json()["trace"]
        assert simulated.json()["trace"]["steps"] == quoted.json()["trace"]["steps"] == \
            trace["steps"] == entry["trace"]["steps"]
        assert simulated.json()["trace"]["lines"] == trace["lines"] == entry["trace"]["lines"]
        capped += trace["steps"][-1]["rule"] == "ceiling"
    # The agreement is only worth something if both sides of the ceiling came up.
    assert 5 <= capped <= 25, capped
