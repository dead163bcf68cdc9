"""Offline tills: a queue of purchases and returns uploaded in one batch, on real PostgreSQL
(docs/offline-tills.md, docs/decisions/0016-offline-tills.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from loyalty.core.settings import Settings
from tests.factories import Actors, SignedUp, bearer, purchase_body, query
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
_keys = itertools.count()

# What a batch leaves behind: sent again, it must leave all of it as it was.
FOOTPRINT = """
select (select count(*) from point_entries) as entries,
       (select count(*) from point_lots) as lots,
       (select count(*) from purchases) as purchases,
       (select count(*) from purchase_returns) as returns,
       (select count(*) from idempotency_keys) as keys,
       (select count(*) from outbox) as events,
       (select coalesce(sum(version), 0) from point_balances) as versions
"""


def fresh_key() -> str:
    return f"till-{next(_keys)}"


def bought(member_id: str, total: int, *, redeem: int = 0, receipt: str | None = None,
           key: str | None = None, minutes_ago: int = 30) -> dict[str, Any]:
    """A purchase item rung up offline ``minutes_ago``."""
    return {"kind": "purchase", "idempotency_key": key or fresh_key(),
            "purchase": purchase_body(
                member_id, total, receipt_id=receipt, prefix="OFF", redeem_points=redeem,
                occurred_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago))}


def returned(amount: int, *, receipt: str | None = None, purchase_id: str | None = None,
             key: str | None = None) -> dict[str, Any]:
    named = {"receipt_id": receipt} if receipt is not None else {"purchase_id": purchase_id}
    return {"kind": "return", "idempotency_key": key or fresh_key(), **named,
            "returned": {"amount": amount}}


@pytest.fixture
async def till(actors: Actors) -> dict[str, str]:
    api_key, _ = await actors.terminal("OFFLINE-01")
    return bearer(api_key)


async def points(client: Client, member: SignedUp) -> int:
    answer = (await client.get("/v1/me/points", headers=member.headers)).json()
    available: int = answer["available"]
    return available


async def test_a_thousand_purchases_in_one_batch_land_exactly_once(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings,
) -> None:
    members = [await actors.member() for _ in range(10)]
    items = [bought(members[i % 10].member_id, 1_000 + i) for i in range(1_000)]
    first = await client.post("/v1/pos/batches", json={"items": items}, headers=till)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert (answer["created"], answer["replayed"], answer["refused"]) == (1_000, 0, 0)
    assert [a["index"] for a in answer["items"]] == list(range(1_000))
    assert [a["idempotency_key"] for a in answer["items"]] == [i["idempotency_key"]
                                                              for i in items]
    assert {(a["outcome"], a["status"]) for a in answer["items"]} == {("created", 201)}
    assert [a["purchase"]["receipt_id"] for a in answer["items"]] == [
        i["purchase"]["receipt_id"] for i in items]
    database = settings.database_url
    assert database is not None
    (counts,) = await query(database, FOOTPRINT)
    assert counts["purchases"] == 1_000
    rows = await ledger_rows(database)
    assert len([e for e in rows.entries if e["kind"] == "earn"]) == 1_000
    check_invariants(rows)
    for n, member in enumerate(members):
        assert await points(client, member) == sum((1_000 + i) // 100
                                                   for i in range(n, 1_000, 10))

    again = await client.post("/v1/pos/batches", json={"items": items}, headers=till)
    assert again.status_code == 200, again.text
    replay = again.json()
    assert (replay["created"], replay["replayed"], replay["refused"]) == (0, 1_000, 0)
    for before, after in zip(answer["items"], replay["items"], strict=True):
        assert after["outcome"] == "replayed"
        assert after["status"] == 201
        assert after["purchase"] == before["purchase"]
    assert await query(database, FOOTPRINT) == [counts]
    assert (await ledger_rows(database)) == rows


async def test_a_refused_item_stops_nothing_after_it(
    client: Client, actors: Actors, till: dict[str, str],
) -> None:
    member = await actors.member()
    wrong_total = bought(member.member_id, 2_000)
    wrong_total["purchase"]["total"] = 1_999
    taken = bought(member.member_id, 500, receipt="TAKEN")
    items = [bought(member.member_id, 1_000), wrong_total, taken,
             bought(member.member_id, 700, receipt="TAKEN"), bought(member.member_id, 3_000)]
    answer = (await client.post("/v1/pos/batches", json={"items": items}, headers=till)).json()
    assert [(a["outcome"], a["status"]) for a in answer["items"]] == [
        ("created", 201), ("refused", 422), ("created", 201), ("refused", 409),
        ("created", 201)]
    assert answer["items"][1]["problem"]["type"] == "urn:loyalty:problem:total_mismatch"
    assert answer["items"][1]["problem"]["field"] == "total"
    assert "does not add up" in answer["items"][1]["problem"]["detail"]
    assert answer["items"][3]["problem"]["type"].endswith(":receipt_already_recorded")
    assert await points(client, member) == 10 + 5 + 30

    # Sent again as it was: the written items replay, the refused ones are refused again.
    again = (await client.post("/v1/pos/batches", json={"items": items}, headers=till)).json()
    assert [a["outcome"] for a in again["items"]] == [
        "replayed", "refused", "replayed", "refused", "replayed"]
    assert await points(client, member) == 45


async def test_items_are_written_in_till_order(
    client: Client, actors: Actors, till: dict[str, str],
) -> None:
    member = await actors.member()
    # The points earned by the first sale pay for part of the second, as they did at the till;
    # the second is then returned in full, named by its receipt.
    first = bought(member.member_id, 50_000, minutes_ago=40)
    second = bought(member.member_id, 1_000, redeem=400, minutes_ago=20)
    items = [first, second, returned(1_000, receipt=second["purchase"]["receipt_id"])]
    answer = (await client.post("/v1/pos/batches", json={"items": items}, headers=till)).json()
    assert [a["outcome"] for a in answer["items"]] == ["created"] * 3, answer
    assert answer["items"][1]["purchase"]["points_redeemed"] == 400
    assert answer["items"][1]["purchase"]["points_earned"] == 6
    assert answer["items"][2]["returned"]["purchase_id"] == \
        answer["items"][1]["purchase"]["purchase_id"]
    assert answer["items"][2]["returned"]["points_reversed"] == 6
    assert answer["items"][2]["returned"]["points_restored"] == 400
    assert await points(client, member) == 500


async def test_the_same_key_alone_and_in_a_batch_is_one_write(
    client: Client, actors: Actors, till: dict[str, str],
) -> None:
    member = await actors.member()
    item = bought(member.member_id, 4_000)
    alone = await client.post("/v1/pos/purchases", json=item["purchase"],
                              headers={**till, "Idempotency-Key": item["idempotency_key"]})
    assert alone.status_code == 201
    answer = (await client.post("/v1/pos/batches", json={"items": [item]},
                                headers=till)).json()
    assert answer["items"][0]["outcome"] == "replayed"
    assert answer["items"][0]["purchase"] == alone.json()
    changed = {**item, "purchase": {**item["purchase"], "total": 4_100,
                                    "lines": [{"sku": "S", "unit_price": 4_100}]}}
    reused = (await client.post("/v1/pos/batches", json={"items": [changed]},
                                headers=till)).json()
    assert reused["items"][0]["status"] == 422
    assert reused["items"][0]["problem"]["type"].endswith(":idempotency_key_reused")
    assert await points(client, member) == 40


async def test_a_return_names_its_purchase_by_id_or_receipt(
    client: Client, actors: Actors, till: dict[str, str],
) -> None:
    member = await actors.member()
    sale = bought(member.member_id, 10_000)
    first = (await client.post("/v1/pos/batches", json={"items": [sale]}, headers=till)).json()
    purchase_id = first["items"][0]["purchase"]["purchase_id"]
    items = [returned(2_000, purchase_id=purchase_id), returned(3_000, receipt="NO-SUCH"),
             returned(3_000, receipt=sale["purchase"]["receipt_id"])]
    answer = (await client.post("/v1/pos/batches", json={"items": items}, headers=till)).json()
    assert [a["status"] for a in answer["items"]] == [201, 404, 201]
    assert answer["items"][1]["problem"]["type"].endswith(":purchase_not_found")
    assert answer["items"][1]["problem"]["field"] == "receipt_id"
    assert await points(client, member) == 100 - 20 - 30


@pytest.mark.parametrize(("items", "why"), [
    ([], "empty"),
    ([{"kind": "purchase", "idempotency_key": "k"}], "no purchase"),
    ([{"kind": "refund", "idempotency_key": "k"}], "unknown kind"),
    ([{"kind": "return", "idempotency_key": "k", "returned": {"amount": 1}}], "no purchase named"),
])
async def test_a_malformed_batch_is_400(
    client: Client, till: dict[str, str], items: list[Any], why: str,
) -> None:
    response = await client.post("/v1/pos/batches", json={"items": items}, headers=till)
    assert response.status_code == 400, why
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_more_than_a_thousand_items_is_400_and_writes_nothing(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings,
) -> None:
    member = await actors.member()
    items = [bought(member.member_id, 100) for _ in range(1_001)]
    response = await client.post("/v1/pos/batches", json={"items": items}, headers=till)
    assert response.status_code == 400
    assert "1000" in response.text
    assert settings.database_url is not None
    assert (await ledger_rows(settings.database_url)).entries == []


async def test_two_items_under_one_key_is_422_and_writes_nothing(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings,
) -> None:
    member = await actors.member()
    items = [bought(member.member_id, 100, key="same"), bought(member.member_id, 200),
             bought(member.member_id, 300, key="same")]
    response = await client.post("/v1/pos/batches", json={"items": items}, headers=till)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith(":duplicate_idempotency_key")
    assert problem["field"] == "items[2].idempotency_key"
    assert "items 0 and 2" in problem["detail"]
    assert settings.database_url is not None
    assert (await ledger_rows(settings.database_url)).entries == []


async def test_batches_are_for_tills_only(client: Client, actors: Actors) -> None:
    member = await actors.member()
    response = await client.post("/v1/pos/batches", headers=member.headers,
                                 json={"items": [bought(member.member_id, 100)]})
    assert response.status_code in (401, 403)


# -- lanes: the items of different members written side by side -----------------------------


def _groups() -> tuple[float, float]:
    """Group commits written so far by this process, and the purchases they held."""
    return (REGISTRY.get_sample_value("loyalty_purchase_group_size_count") or 0.0,
            REGISTRY.get_sample_value("loyalty_purchase_group_size_sum") or 0.0)


async def test_a_batchs_purchases_of_different_members_share_group_commits(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings,
) -> None:
    """Written one after the other, each of a batch's purchases was a group of one; in lanes,
    the members' purchases gather in groups as live purchases do, each still exactly once."""
    members = [await actors.member() for _ in range(24)]
    items = [bought(members[i % 24].member_id, 1_000 + i) for i in range(240)]
    groups_before, grouped_before = _groups()
    answer = (await client.post("/v1/pos/batches", json={"items": items}, headers=till)).json()
    assert (answer["created"], answer["replayed"], answer["refused"]) == (240, 0, 0)
    groups_after, grouped_after = _groups()
    groups, grouped = groups_after - groups_before, grouped_after - grouped_before
    assert grouped == 240
    assert groups < 240
    database = settings.database_url
    assert database is not None
    check_invariants(await ledger_rows(database))
    for n, member in enumerate(members):
        assert await points(client, member) == sum((1_000 + i) // 100 for i in range(n, 240, 24))


async def test_a_members_items_keep_their_order_however_the_member_is_named(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings,
) -> None:
    """Each member's first sale earns the points their second redeems: written out of order,
    the redemption would be refused. The second names the member otherwise (by number, or by
    a record since merged into them), and a receipt two members share is the first's."""
    admin = bearer(await actors.staff("admin"))
    members = [await actors.member() for _ in range(12)]
    earlier = [await actors.member() for _ in range(4)]
    for survivor, merged in zip(members, earlier, strict=False):
        done = await client.post(f"/v1/members/{survivor.member_id}/merge",
                                 headers={**admin, "Idempotency-Key": fresh_key()},
                                 json={"from_member_id": merged.member_id})
        assert done.status_code == 200, done.text
    items: list[dict[str, Any]] = []
    for n, member in enumerate(members):
        # Side by side in the batch, so that two lanes would race: the second names the
        # member by the record merged into them (the first four) or by number.
        ref: dict[str, str] = {"id": earlier[n].member_id} if n < 4 else \
            {"number": member.member["member_number"]}
        second = bought(member.member_id, 1_000, redeem=400, minutes_ago=20)
        second["purchase"]["member"] = ref
        items += [bought(member.member_id, 50_000, minutes_ago=40), second]
    items.append(bought(members[0].member_id, 2_000, receipt="SHARED-1"))
    items.append(bought(members[1].member_id, 3_000, receipt="SHARED-1"))
    answer = (await client.post("/v1/pos/batches", json={"items": items}, headers=till)).json()
    outcomes = [(a["outcome"], a["status"]) for a in answer["items"]]
    assert outcomes == [("created", 201)] * 25 + [("refused", 409)], answer
    seconds = answer["items"][1:24:2]
    assert {a["purchase"]["points_redeemed"] for a in seconds} == {400}
    assert [a["purchase"]["member_id"] for a in seconds] == [m.member_id for m in members]
    assert answer["items"][25]["problem"]["type"].endswith(":receipt_already_recorded")
    assert [await points(client, m) for m in members] == [500 - 400 + 6 + 20] + \
        [500 - 400 + 6] * 11
    database = settings.database_url
    assert database is not None
    check_invariants(await ledger_rows(database))


# -- the overdraft policy (docs/decisions/0016-offline-tills.md) ----------------------------


async def test_an_offline_redemption_the_balance_still_covers_is_written(
    client: Client, actors: Actors, till: dict[str, str],
) -> None:
    member = await actors.member()
    seed = await client.post("/v1/pos/purchases", json=purchase_body(member.member_id, 50_000),
                             headers={**till, "Idempotency-Key": fresh_key()})
    assert seed.status_code == 201
    # Meanwhile, online elsewhere, the member spends some of the 500 points, not too many.
    spent = await client.post("/v1/pos/purchases",
                              json=purchase_body(member.member_id, 100, redeem_points=100),
                              headers={**till, "Idempotency-Key": fresh_key()})
    assert spent.status_code == 201
    answer = (await client.post("/v1/pos/batches", headers=till, json={"items": [
        bought(member.member_id, 1_000, redeem=300)]})).json()
    (item,) = answer["items"]
    assert (item["outcome"], item["status"]) == ("created", 201)
    assert item["purchase"]["points_redeemed"] == 300
    assert await points(client, member) == 500 - 100 - 300 + 7


async def test_an_offline_redemption_spent_elsewhere_meanwhile_is_refused_alone(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings,
) -> None:
    member = await actors.member()
    seed = await client.post("/v1/pos/purchases", json=purchase_body(member.member_id, 50_000),
                             headers={**till, "Idempotency-Key": fresh_key()})
    assert seed.status_code == 201
    # While the till was offline the member spent 400 of their 500 points at another till.
    spent = await client.post("/v1/pos/purchases",
                              json=purchase_body(member.member_id, 400, redeem_points=400),
                              headers={**till, "Idempotency-Key": fresh_key()})
    assert spent.status_code == 201
    assert settings.database_url is not None
    before = await ledger_rows(settings.database_url)
    over = bought(member.member_id, 1_000, redeem=300)
    items = [over, bought(member.member_id, 2_000)]
    answer = (await client.post("/v1/pos/batches", json={"items": items}, headers=till)).json()
    refused, after = answer["items"]
    assert (refused["outcome"], refused["status"]) == ("refused", 409)
    problem = refused["problem"]
    assert problem["type"] == "urn:loyalty:problem:insufficient_points"
    assert problem["field"] == "purchase.redeem_points"
    assert "300 points asked for, 100 available" in problem["detail"]
    assert "without redeem_points under a new key" in problem["detail"]
    assert (after["outcome"], after["status"]) == ("created", 201)
    # The refusal is the key's answer, sent alone too: a problem, as it was in the batch.
    alone = await client.post("/v1/pos/purchases", json=over["purchase"],
                              headers={**till, "Idempotency-Key": over["idempotency_key"]})
    assert alone.status_code == 409
    assert alone.headers["content-type"] == "application/problem+json"
    assert alone.json() == problem
    rows = await ledger_rows(settings.database_url)
    assert len(rows.entries) == len(before.entries) + 1  # the second sale's earn only
    assert [b["available"] for b in rows.balances] == [100 + 20]
    check_invariants(rows)
    # The till settles the difference and sends the sale again without the redemption.
    resent = {**over, "idempotency_key": fresh_key(),
              "purchase": {**over["purchase"], "redeem_points": 0}}
    again = (await client.post("/v1/pos/batches", json={"items": [resent]},
                               headers=till)).json()
    assert again["items"][0]["outcome"] == "created"
    assert await points(client, member) == 120 + 10
    # The points are there now, but the refusal is final under its key: the first batch sent
    # again is answered as it was and writes nothing.
    await client.post("/v1/pos/purchases", json=purchase_body(member.member_id, 50_000),
                      headers={**till, "Idempotency-Key": fresh_key()})
    resent_batch = (await client.post("/v1/pos/batches", json={"items": items},
                                      headers=till)).json()
    assert resent_batch["items"][0]["status"] == 409
    assert resent_batch["items"][0]["problem"] == problem
    assert resent_batch["items"][1]["outcome"] == "replayed"
    assert await points(client, member) == 130 + 500


# -- live purchases racing a batch --------------------------------------------------------

# Each step is a purchase (total in yen, points to redeem) of the one member.
_steps = st.lists(st.tuples(st.integers(min_value=100, max_value=20_000),
                            st.sampled_from([0, 0, 50, 150, 400])), min_size=1, max_size=12)


@hypothesis_settings(max_examples=12, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offline=_steps, live=_steps)
async def test_a_batch_interleaved_with_live_purchases_keeps_the_ledger_whole(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings,
    offline: list[tuple[int, int]], live: list[tuple[int, int]],
) -> None:
    member = await actors.member()
    seed = await client.post("/v1/pos/purchases", json=purchase_body(member.member_id, 30_000),
                             headers={**till, "Idempotency-Key": fresh_key()})
    assert seed.status_code == 201
    items = [bought(member.member_id, max(total, redeem), redeem=redeem)
             for total, redeem in offline]

    async def live_purchase(total: int, redeem: int) -> httpx.Response:
        await asyncio.sleep(0)
        return await client.post(
            "/v1/pos/purchases", headers={**till, "Idempotency-Key": fresh_key()},
            json=purchase_body(member.member_id, max(total, redeem), prefix="LIVE",
                               redeem_points=redeem))

    # Each request on its own connection from the pool, all at once.
    batch, *singles = await asyncio.gather(
        client.post("/v1/pos/batches", json={"items": items}, headers=till),
        *(live_purchase(total, redeem) for total, redeem in live))
    assert batch.status_code == 200, batch.text
    answers = batch.json()["items"]
    for answer in answers:
        assert answer["status"] in (201, 409), answer
        if answer["status"] == 409:
            assert answer["problem"]["type"].endswith(":insufficient_points")
    for single in singles:
        assert single.status_code in (201, 409), single.text
    created = sum(a["status"] == 201 for a in answers) + sum(
        s.status_code == 201 for s in singles)
    assert settings.database_url is not None
    rows = await ledger_rows(settings.database_url)
    check_invariants(rows)
    (counts,) = await query(settings.database_url, """
        select count(*) as purchases from purchases where member_id = $1""",
        member.member_uuid)
    assert counts["purchases"] == 1 + created
    # Every refused redemption was refused because the points were not there at its turn.
    redeemed = sum(-e["amount"] for e in rows.entries
                   if e["kind"] == "redeem" and e["member_id"] == member.member_uuid)
    assert redeemed == sum(a["purchase"]["points_redeemed"] for a in answers
                           if a["status"] == 201) + sum(
        s.json()["points_redeemed"] for s in singles if s.status_code == 201)

    again = await client.post("/v1/pos/batches", json={"items": items}, headers=till)
    assert [a["status"] for a in again.json()["items"]] == [a["status"] for a in answers]
    assert all(a["outcome"] == "replayed" for a in again.json()["items"]
               if a["status"] == 201)
    check_invariants(await ledger_rows(settings.database_url))


# -- no item makes a 500 ---------------------------------------------------------------------

_members = st.sampled_from([{"number": "0000000000"},
                            {"id": "00000000-0000-7000-8000-000000000000"},
                            {"card": "x" * 20}])
_purchases = st.fixed_dictionaries({
    "member": _members,
    "receipt_id": st.sampled_from(["FZ-1", "FZ-2", "FZ-3"]),
    "occurred_at": st.sampled_from(["2026-01-05T10:00:00+09:00", "2099-12-31T00:00:00Z"]),
    "total": st.integers(min_value=0, max_value=10_000_000_000),
    "currency": st.sampled_from(["JPY", "USD"]),
    "lines": st.lists(st.fixed_dictionaries({
        "sku": st.just("S"), "unit_price": st.integers(min_value=0, max_value=10_000_000),
        "quantity": st.integers(min_value=1, max_value=100)}), min_size=1, max_size=3),
    "redeem_points": st.integers(min_value=0, max_value=100_000_000),
    "discount": st.integers(min_value=0, max_value=10_000_000_000),
})
_items = st.lists(st.one_of(
    st.fixed_dictionaries({"kind": st.just("purchase"), "purchase": _purchases}),
    st.fixed_dictionaries({
        "kind": st.just("return"),
        "receipt_id": st.sampled_from(["FZ-1", "FZ-2", "NONE"]),
        "returned": st.one_of(
            st.fixed_dictionaries({"amount": st.integers(min_value=1,
                                                         max_value=10_000_000_000)}),
            st.fixed_dictionaries({"lines": st.lists(st.fixed_dictionaries({
                "line": st.integers(min_value=0, max_value=499),
                "quantity": st.integers(min_value=1, max_value=100_000)}),
                min_size=1, max_size=2)}))}),
), min_size=1, max_size=6)


@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=_items)
async def test_no_item_makes_a_500(
    client: Client, actors: Actors, till: dict[str, str], items: list[dict[str, Any]],
) -> None:
    member = await actors.member()
    for item in items:
        item["idempotency_key"] = fresh_key()
        if item["kind"] == "purchase" and "number" in item["purchase"]["member"]:
            # A real member, and a total that adds up: items that get as far as the ledger.
            purchase = item["purchase"]
            purchase["member"] = {"id": member.member_id}
            purchase["discount"] = purchase["redeem_points"] = 0
            purchase["total"] = sum(li["unit_price"] * li["quantity"] for li in purchase["lines"])
    response = await client.post("/v1/pos/batches", json={"items": items}, headers=till)
    assert response.status_code == 200, response.text
    for answer in response.json()["items"]:
        assert answer["status"] in (201, 404, 409, 422), answer
        assert (answer["outcome"] == "refused") == ("problem" in answer), answer
