"""Points as members and staff see them, adjustments, merges, duplicates, till lookup, and the
expiry and release commands, through the API on real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from api.app import create_app
from cli import main as cli
from loyalty.core.settings import Settings
from tests.conftest import serve
from tests.factories import PASSWORD, Actors, SignedUp, bearer, purchase_body, query
from tests.ledger_checks import check_invariants, ledger_rows

Client = httpx.AsyncClient
T = TypeVar("T")
_keys = itertools.count()


def purchase(member: dict[str, str], *, total: int = 10_000, redeem: int = 0,
             occurred_at: dt.datetime | None = None) -> dict[str, Any]:
    return purchase_body(
        member, total, prefix="P", occurred_at=occurred_at, redeem_points=redeem,
        lines=[{"sku": "TEA", "category": "drinks", "quantity": 1, "unit_price": total}])


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"points-{next(_keys)}"}


def at(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def buy(client: Client, till: dict[str, str], member: SignedUp, *, total: int = 10_000,
              redeem: int = 0) -> httpx.Response:
    return await client.post("/v1/pos/purchases",
                             json=purchase({"id": member.member_id}, total=total, redeem=redeem),
                             headers={**till, **key()})


async def set_rules(client: Client, actors: Actors, rules: dict[str, Any]) -> dict[str, Any]:
    marketer = await actors.staff("marketer")
    response = await client.put("/v1/earning-rules", json=rules, headers=bearer(marketer))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def all_pages(client: Client, path: str, headers: dict[str, str], limit: int,
                    size: Callable[[list[Any]], int] = len) -> list[dict[str, Any]]:
    """Every item of a keyset-paginated list; ``size`` measures a page against ``limit``."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert 0 < size(page["items"]) <= limit
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries
    raise AssertionError("pagination never ended")


@pytest.fixture
async def till(actors: Actors) -> dict[str, str]:
    api_key, _ = await actors.terminal("SHIBUYA-01")
    return bearer(api_key)


# -- the member's own history and entries ----------------------------------------------------


