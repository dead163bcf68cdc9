"""Coupons end to end: templates, generated codes, issuing, the wallet, every reason the till
can be given, redemption inside the purchase, and coupons given back by a full return."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from loyalty.promotions.codes import ALPHABET, is_well_formed, normalize_code
from tests.factories import Actors, SignedUp, Staffed, bearer
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
_n = itertools.count()
NOW = dt.datetime.now(dt.UTC)


def ago(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).isoformat()


def ahead(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


@dataclass
class Shop(Staffed):
    other_till: dict[str, str]

    async def template(self, **fields: Any) -> dict[str, Any]:
        body = {"name": f"Coupon {next(_n)}", "discount": {"type": "fixed_amount", "amount": 100},
                **fields}
        response = await self.client.post("/v1/coupon-templates", json=body,
                                          headers=self.marketer)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def codes(self, template_id: str, count: int, **fields: Any) -> list[str]:
        response = await self.client.post(f"/v1/coupon-templates/{template_id}/codes",
                                          json={"count": count, **fields},
                                          headers=self.marketer)
        assert response.status_code == 201, response.text
        return list(response.json()["codes"])

    async def issue(self, template_id: str, *members: SignedUp, key: str | None = None
                    ) -> dict[str, Any]:
        response = await self.client.post(
            f"/v1/coupon-templates/{template_id}/issue",
            json={"members": [m.member_id for m in members]},
            headers={**self.marketer, "Idempotency-Key": key or f"issue-{next(_n)}"})
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def wallet(self, member: SignedUp, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else {}
        response = await self.client.get("/v1/me/coupons", params=params,
                                         headers=member.headers)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def validate(self, coupons: list[dict[str, Any]], *, member: SignedUp | None = None,
                       lines: list[dict[str, Any]] | None = None,
                       till: dict[str, str] | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"coupons": coupons,
                                "lines": lines or [{"sku": "LATTE", "unit_price": 1_000}]}
        if member is not None:
            body["member"] = {"id": member.member_id}
        response = await self.client.post("/v1/pos/coupons/validate", json=body,
                                          headers=till or self.till)
        assert response.status_code == 200, response.text
        return list(response.json()["coupons"])

    async def buy(self, member: SignedUp, *, coupons: list[dict[str, Any]] | None = None,
                  total: int = 1_000, lines: list[dict[str, Any]] | None = None,
                  key: str | None = None, till: dict[str, str] | None = None,
                  receipt: str | None = None, at: str | None = None) -> httpx.Response:
        body = await self.basket(member, coupons=coupons, total=total, lines=lines, till=till,
                                 receipt=receipt, at=at)
        return await self.client.post(
            "/v1/pos/purchases", json=body,
            headers={**(till or self.till), "Idempotency-Key": key or f"k-{next(_n)}"})

    async def basket(self, member: SignedUp, *, coupons: list[dict[str, Any]] | None = None,
                     total: int = 1_000, lines: list[dict[str, Any]] | None = None,
                     till: dict[str, str] | None = None, receipt: str | None = None,
                     at: str | None = None) -> dict[str, Any]:
        """A purchase as a till sends it. Without ``lines``, one line worth ``total``, and what
        is charged is that less what the coupons take off, which the till learns from a
        quote; with ``lines``, ``total`` is what is charged."""
        body = {"member": {"id": member.member_id}, "receipt_id": receipt or f"R-{next(_n)}",
                "occurred_at": at or dt.datetime.now(dt.UTC).isoformat(), "total": total,
                "currency": "JPY",
                "lines": lines or [{"sku": "LATTE", "unit_price": total}],
                "coupons": coupons or []}
        if coupons and not lines:
            quote = await self.client.post("/v1/pos/quotes", json=body,
                                           headers=till or self.till)
            if quote.status_code == 200:
                body["total"] = total - quote.json()["discount"]
        return body


@pytest.fixture
async def shop(client: Client, actors: Actors, settings: Any) -> Shop:
    till, _ = await actors.terminal("SHIBUYA")
    other, _ = await actors.terminal("OSAKA")
    return Shop(client, actors, settings.database_url, bearer(await actors.staff("marketer")),
                bearer(till), bearer(other))


def reasons(checks: list[dict[str, Any]]) -> list[str | None]:
    return [c["reason"] for c in checks]


# -- templates -------------------------------------------------------------------------------


async def test_template_is_created_read_listed_and_deactivated(shop: Shop) -> None:
    made = await shop.template(
        name="  Autumn ¥300  ", discount={"type": "percent", "percent": 10, "cap": 300},
        validity={"type": "days_after_issue", "days": 14}, min_spend=1_000,
        stores=["SHIBUYA"], categories=["drinks"], per_member_limit=2, total_limit=500,
        stackable=True)
    assert made["name"] == "Autumn ¥300"
    assert made["discount"] == {"type": "percent", "percent": 10, "cap": 300}
    assert made["validity"] == {"type": "days_after_issue", "days": 14}
    assert (made["issued"], made["redeemed"], made["active"]) == (0, 0, True)
    got = await shop.client.get(f"/v1/coupon-templates/{made['template_id']}",
                                headers=shop.marketer)
    assert got.json() == made
    analyst = bearer(await shop.actors.staff("analyst"))
    listed = await shop.client.get("/v1/coupon-templates", headers=analyst)
    assert [t["template_id"] for t in listed.json()["items"]] == [made["template_id"]]
    off = await shop.client.patch(f"/v1/coupon-templates/{made['template_id']}",
                                  json={"active": False}, headers=shop.marketer)
    assert off.status_code == 200
    assert off.json()["active"] is False
    refused = await shop.client.patch(f"/v1/coupon-templates/{made['template_id']}",
                                      json={"active": True}, headers=analyst)
    assert refused.status_code == 403


async def test_public_code_is_unique_and_needs_a_fixed_window(shop: Shop) -> None:
    await shop.template(public_code="welcome-2026")
    taken = await shop.client.post("/v1/coupon-templates", headers=shop.marketer, json={
        "name": "Again", "discount": {"type": "fixed_amount", "amount": 5},
        "public_code": "WELCOME2026"})
    assert taken.status_code == 409
    assert taken.json()["type"].endswith(":public_code_taken")
    dated = await shop.client.post("/v1/coupon-templates", headers=shop.marketer, json={
        "name": "Days", "discount": {"type": "fixed_amount", "amount": 5},
        "public_code": "DAYS-CODE", "validity": {"type": "days_after_issue", "days": 3}})
    assert dated.status_code == 422


@pytest.mark.parametrize("body", [
    {"name": "x", "discount": {"type": "percent", "percent": 101}},
    {"name": "x", "discount": {"type": "bogus"}},
    {"name": "x", "discount": {"type": "fixed_amount", "amount": 0}},
    {"name": "x", "discount": {"type": "points_multiplier", "percent": 100}},
    {"name": "x", "discount": {"type": "fixed_amount", "amount": 5},
     "validity": {"type": "window", "valid_from": "2026-02-01T00:00:00+09:00",
                  "valid_until": "2026-01-01T00:00:00+09:00"}},
    {"name": "x", "discount": {"type": "fixed_amount", "amount": 5},
     "validity": {"type": "window", "valid_until": "2026-01-01T00:00:00"}},
    {"name": "x", "discount": {"type": "fixed_amount", "amount": 5}, "public_code": "a b"},
    {"name": "x", "discount": {"type": "fixed_amount", "amount": 5}, "stores": ["'; drop"]},
])
async def test_bad_templates_are_refused_and_nothing_is_made(shop: Shop,
                                                             body: dict[str, Any]) -> None:
    response = await shop.client.post("/v1/coupon-templates", json=body, headers=shop.marketer)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    listed = await shop.client.get("/v1/coupon-templates", headers=shop.marketer)
    assert listed.json()["items"] == []


# -- codes -----------------------------------------------------------------------------------


async def test_hundred_thousand_codes_are_unique_well_formed_and_catch_a_typo(
    shop: Shop,
) -> None:
    template = await shop.template(total_limit=10)
    codes = await shop.codes(template["template_id"], 100_000)
    assert len(codes) == 100_000
    normalized = [normalize_code(code) for code in codes]
    assert len(set(normalized)) == 100_000
    assert all(is_well_formed(code) for code in normalized)
    assert all(len(code) == 14 and code.count("-") == 2 for code in codes)
    assert not set("".join(normalized)) - set(ALPHABET)
    # Every one-character typo of a code fails its check character, so nothing is looked up.
    sample = normalized[0]
    typos = [sample[:i] + char + sample[i + 1:] for i in range(len(sample))
             for char in ALPHABET if char != sample[i]]
    assert not any(is_well_formed(typo) for typo in typos)
    checks = await shop.validate([{"code": codes[0]}, {"code": typos[0]}])
    assert reasons(checks) == [None, "unknown"]
    assert "typo" in checks[1]["detail"]
    read = await shop.client.get(f"/v1/coupon-templates/{template['template_id']}",
                                 headers=shop.marketer)
    assert read.json()["issued"] == 100_000


async def test_codes_under_one_key_are_one_batch(shop: Shop) -> None:
    template = await shop.template()
    path = f"/v1/coupon-templates/{template['template_id']}/codes"
    headers = {**shop.marketer, "Idempotency-Key": "print-run-1"}
    first = await shop.client.post(path, json={"count": 5, "prefix": "aut"}, headers=headers)
    again = await shop.client.post(path, json={"count": 5, "prefix": "aut"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert all(code.startswith("AUT-") for code in first.json()["codes"])
    other = await shop.client.post(path, json={"count": 6, "prefix": "aut"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith(":idempotency_key_reused")
    bad_prefix = await shop.client.post(path, json={"count": 1, "prefix": "GOLD"},
                                        headers=shop.marketer)
    assert bad_prefix.status_code == 400  # O is not in the alphabet


# -- issuing and the wallet ------------------------------------------------------------------


async def test_issue_fills_wallets_once_per_key_and_skips_who_cannot_have_it(shop: Shop) -> None:
    template = await shop.template(per_member_limit=1,
                                   validity={"type": "days_after_issue", "days": 7})
    alice, bob = await shop.actors.member(), await shop.actors.member()
    first = await shop.issue(template["template_id"], alice, key="autumn")
    assert (first["issued"], first["skipped"]) == (1, 0)
    replay = await shop.issue(template["template_id"], alice, key="autumn")
    assert replay == first
    reused = await shop.client.post(
        f"/v1/coupon-templates/{template['template_id']}/issue",
        json={"members": [bob.member_id]}, headers={**shop.marketer, "Idempotency-Key": "autumn"})
    assert reused.status_code == 422
    # A second issue: alice already holds all she may use; an unknown id is skipped too.
    second = await shop.client.post(
        f"/v1/coupon-templates/{template['template_id']}/issue",
        json={"members": [alice.member_id, bob.member_id,
                          "00000000-0000-7000-8000-000000000000"]},
        headers={**shop.marketer, "Idempotency-Key": "autumn-2"})
    assert (second.json()["issued"], second.json()["skipped"]) == (1, 2)
    (coupon,) = await shop.wallet(alice)
    assert coupon["status"] == "usable"
    assert coupon["template_id"] == template["template_id"]
    issued = dt.datetime.fromisoformat(coupon["issued_at"])
    until = dt.datetime.fromisoformat(coupon["valid_until"])
    # Seven days after issue ends at midnight, business time (Tokyo), seven days on.
    local_day = issued.astimezone(dt.timezone(dt.timedelta(hours=9))).date()
    assert until == dt.datetime.combine(local_day + dt.timedelta(days=7), dt.time(),
                                        tzinfo=dt.timezone(dt.timedelta(hours=9)))


async def test_wallet_sorts_coupons_by_status(shop: Shop) -> None:
    member = await shop.actors.member()
    usable = await shop.template(name="Usable")
    upcoming = await shop.template(name="Upcoming", validity={
        "type": "window", "valid_from": ahead(days=3)})
    expired = await shop.template(name="Expired", validity={
        "type": "window", "valid_from": ago(days=10), "valid_until": ago(days=1)})
    withdrawn = await shop.template(name="Withdrawn")
    used = await shop.template(name="Used")
    for template in (usable, upcoming, expired, withdrawn, used):
        await shop.issue(template["template_id"], member)
    await shop.client.patch(f"/v1/coupon-templates/{withdrawn['template_id']}",
                            json={"active": False}, headers=shop.marketer)
    (to_use,) = [c for c in await shop.wallet(member) if c["name"] == "Used"]
    assert (await shop.buy(member, coupons=[{"coupon_id": to_use["coupon_id"]}])
            ).status_code == 201
    assert {c["name"] for c in await shop.wallet(member, "usable")} == {"Usable"}
    assert {c["name"] for c in await shop.wallet(member, "upcoming")} == {"Upcoming"}
    assert {c["name"] for c in await shop.wallet(member, "expired")} == {"Expired", "Withdrawn"}
    assert {c["name"] for c in await shop.wallet(member, "used")} == {"Used"}
    assert len(await shop.wallet(member)) == 5
    stranger = await shop.actors.member()
    assert await shop.wallet(stranger) == []


# -- the till: every reason ------------------------------------------------------------------


async def test_every_reason_the_till_can_be_given(shop: Shop) -> None:
    member = await shop.actors.member()
    lines = [{"sku": "LATTE", "category": "drinks", "unit_price": 600},
             {"sku": "BAGEL", "category": "food", "unit_price": 400}]

    async def one(coupon: dict[str, Any], **kw: Any) -> dict[str, Any]:
        kw.setdefault("member", member)
        kw.setdefault("lines", lines)
        (check,) = await shop.validate([coupon], **kw)
        return check

    assert (await one({"code": "ZZZZ-ZZZZ-ZZZZ"}))["reason"] == "unknown"
    assert (await one({"code": "NOT-A-CODE"}))["reason"] == "unknown"
    assert (await one({"coupon_id": "00000000-0000-7000-8000-000000000000"}))["reason"] \
        == "unknown"
    someone_else = await shop.actors.member()
    theirs = await shop.template()
    await shop.issue(theirs["template_id"], someone_else)
    (their_coupon,) = await shop.wallet(someone_else)
    assert (await one({"coupon_id": their_coupon["coupon_id"]}))["reason"] == "unknown"

    withdrawn = await shop.template(public_code="GONE-NOW")
    await shop.client.patch(f"/v1/coupon-templates/{withdrawn['template_id']}",
                            json={"active": False}, headers=shop.marketer)
    assert (await one({"code": "gone-now"}))["reason"] == "inactive"

    await shop.template(public_code="LATER", validity={
        "type": "window", "valid_from": ahead(days=1)})
    assert (await one({"code": "LATER"}))["reason"] == "not_yet_valid"

    await shop.template(public_code="OVER", validity={
        "type": "window", "valid_until": ago(minutes=1)})
    assert (await one({"code": "OVER"}))["reason"] == "expired"

    single = await shop.template()
    (code,) = await shop.codes(single["template_id"], 1)
    assert (await shop.buy(member, coupons=[{"code": code}])).status_code == 201
    assert (await one({"code": code}))["reason"] == "already_used"
    twice = await shop.template(stackable=True, total_limit=None)
    two_codes = await shop.codes(twice["template_id"], 1)
    checks = await shop.validate([{"code": two_codes[0]}, {"code": two_codes[0]}],
                                 member=member, lines=lines)
    assert reasons(checks) == [None, "already_used"]

    await shop.template(public_code="OSAKA-ONLY", stores=["OSAKA"])
    assert (await one({"code": "OSAKA-ONLY"}))["reason"] == "wrong_store"
    assert (await one({"code": "OSAKA-ONLY"}, till=shop.other_till))["reason"] is None

    budget = await shop.template(public_code="BUDGET-ONE", total_limit=1)
    assert (await shop.buy(someone_else, coupons=[{"code": "BUDGET-ONE"}])).status_code == 201
    budget_check = await one({"code": "BUDGET-ONE"})
    assert budget_check["reason"] == "limit_reached"
    assert "budget" in budget_check["detail"]
    assert budget["template_id"] == budget_check["template_id"]

    await shop.template(public_code="ONCE-EACH", per_member_limit=1)
    assert (await shop.buy(member, coupons=[{"code": "ONCE-EACH"}])).status_code == 201
    assert (await one({"code": "ONCE-EACH"}))["reason"] == "limit_reached"
    # Without the member the till cannot know: per-member limits are checked at the purchase.
    assert (await one({"code": "ONCE-EACH"}, member=None))["reason"] is None

    await shop.template(public_code="BIG-BASKET", min_spend=1_001)
    assert (await one({"code": "BIG-BASKET"}))["reason"] == "below_minimum"
    await shop.template(public_code="DRINKS-500", min_spend=601, categories=["drinks"])
    assert (await one({"code": "DRINKS-500"}))["reason"] == "below_minimum"

    await shop.template(public_code="FREE-MUFFIN",
                        discount={"type": "free_item", "sku": "MUFFIN"})
    assert (await one({"code": "FREE-MUFFIN"}))["reason"] == "not_applicable"
    await shop.template(public_code="TEA-ONLY", categories=["tea"])
    assert (await one({"code": "TEA-ONLY"}))["reason"] == "not_applicable"

    await shop.template(public_code="ALONE", stackable=False)
    await shop.template(public_code="FRIENDLY", stackable=True)
    checks = await shop.validate([{"code": "ALONE"}, {"code": "FRIENDLY"}], member=member,
                                 lines=lines)
    assert reasons(checks) == ["not_stackable", None]
    assert (await one({"code": "ALONE"}))["reason"] is None


async def test_discounts_of_each_kind(shop: Shop) -> None:
    member = await shop.actors.member()
    lines = [{"sku": "LATTE", "category": "drinks", "unit_price": 650, "quantity": 2},
             {"sku": "BAGEL", "category": "food", "unit_price": 400}]
    await shop.template(public_code="YEN-200", stackable=True,
                        discount={"type": "fixed_amount", "amount": 200})
    await shop.template(public_code="DRINKS-15", stackable=True, categories=["drinks"],
                        discount={"type": "percent", "percent": 15})
    await shop.template(public_code="HALF-CAPPED", stackable=True,
                        discount={"type": "percent", "percent": 50, "cap": 300})
    await shop.template(public_code="FREE-BAGEL", stackable=True,
                        discount={"type": "free_item", "sku": "BAGEL"})
    await shop.template(public_code="DOUBLE", stackable=True,
                        discount={"type": "points_multiplier", "percent": 200})
    checks = await shop.validate(
        [{"code": c} for c in ("YEN-200", "DRINKS-15", "HALF-CAPPED", "FREE-BAGEL", "DOUBLE")],
        member=member, lines=lines)
    # 1,300 of drinks × 15% = 195; 50% of 1,700 capped at 300; the bagel's 400.
    assert [c["discount"] for c in checks] == [200, 195, 300, 400, 0]
    assert checks[-1]["points_percent"] == 200
    # Together they never take off more than the basket: 1,700 in all, 1,095 here.
    assert sum(c["discount"] for c in checks) == 1_095
    await shop.template(public_code="EVERYTHING", stackable=True,
                        discount={"type": "fixed_amount", "amount": 10_000})
    capped = await shop.validate([{"code": "YEN-200"}, {"code": "EVERYTHING"}], member=member,
                                 lines=lines)
    assert [c["discount"] for c in capped] == [200, 1_500]


# -- redeeming with the purchase -------------------------------------------------------------


async def test_purchase_redeems_its_coupons_with_its_points(shop: Shop) -> None:
    member = await shop.actors.member()
    wallet_template = await shop.template(name="¥100 off", stackable=True)
    await shop.issue(wallet_template["template_id"], member)
    (coupon,) = await shop.wallet(member)
    double = await shop.template(public_code="DOUBLE", stackable=True,
                                 discount={"type": "points_multiplier", "percent": 200})
    response = await shop.buy(member, total=2_900, lines=[{"sku": "LATTE", "unit_price": 3_000}],
                              coupons=[{"coupon_id": coupon["coupon_id"]}, {"code": "double"}])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["discount"] == 100
    assert [c["valid"] for c in body["coupons"]] == [True, True]
    # 2,900 paid earns 29; the double-points coupon adds another 29.
    assert body["points_earned"] == 58
    assert [s["rule"] for s in body["trace"]["steps"]] == ["base", "coupon"]
    assert await shop.wallet(member, "usable") == []
    template = await shop.client.get(f"/v1/coupon-templates/{double['template_id']}",
                                     headers=shop.marketer)
    assert template.json()["redeemed"] == 1
    conn = await asyncpg.connect(shop.database_url)
    try:
        rows = await conn.fetch("select template_id, discount, code, coupon_id, purchase_id"
                                " from coupon_redemptions order by discount")
    finally:
        await conn.close()
    assert [(str(r["template_id"]), r["discount"]) for r in rows] == [
        (double["template_id"], 0), (wallet_template["template_id"], 100)]
    assert {str(r["purchase_id"]) for r in rows} == {body["purchase_id"]}


async def test_a_coupon_that_does_not_apply_refuses_the_purchase_and_changes_nothing(
    shop: Shop,
) -> None:
    member = await shop.actors.member()
    template = await shop.template(min_spend=5_000)
    (code,) = await shop.codes(template["template_id"], 1)
    refused = await shop.buy(member, coupons=[{"code": code}], key="fix-and-resend")
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith(":coupon_below_minimum")
    assert refused.json()["field"] == "coupons[0]"
    rows = await ledger_rows(shop.database_url)
    assert rows.entries == []
    assert [b["purchase_count"] for b in rows.balances] == [0]
    # The till drops the coupon and sends again under the same key: recorded.
    again = await shop.buy(member, key="fix-and-resend")
    assert again.status_code == 201
    assert (await shop.validate([{"code": code}], member=member,
                                lines=[{"sku": "X", "unit_price": 6_000}]))[0]["valid"]


async def test_retry_of_a_purchase_with_a_coupon_replays_instead_of_refusing(shop: Shop) -> None:
    member = await shop.actors.member()
    template = await shop.template()
    (code,) = await shop.codes(template["template_id"], 1)
    body = await shop.basket(member, coupons=[{"code": code}], receipt="R-F", at=ago(seconds=1))
    headers = {**shop.till, "Idempotency-Key": "flaky"}
    first = await shop.client.post("/v1/pos/purchases", json=body, headers=headers)
    again = await shop.client.post("/v1/pos/purchases", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    check_invariants(await ledger_rows(shop.database_url))


async def test_quote_says_which_coupons_apply_without_using_them(shop: Shop) -> None:
    member = await shop.actors.member()
    await shop.template(public_code="TEN-OFF", discount={"type": "percent", "percent": 10})
    quote = await shop.client.post("/v1/pos/quotes", headers=shop.till, json={
        "member": {"id": member.member_id}, "receipt_id": "Q-1",
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(), "total": 900, "currency": "JPY",
        "lines": [{"sku": "A", "unit_price": 1_000}],
        "coupons": [{"code": "TEN-OFF"}, {"code": "NOPE-NOPE"}]})
    assert quote.status_code == 200
    assert quote.json()["discount"] == 100
    assert reasons(quote.json()["coupons"]) == [None, "unknown"]
    assert (await shop.validate([{"code": "TEN-OFF"}], member=member))[0]["valid"]


# -- returns ---------------------------------------------------------------------------------


async def test_full_return_gives_coupons_back_per_template_policy(shop: Shop) -> None:
    member = await shop.actors.member()
    back = await shop.template(name="Comes back", stackable=True, total_limit=5)
    kept = await shop.template(name="Stays used", stackable=True, on_return="keep_used")
    (back_code,) = await shop.codes(back["template_id"], 1)
    await shop.issue(kept["template_id"], member)
    (kept_coupon,) = await shop.wallet(member)
    bought = await shop.buy(member, total=1_800, lines=[
        {"sku": "A", "unit_price": 1_000, "quantity": 2}],
        coupons=[{"code": back_code}, {"coupon_id": kept_coupon["coupon_id"]}])
    assert bought.status_code == 201, bought.text
    purchase_id = bought.json()["purchase_id"]

    async def give_back(**body: Any) -> dict[str, Any]:
        response = await shop.client.post(
            f"/v1/pos/purchases/{purchase_id}/returns", json=body,
            headers={**shop.till, "Idempotency-Key": f"ret-{next(_n)}"})
        assert response.status_code == 201, response.text
        return dict(response.json())

    partial = await give_back(lines=[{"line": 0, "quantity": 1}])
    assert partial["coupons_reinstated"] == []
    assert (await shop.validate([{"code": back_code}]))[0]["reason"] == "already_used"
    rest = await give_back(lines=[{"line": 0, "quantity": 1}])
    assert rest["coupons_reinstated"] == [
        {"template_id": back["template_id"], "code": normalize_code(back_code),
         "coupon_id": None}]
    assert (await shop.validate([{"code": back_code}]))[0]["valid"]
    got = await shop.client.get(f"/v1/coupon-templates/{back['template_id']}",
                                headers=shop.marketer)
    assert got.json()["redeemed"] == 0
    assert [c["status"] for c in await shop.wallet(member)] == ["used"]
    # Given back once: usable again, and redeemable again.
    assert (await shop.buy(member, coupons=[{"code": back_code}])).status_code == 201
    check_invariants(await ledger_rows(shop.database_url))


# -- tiers -----------------------------------------------------------------------------------


async def test_reaching_a_tier_puts_its_coupon_in_the_wallet(shop: Shop) -> None:
    welcome = await shop.template(name="Silver welcome",
                                  validity={"type": "days_after_issue", "days": 30})
    levels = [{"code": "SILVER", "name": "Silver", "threshold": 5_000,
               "coupon_template_id": welcome["template_id"]}]
    response = await shop.client.put("/v1/tiers", json={"levels": levels},
                                     headers=shop.marketer)
    assert response.status_code == 200, response.text
    missing = await shop.client.put("/v1/tiers", headers=shop.marketer, json={"levels": [
        {**levels[0], "coupon_template_id": "00000000-0000-7000-8000-000000000000"}]})
    assert missing.status_code == 422
    member = await shop.actors.member()
    assert (await shop.buy(member, total=4_000)).json()["tier_reached"] is None
    assert await shop.wallet(member) == []
    crossing = await shop.buy(member, total=1_000)
    assert crossing.json()["tier_reached"] == "SILVER"
    (coupon,) = await shop.wallet(member)
    assert (coupon["name"], coupon["status"]) == ("Silver welcome", "usable")
    tier = await shop.client.get("/v1/me/tier", headers=member.headers)
    assert tier.json()["tier"]["code"] == "SILVER"


async def test_templates_and_wallet_page_through_with_cursors(shop: Shop) -> None:
    member = await shop.actors.member()
    made = [await shop.template(name=f"T{i}") for i in range(3)]
    for template in made:
        await shop.issue(template["template_id"], member)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await shop.client.get("/v1/coupon-templates", params=params,
                                      headers=shop.marketer)).json()
        seen += [t["name"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["T2", "T1", "T0"]
    first = (await shop.client.get("/v1/me/coupons", params={"limit": "2"},
                                   headers=member.headers)).json()
    rest = (await shop.client.get("/v1/me/coupons", params={
        "limit": "2", "cursor": first["next_cursor"]}, headers=member.headers)).json()
    assert [c["name"] for c in first["items"] + rest["items"]] == ["T2", "T1", "T0"]
    assert rest["next_cursor"] is None
    bad = await shop.client.get("/v1/coupon-templates", params={"cursor": "%%%"},
                                headers=shop.marketer)
    # Not base64url at all: the parameter's pattern refuses it, as for any list.
    assert bad.status_code == 400