async def test_history_pages_through_every_entry_once_newest_first_with_reasons(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    member = await actors.member()
    other = await actors.member()
    for total in (10_000, 2_000, 3_000):
        assert (await buy(client, till, member, total=total)).status_code == 201
    # A redemption and an earn in one purchase: two entries with the same time.
    assert (await buy(client, till, member, total=1_000, redeem=50)).status_code == 201
    visit = await client.post("/v1/me/actions", json={"type": "site_visit"},
                              headers=member.headers)
    assert visit.json()["points"] == 1
    assert (await buy(client, till, other)).status_code == 201

    paged = await all_pages(client, "/v1/me/points/history", member.headers, limit=2)

    rows = await ledger_rows(settings.database_url)
    mine = [e for e in rows.entries if e["member_id"] == member.member_uuid]
    newest_first = sorted(mine, key=lambda e: (e["created_at"], e["entry_id"]), reverse=True)
    assert [e["entry_id"] for e in paged] == [str(e["entry_id"]) for e in newest_first]
    assert len(paged) == 6
    assert len({e["entry_id"] for e in paged}) == len(paged)
    for entry in paged:
        assert entry["member_id"] == member.member_id
        assert len(entry["reason"]) >= 5, entry
        assert entry["reason"] != entry["kind"], entry
    assert sorted(e["kind"] for e in paged) == ["earn"] * 5 + ["redeem"]
    redeem = next(e for e in paged if e["kind"] == "redeem")
    assert "SHIBUYA-01" in redeem["reason"]
    assert redeem["amount"] == -50


async def test_history_refuses_a_cursor_it_did_not_make(client: Client,
                                                        actors: Actors) -> None:
    member = await actors.member()
    response = await client.get("/v1/me/points/history", params={"cursor": "not-a-cursor"},
                                headers=member.headers)
    assert 400 <= response.status_code < 500


async def test_earn_entry_shows_its_trace_and_lot_and_is_hidden_from_other_members(
    client: Client, actors: Actors, till: dict[str, str]
) -> None:
    member = await actors.member()
    stranger = await actors.member()
    recorded = (await buy(client, till, member, total=12_300)).json()
    history = (await client.get("/v1/me/points/history", headers=member.headers)).json()
    earn = next(e for e in history["items"] if e["kind"] == "earn")
    assert earn["purchase_id"] == recorded["purchase_id"]

    detail = await client.get(f"/v1/me/points/entries/{earn['entry_id']}",
                              headers=member.headers)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["amount"] == 123
    assert body["rule_version"] == 1
    assert body["trace"]["rule_version"] == 1
    assert body["trace"]["steps"][0]["rule"] == "base"
    assert sum(step["points"] for step in body["trace"]["steps"]) == 123
    [lot] = body["lots"]
    assert lot["points"] == 123
    # The default rules keep points for 12 months.
    expires = at(lot["expires_at"])
    now = dt.datetime.now(dt.UTC)
    assert now + dt.timedelta(days=360) < expires < now + dt.timedelta(days=372)

    theirs = await client.get(f"/v1/me/points/entries/{earn['entry_id']}",
                              headers=stranger.headers)
    assert theirs.status_code == 404


async def test_summary_shows_pending_release_and_what_expires_within_90_days(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    member = await actors.member()
    # Earned under the defaults: available now, expiring in a year (outside the window).
    assert (await buy(client, till, member, total=10_000)).status_code == 201
    await set_rules(client, actors, {"pending_days": 7,
                                     "expiry": {"type": "rolling", "months": 2}})
    before = dt.datetime.now(dt.UTC)
    bought = await buy(client, till, member, total=20_000)
    assert bought.status_code == 201, bought.text
    assert bought.json()["balance"] == {"available": 100, "pending": 200}

    summary = (await client.get("/v1/me/points", headers=member.headers)).json()
    assert summary["available"] == 100
    assert summary["pending"] == 200
    [pending] = summary["pending_release"]
    assert pending["points"] == 200
    release = at(pending["available_at"])
    assert before + dt.timedelta(days=7) - dt.timedelta(minutes=5) < release
    assert release < dt.datetime.now(dt.UTC) + dt.timedelta(days=7, minutes=5)
    [expiring] = summary["expiring"]
    assert expiring["points"] == 200
    assert before + dt.timedelta(days=55) < at(expiring["expires_at"]) \
        < before + dt.timedelta(days=90)

    # Only the released 100 can be spent.
    spend = await buy(client, till, member, total=20_000, redeem=150)
    assert spend.status_code == 409
    assert spend.json()["type"].endswith(":insufficient_points")
    rows = await ledger_rows(settings.database_url)
    assert not [e for e in rows.entries if e["kind"] == "redeem"]
    check_invariants(rows)


# -- staff: adjustments, balance and history --------------------------------------------------


async def test_staff_adjustments_add_and_take_points_with_a_reason_and_are_audited(
    client: Client, actors: Actors, settings: Settings
) -> None:
    member = await actors.member()
    support = bearer(await actors.staff("support"))
    path = f"/v1/members/{member.member_id}/adjustments"

    added = await client.post(path, json={"points": 500, "reason": "Goodwill: late delivery"},
                              headers={**support, **key()})
    assert added.status_code == 201, added.text
    assert added.json()["balance"] == {"available": 500, "pending": 0}
    taken = await client.post(path, json={"points": -120, "reason": "Duplicate credit"},
                              headers={**support, **key()})
    assert taken.status_code == 201, taken.text
    assert taken.json()["balance"]["available"] == 380

    too_much = await client.post(path, json={"points": -381, "reason": "Correction"},
                                 headers={**support, **key()})
    assert too_much.status_code == 409
    assert too_much.json()["type"].endswith(":insufficient_points")
    for bad in ({"points": 10, "reason": "ok"}, {"points": 10}, {"points": 10, "reason": ""},
                {"points": 10, "reason": "   "}, {"points": 10, "reason": "  x  "},
                {"points": 0, "reason": "nothing at all"}):
        refused = await client.post(path, json=bad, headers={**support, **key()})
        assert 400 <= refused.status_code < 500, (bad, refused.text)

    points = (await client.get(f"/v1/members/{member.member_id}/points",
                               headers=support)).json()
    assert points["available"] == 380
    history = (await client.get(f"/v1/members/{member.member_id}/points/history",
                                headers=support)).json()["items"]
    assert [(e["kind"], e["amount"], e["reason"], e["source"]) for e in history] == [
        ("adjust", -120, "Duplicate credit", "staff"),
        ("adjust", 500, "Goodwill: late delivery", "staff"),
    ]
    assert [e["entry_id"] for e in history] == [taken.json()["entry_id"],
                                                added.json()["entry_id"]]

    conn = await asyncpg.connect(settings.database_url)
    try:
        audits = await conn.fetch(
            "select details from audit_log where action = 'points.adjust' and subject_id = $1"
            " order by recorded_at, audit_id", member.member_uuid)
    finally:
        await conn.close()
    details = [a["details"] if isinstance(a["details"], dict) else json.loads(a["details"])
               for a in audits]
    assert [(d["points"], d["reason"]) for d in details] == [
        (500, "Goodwill: late delivery"), (-120, "Duplicate credit")]
    check_invariants(await ledger_rows(settings.database_url))


# -- merging members -------------------------------------------------------------------------


async def test_merge_moves_points_and_history_and_retires_the_merged_member(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    survivor = await actors.member(email="hanako@example.com")
    merged = await actors.member(email="hanako.old@example.com")
    assert (await buy(client, till, survivor, total=10_000)).status_code == 201
    assert (await buy(client, till, merged, total=25_000)).status_code == 201
    assert (await buy(client, till, merged, total=5_000, redeem=30)).status_code == 201
    merged_history = (await client.get("/v1/me/points/history",
                                       headers=merged.headers)).json()["items"]
    support = bearer(await actors.staff("support"))

    response = await client.post(f"/v1/members/{survivor.member_id}/merge",
                                 json={"from_member_id": merged.member_id},
                                 headers={**support, **key()})
    assert response.status_code == 200, response.text
    assert response.json()["member_id"] == survivor.member_id

    points = (await client.get("/v1/me/points", headers=survivor.headers)).json()
    # 4,970 paid in money earns 49.
    assert points["available"] == 100 + (250 - 30 + 49)
    assert points["lifetime_earned"] == 100 + 250 + 49
    assert points["lifetime_redeemed"] == 30
    history = await all_pages(client, "/v1/me/points/history", survivor.headers, limit=3)
    ids = {e["entry_id"] for e in history}
    assert {e["entry_id"] for e in merged_history} <= ids
    transfers = sorted(e["amount"] for e in history if e["kind"] == "transfer")
    assert transfers == [-269, 269]
    # The merged member's entries keep their member and stay explained.
    earn = next(e for e in merged_history if e["kind"] == "earn")
    detail = await client.get(f"/v1/me/points/entries/{earn['entry_id']}",
                              headers=survivor.headers)
    assert detail.status_code == 200
    assert detail.json()["member_id"] == merged.member_id

    gone = (await client.get(f"/v1/members/{merged.member_id}", headers=support)).json()
    assert gone["status"] == "merged"
    assert gone["merged_into"] == survivor.member_id
    login = await client.post("/v1/auth/member/login",
                              json={"email": "hanako.old@example.com", "password": PASSWORD})
    assert login.status_code == 401
    refresh = await client.post("/v1/auth/refresh",
                                json={"refresh_token": merged.refresh_token})
    assert refresh.status_code == 401
    check_invariants(await ledger_rows(settings.database_url))


async def test_merging_a_member_into_themselves_or_twice_is_refused(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    survivor = await actors.member()
    merged = await actors.member()
    third = await actors.member()
    assert (await buy(client, till, merged, total=4_000)).status_code == 201
    support = bearer(await actors.staff("support"))

    def merge(into: SignedUp, source: SignedUp) -> Awaitable[httpx.Response]:
        return client.post(f"/v1/members/{into.member_id}/merge",
                           json={"from_member_id": source.member_id},
                           headers={**support, **key()})

    itself = await merge(survivor, survivor)
    assert itself.status_code == 422
    assert (await merge(survivor, merged)).status_code == 200
    before = await ledger_rows(settings.database_url)
    again = await merge(survivor, merged)
    assert again.status_code == 409
    assert again.json()["type"].endswith(":already_merged")
    elsewhere = await merge(third, merged)
    assert elsewhere.status_code == 409
    into_merged = await merge(merged, third)
    assert into_merged.status_code == 409
    after = await ledger_rows(settings.database_url)
    assert after == before
    check_invariants(after)
    points = (await client.get("/v1/me/points", headers=survivor.headers)).json()
    assert points["available"] == 40


async def test_till_credits_a_purchase_for_a_merged_number_to_the_survivor(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    survivor = await actors.member(name="生存 者")
    merged = await actors.member(name="旧 会員")
    assert (await buy(client, till, survivor, total=3_000)).status_code == 201
    assert (await buy(client, till, merged, total=7_000)).status_code == 201
    support = bearer(await actors.staff("support"))
    assert (await client.post(f"/v1/members/{survivor.member_id}/merge",
                              json={"from_member_id": merged.member_id},
                              headers={**support, **key()})).status_code == 200

    number = merged.member["member_number"]
    lookup = await client.get("/v1/pos/members/lookup", params={"number": number},
                              headers=till)
    assert lookup.status_code == 200, lookup.text
    assert lookup.json() == {"member_id": survivor.member_id, "display_name": "生存 者",
                             "tier": None, "available_points": 100}
    recorded = await client.post("/v1/pos/purchases",
                                 json=purchase({"number": number}, total=5_000),
                                 headers={**till, **key()})
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["member_id"] == survivor.member_id
    assert recorded.json()["balance"]["available"] == 150
    rows = await ledger_rows(settings.database_url)
    latest = max((e for e in rows.entries if e["kind"] == "earn"),
                 key=lambda e: (e["created_at"], e["entry_id"]))
    assert latest["member_id"] == survivor.member_uuid
    assert [b["available"] for b in rows.balances
            if b["member_id"] == merged.member_uuid] == [0]
    check_invariants(rows)


# -- duplicates ------------------------------------------------------------------------------


async def test_duplicates_finds_one_person_written_two_ways_and_one_mailbox(
    client: Client, actors: Actors
) -> None:
    half = await actors.member(name="Taro Yamada", birth_date="1985-04-01",
                               email="taro+shop@example.com")
    full = await actors.member(name="ＴＡＲＯ　ＹＡＭＡＤＡ", birth_date="1985-04-01",
                               email="yamada.t@example.com")
    hiragana = await actors.member(name="山田 花子", name_kana="やまだ はなこ",
                                   birth_date="1990-12-24")
    katakana = await actors.member(name="山田 華子", name_kana="ﾔﾏﾀﾞ ﾊﾅｺ",
                                   birth_date="1990-12-24")
    mailbox = await actors.member(name="Someone Else", email="taro@example.com")
    # Same name, another birth date: another person.
    await actors.member(name="Taro Yamada", birth_date="1999-09-09")
    support = bearer(await actors.staff("support"))

    response = await client.get("/v1/members/duplicates", headers=support)
    assert response.status_code == 200, response.text
    groups = {(g["reason"], tuple(sorted(m["member_id"] for m in g["members"])))
              for g in response.json()["items"]}
    assert groups == {
        ("same name and birth date", tuple(sorted([half.member_id, full.member_id]))),
        ("same reading and birth date",
         tuple(sorted([hiragana.member_id, katakana.member_id]))),
        ("same mailbox", tuple(sorted([half.member_id, mailbox.member_id]))),
    }


async def test_duplicates_paged_one_group_at_a_time_finds_every_group(
    client: Client, actors: Actors
) -> None:
    # One member in two groups: same name and birth date, and same mailbox.
    await actors.member(name="Jiro Sato", birth_date="1980-01-01", email="jiro+a@example.com")
    await actors.member(name="ｊｉｒｏ ｓａｔｏ", birth_date="1980-01-01",
                        email="jiro@example.com")
    await actors.member(name="Saburo Ito", birth_date="1970-07-07")
    await actors.member(name="saburo ito", birth_date="1970-07-07")
    support = bearer(await actors.staff("support"))

    everything = (await client.get("/v1/members/duplicates", headers=support)).json()["items"]
    assert len(everything) == 3

    def members_heading_groups(groups: list[dict[str, Any]]) -> int:
        return len({g["members"][0]["member_id"] for g in groups})

    paged = await all_pages(client, "/v1/members/duplicates", support, limit=1,
                            size=members_heading_groups)
    assert paged == everything


# -- till lookup -----------------------------------------------------------------------------


async def test_till_lookup_by_number_or_phone_shows_the_summary_without_contacts(
    client: Client, actors: Actors, till: dict[str, str]
) -> None:
    member = await actors.member(name="佐藤 花子", email="hanako.sato@example.com",
                                 phone="090-1234-5678")
    assert (await buy(client, till, member, total=4_200)).status_code == 201
    expected = {"member_id": member.member_id, "display_name": "佐藤 花子", "tier": None,
                "available_points": 42}
    number = member.member["member_number"]
    for params in ({"number": number}, {"phone": "090-1234-5678"},
                   {"phone": "０９０－１２３４－５６７８"}):
        response = await client.get("/v1/pos/members/lookup", params=params, headers=till)
        assert response.status_code == 200, (params, response.text)
        assert response.json() == expected
        for secret in ("hanako.sato@example.com", "+819012345678", "090-1234-5678"):
            assert secret not in response.text


async def test_till_lookup_takes_exactly_one_known_identifier(
    client: Client, actors: Actors, till: dict[str, str]
) -> None:
    member = await actors.member(phone="080-2345-6789")
    card = (await client.get("/v1/me/card", headers=member.headers)).json()["token"]
    number = member.member["member_number"]
    for params in ({"number": number, "phone": "080-2345-6789"},
                   {"card": card, "number": number}, {"card": card, "phone": "080-2345-6789"},
                   {}):
        response = await client.get("/v1/pos/members/lookup", params=params, headers=till)
        assert 400 <= response.status_code < 500, params
        assert response.status_code != 404, params
    unknown = "9" * len(number) if number != "9" * len(number) else "8" * len(number)
    missing = await client.get("/v1/pos/members/lookup", params={"number": unknown},
                               headers=till)
    assert missing.status_code == 404
    no_phone = await client.get("/v1/pos/members/lookup", params={"phone": "090-9999-0000"},
                                headers=till)
    assert no_phone.status_code == 404


# -- the expiry and release commands ---------------------------------------------------------


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("LOYALTY_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("LOYALTY_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("LOYALTY_DATA_DIR", str(tmp_path / "cli"))
    # The CLI installs a SIGTERM handler for the embedded servers; keep the test runner's.
    previous = signal.getsignal(signal.SIGTERM)
    yield settings
    signal.signal(signal.SIGTERM, previous)


def with_api(settings: Settings, work: Callable[[Client, Actors], Awaitable[T]]) -> T:
    """Run ``work`` against the app in a loop of its own, so the (synchronous) CLI can run
    between two calls."""

    async def run() -> T:
        async with serve(create_app(settings)) as client:
            return await work(client, Actors(client, settings))

    return asyncio.run(run())


def test_expire_command_expires_lots_past_their_expiry_once(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async def earn(client: Client, actors: Actors) -> SignedUp:
        await set_rules(client, actors, {"expiry": {"type": "rolling", "months": 1}})
        member = await actors.member()
        api_key, _ = await actors.terminal("EXPIRY-01")
        assert (await buy(client, bearer(api_key), member, total=12_000)).status_code == 201
        return member

    member = with_api(cli_env, earn)
    now = dt.datetime.now(dt.UTC)

    cli.main(["points", "expire", "--now", (now + dt.timedelta(days=1)).isoformat()])
    assert capsys.readouterr().out.startswith("0 points expired")

    cli.main(["points", "expire", "--now", (now + dt.timedelta(days=70)).isoformat()])
    assert "120 points expired from 1 lots of 1 members" in capsys.readouterr().out

    async def after(client: Client, actors: Actors) -> tuple[dict[str, Any], list[Any]]:
        points = (await client.get("/v1/me/points", headers=member.headers)).json()
        history = (await client.get("/v1/me/points/history",
                                    headers=member.headers)).json()["items"]
        return points, history

    points, history = with_api(cli_env, after)
    assert points["available"] == 0
    assert points["lifetime_expired"] == 120
    assert [(e["kind"], e["amount"]) for e in history] == [("expire", -120), ("earn", 120)]
    assert history[0]["reason"] == "points expired"

    cli.main(["points", "expire", "--now", (now + dt.timedelta(days=71)).isoformat()])
    assert capsys.readouterr().out.startswith("0 points expired from 0 lots")
    rows = asyncio.run(ledger_rows(cli_env.database_url))
    assert [e["amount"] for e in rows.entries if e["kind"] == "expire"] == [-120]
    check_invariants(rows)


def test_release_command_makes_pending_points_spendable(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async def earn(client: Client, actors: Actors) -> tuple[SignedUp, str]:
        await set_rules(client, actors, {"pending_days": 7})
        member = await actors.member()
        api_key, _ = await actors.terminal("RELEASE-01")
        assert (await buy(client, bearer(api_key), member, total=8_000)).status_code == 201
        spend = await buy(client, bearer(api_key), member, total=1_000, redeem=10)
        assert spend.status_code == 409
        assert spend.json()["type"].endswith(":insufficient_points")
        return member, api_key

    member, api_key = with_api(cli_env, earn)
    now = dt.datetime.now(dt.UTC)

    cli.main(["points", "release", "--now", (now + dt.timedelta(days=6)).isoformat()])
    assert capsys.readouterr().out.startswith("0 points released")
    cli.main(["points", "release", "--now", (now + dt.timedelta(days=8)).isoformat()])
    assert "80 points released from 1 lots of 1 members" in capsys.readouterr().out
    cli.main(["points", "release", "--now", (now + dt.timedelta(days=9)).isoformat()])
    assert capsys.readouterr().out.startswith("0 points released")

    async def spend(client: Client, actors: Actors) -> tuple[httpx.Response, dict[str, Any]]:
        spent = await buy(client, bearer(api_key), member, total=1_000, redeem=10)
        points = (await client.get("/v1/me/points", headers=member.headers)).json()
        return spent, points

    spent, points = with_api(cli_env, spend)
    assert spent.status_code == 201, spent.text
    assert points["available"] == 70
    check_invariants(asyncio.run(ledger_rows(cli_env.database_url)))


async def test_the_members_points_are_answered_from_the_read_model_as_the_staff_see_them(
    client: Client, actors: Actors, till: dict[str, str], settings: Settings
) -> None:
    member = await actors.member()
    assert (await buy(client, till, member, total=12_000)).status_code == 201
    first = await client.get("/v1/me/points", headers=member.headers)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    # Stored as answered, and answered again from the stored row.
    assert settings.database_url is not None
    [stored] = await query(settings.database_url,
                           "select body from point_summaries where member_id = $1",
                           member.member_id)
    assert stored["body"] == first.content
    again = await client.get("/v1/me/points", headers=member.headers)
    assert again.content == first.content
    assert again.json()["available"] == 120
    support = await actors.staff("support")
    staff = await client.get(f"/v1/members/{member.member_id}/points", headers=bearer(support))
    assert staff.json() == first.json()
    # A purchase moves the balance's version: the next read is computed again.
    assert (await buy(client, till, member, total=3_000)).status_code == 201
    after = await client.get("/v1/me/points", headers=member.headers)
    assert after.json()["available"] == 150


async def test_the_documented_answer_of_the_members_points_is_still_the_summary(
    client: Client,
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    answer = document["paths"]["/v1/me/points"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PointsSummary"}
