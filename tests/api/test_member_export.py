"""A member's data export (issue 16, access and portability): one JSON document of everything
held about the member, streamed, from the member's app or for a request received by support
(audited); every table of the database with a ``member_id`` is either in it or named in
docs/privacy.md with the reason it is left out."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar

from loyalty.members.export import CHUNK_BYTES, EXPORTED_TABLES
from schemas.members import MemberExport
from tests.factories import PASSWORD, Actors, SignedUp, bearer, purchase_body, query

Client = httpx.AsyncClient
ROOT = Path(__file__).resolve().parents[2]
_n = itertools.count()


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"export-{next(_n)}"}


@dataclass
class Seeded:
    """A member with data in every table the export reads, and the callers around them."""

    client: Client
    database_url: str
    member: SignedUp
    other: SignedUp
    support: dict[str, str]
    support_id: str
    marketer: dict[str, str]
    till: dict[str, str]
    names: dict[str, Any]


async def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json()) if response.content else {}


@pytest.fixture
async def seeded(client: Client, actors: Actors, settings: Any) -> Seeded:
    database_url = settings.database_url
    member = await actors.member(email="hana@example.com", phone="090-3333-4444",
                                 name_kana="ハナ", postal_code="150-0001",
                                 birth_date="1990-05-05")
    other = await actors.member(email="other@example.com")
    marketer = bearer(await actors.staff("marketer"))
    support = bearer(await actors.staff("support", email="desk@staff.example"))
    support_id = str((await query(database_url, "select staff_id from staff where email ="
                                  " 'desk@staff.example'"))[0]["staff_id"])
    till_key, terminal_id = await actors.terminal("SHIBUYA")
    till = bearer(till_key)
    client_ = client

    # Consent given, then withdrawn.
    for granted in (True, False):
        await _ok(await client_.put("/v1/me/consents", headers=member.headers, json={
            "consents": [{"purpose": "marketing_email", "granted": granted,
                          "text_version": "2026-01"}]}))
    # A tier reached with a purchase, with a welcome coupon; a coupon issued and redeemed.
    welcome = await _ok(await client_.post("/v1/coupon-templates", headers=marketer, json={
        "name": "Silver welcome", "discount": {"type": "fixed_amount", "amount": 50}}), 201)
    await _ok(await client_.put("/v1/tiers", headers=marketer, json={"levels": [
        {"code": "SILVER", "name": "Silver", "threshold": 3_000,
         "coupon_template_id": welcome["template_id"]}]}))
    gift = await _ok(await client_.post("/v1/coupon-templates", headers=marketer, json={
        "name": "¥100 off", "discount": {"type": "fixed_amount", "amount": 100},
        "stackable": True}), 201)
    await _ok(await client_.post(f"/v1/coupon-templates/{gift['template_id']}/issue",
                                 headers={**marketer, **_key()},
                                 json={"members": [member.member_id]}), 201)
    wallet = await _ok(await client_.get("/v1/me/coupons", headers=member.headers))
    coupon_id = wallet["items"][0]["coupon_id"]
    codes = await _ok(await client_.post(f"/v1/coupon-templates/{gift['template_id']}/codes",
                                         headers=marketer, json={"count": 1}), 201)
    first = await _ok(await client_.post("/v1/pos/purchases", headers={**till, **_key()},
                                          json=purchase_body(
        member.member_id, 4_800, lines=[{"sku": "COAT", "unit_price": 5_000}],
        coupons=[{"coupon_id": coupon_id}, {"code": codes["codes"][0]}])), 201)
    assert first["tier_reached"] == "SILVER"
    await _ok(await client_.post(f"/v1/pos/purchases/{first['purchase_id']}/returns",
                                 headers={**till, **_key()}, json={"amount": 1_000}), 201)
    await _ok(await client_.post("/v1/pos/purchases", headers={**till, **_key()},
                                 json=purchase_body(other.member_id, 700)), 201)
    await _ok(await client_.post("/v1/me/actions", headers=member.headers,
                                 json={"type": "site_visit"}))
    # A store event under way: a seat reserved and checked in at the till.
    now = dt.datetime.now(dt.UTC)
    event = await _ok(await client_.post("/v1/events", headers=marketer, json={
        "name": "Autumn tasting", "place": "2F", "capacity": 10, "points": 5,
        "invitation_only": False, "starts_at": (now - dt.timedelta(minutes=30)).isoformat(),
        "ends_at": (now + dt.timedelta(hours=2)).isoformat()}), 201)
    await _ok(await client_.post(f"/v1/me/events/{event['event_id']}/rsvp",
                                 headers=member.headers), 201)
    await _ok(await client_.post(f"/v1/pos/events/{event['event_id']}/checkins",
                                 headers={**till, **_key()},
                                 json={"member": {"id": member.member_id}}), 201)
    # A saved segment the member is in, and one they are not.
    await _ok(await client_.post("/v1/segments", headers=marketer, json={
        "name": "Silver members", "definition": {"type": "tier", "codes": ["SILVER"]}}), 201)
    await _ok(await client_.post("/v1/segments", headers=marketer, json={
        "name": "Suspended", "definition": {"type": "status", "statuses": ["suspended"]}}), 201)
    # Suspended and reinstated by support; and read by support.
    for status in ("suspended", "active"):
        await _ok(await client_.patch(f"/v1/members/{member.member_id}",
                                      headers={**support, **_key()}, json={"status": status}))
    await _ok(await client_.get(f"/v1/members/{member.member_id}", headers=support))
    number = member.member["member_number"]
    await _ok(await client_.get(f"/v1/pos/members/lookup?number={number}", headers=till))
    # An old record of the same person, merged into this one.
    old = await actors.member(email="hana.old@example.com")
    await _ok(await client_.post(f"/v1/members/{member.member_id}/merge",
                                 headers={**support, **_key()},
                                 json={"from_member_id": old.member_id}))
    # Signed in again after the suspension ended the first session.
    login = await _ok(await client_.post("/v1/auth/member/login", json={
        "email": "hana@example.com", "password": "correct horse battery"}))
    member.access_token = login["access_token"]

    # What only jobs write, written as they would: scores, a birthday reward, a reminder of
    # expiring points, a campaign's control group and an invitation.
    m = member.member_uuid
    await query(database_url, """
        with fit as (
            insert into churn_model_fits (fitted_at, as_of, parameters, members, converged)
            values (now(), now(), '{}', 1, true) returning fit_id
        ), rfm as (
            insert into member_rfm (member_id, last_purchase_at, recency_days, frequency,
                                    monetary, recency_score, frequency_score, monetary_score,
                                    window_days, computed_at)
            values ($1, now(), 0, 1, 3800, 5, 3, 4, 365, now())
        ), risk as (
            insert into member_at_risk (member_id, flagged_at, last_purchase_at, purchases,
                                        typical_interval_days, days_since, as_of)
            values ($1, now(), now(), 2, 10, 21, now())
        ), reminder as (
            insert into expiry_reminders (member_id, expires_on, sent_at)
            values ($1, current_date + 30, now())
        )
        insert into member_churn_scores (member_id, method, p_alive, expected_purchases_90d,
                                         predicted_value_12m, scored_at, fit_id)
        select $1, 'model', 0.8, 1.5, 12000, now(), fit_id from fit
        """, m)
    await query(database_url, """
        with entry as (
            insert into point_entries (member_id, entry_id, kind, amount, reason, source,
                                       created_at)
            values ($1, uuid_v7(), 'earn', 0 + 100, 'birthday bonus', 'system', now())
            returning entry_id
        ), lot as (
            insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,
                                    available_at, released_at)
            select $1, uuid_v7(), entry_id, 100, 100, now(), now(), now() from entry
        ), balance as (
            update point_balances set available = available + 100,
                   lifetime_earned = lifetime_earned + 100, version = version + 1
             where member_id = $1
        )
        insert into birthday_rewards (member_id, year, birthday, rewarded_at, points, entry_id)
        select $1, 2026, '2026-05-05', now(), 100, entry_id from entry
        """, m)
    campaign = await _ok(await client_.post("/v1/campaigns", headers=marketer, json={
        "name": "Holdout", "members": [other.member_id],
        "action": {"type": "issue_coupon", "template_id": gift["template_id"]}}), 201)
    await _ok(await client_.post(f"/v1/campaigns/{campaign['campaign_id']}/launch",
                                 headers={**marketer, **_key()}))
    await query(database_url, """
        insert into campaign_members (member_id, campaign_id, arm, status_at_launch)
        values ($1, $2, 'control', 'active')
        """, m, campaign["campaign_id"])
    await query(database_url, """
        insert into event_invitations (member_id, event_id, campaign_id, invited_at)
        values ($1, $2, $3, now())
        """, m, event["event_id"], campaign["campaign_id"])
    # A code to prove the phone, a password reset asked for, and an erasure asked for and
    # thought better of.
    assert (await client_.post("/v1/me/verification", headers=member.headers,
                               json={"channel": "phone"})).status_code == 202
    assert (await client_.post("/v1/auth/member/password-reset",
                               json={"email": member.member["email"]})).status_code == 202
    await _ok(await client_.request("DELETE", "/v1/me", headers=member.headers,
                                    json={"password": PASSWORD}), 202)
    await _ok(await client_.post("/v1/me/erasure/cancel", headers=member.headers))
    return Seeded(client, database_url, member, other, support, support_id, marketer, till, {
        "event": event["event_id"], "campaign": campaign["campaign_id"],
        "purchase": first["purchase_id"], "terminal": terminal_id})


def _document(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    # The document matches its schema in the OpenAPI, section by section.
    msgspec.json.decode(response.content, type=MemberExport)
    return dict(response.json())


def _at(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for key in path.split("."):
        value = value[key]
    return value


async def test_a_member_exports_everything_held_about_them(seeded: Seeded) -> None:
    member = seeded.member
    response = await seeded.client.get("/v1/me/export", headers=member.headers)
    document = _document(response)
    number = member.member["member_number"]
    assert re.fullmatch(rf'attachment; filename="loyalty-export-{number}-\d{{8}}\.json"',
                        response.headers["content-disposition"])

    assert (document["format"], document["member_id"]) == ("loyalty.member_export",
                                                           member.member_id)
    profile = document["profile"]
    assert (profile["email"], profile["phone"], profile["name_kana"], profile["postal_code"],
            profile["birth_date"]) == ("hana@example.com", "+819033334444", "ハナ",
                                       "150-0001", "1990-05-05")
    assert profile["has_password"] is True
    assert "password_hash" not in profile

    assert [(r["email"], r["status"]) for r in document["merged_records"]] == [
        ("hana.old@example.com", "merged")]
    consents = document["consents"]
    assert [(c["purpose"], c["granted"]) for c in consents["history"]] == [
        ("marketing_email", True), ("marketing_email", False)]
    assert [(c["purpose"], c["granted"]) for c in consents["current"]] == [
        ("marketing_email", False)]

    (first, *_) = document["purchases"]
    assert (first["purchase_id"], first["total"], first["store_code"]) == (
        seeded.names["purchase"], 4_800, "SHIBUYA")
    assert [line["sku"] for line in first["lines"]] == ["COAT"]
    assert [r["amount"] for r in document["returns"]] == [1_000]
    points = document["points"]
    earned = [e for e in points["entries"] if e["purchase_id"] == first["purchase_id"]
              and e["kind"] == "earn"]
    assert [e["reason"].startswith("Purchase at") for e in earned] == [True]
    assert "base" in [step["rule"] for step in earned[0]["trace"]["steps"]]
    assert {e["kind"] for e in points["entries"]} >= {"earn", "reverse"}
    assert sum(e["amount"] for e in points["entries"]) == \
        points["balance"]["available"] + points["balance"]["pending"] == \
        sum(lot["remaining"] for lot in points["lots"])
    assert points["balance"]["tier"] == "SILVER"

    coupons = document["coupons"]
    assert sorted(c["name"] for c in coupons["wallet"]) == ["Silver welcome", "¥100 off"]
    assert sorted(r["discount"] for r in coupons["redemptions"]) == [100, 100]
    assert [c["name"] for c in coupons["codes"]] == ["¥100 off"]
    assert [(t["from_tier"], t["to_tier"]) for t in document["tier_history"]] == [
        (None, "SILVER")]
    assert [r["name"] for r in document["events"]["reservations"]] == ["Autumn tasting"]
    assert [c["points"] for c in document["events"]["checkins"]] == [5]
    assert [s["name"] for s in document["segments"]] == ["Silver members"]
    assert [(c["name"], c["arm"]) for c in document["campaigns"]] == [("Holdout", "control")]
    assert document["scores"]["rfm"]["monetary_score"] == 4
    assert document["scores"]["churn"]["p_alive"] == 0.8
    assert [(s["from_status"], s["to_status"]) for s in document["status_history"]] == [
        ("active", "suspended"), ("suspended", "active")]
    sessions = document["sessions"]
    # The first session ended with the suspension; the sign-in after it is open.
    assert [s["revoked_at"] is None for s in sessions] == [False, True]
    assert "member.registered" in {e["type"] for e in document["integration_events"]}

    reads = [(a["actor_kind"], a["actor_id"], a["role"], a["action"])
             for a in document["staff_access"]]
    assert ("staff", seeded.support_id, "support", "members.read") in reads
    assert ("staff", seeded.support_id, "support", "members.update") in reads
    assert ("terminal", seeded.names["terminal"], None, "pos.members.lookup") in reads
    assert {a["store_code"] for a in document["staff_access"]
            if a["actor_kind"] == "terminal"} == {"SHIBUYA"}

    # Nothing of the other member, nor any secret.
    for text in (seeded.other.member_id, "other@example.com", member.refresh_token,
                 "token_hash", "argon2"):
        assert text not in response.text, text


async def test_every_table_with_a_member_id_is_exported_or_left_out_for_a_reason(
    seeded: Seeded,
) -> None:
    """Done when (issue 16): a new member-owned table fails here until it is in the export or
    docs/privacy.md says why it is not; and each table the export reads has rows in its
    section for a member who has some."""
    tables = {r["table_name"] for r in await query(seeded.database_url, """
        select c.table_name from information_schema.columns c
          join information_schema.tables t using (table_schema, table_name)
         where c.table_schema = current_schema() and c.column_name = 'member_id'
           and t.table_type = 'BASE TABLE'
        """)}
    documented = _privacy_table()
    exported = set(EXPORTED_TABLES)
    left_out = {t for t, where in documented.items() if not where.startswith("in `")}
    assert tables - exported - left_out == set(), \
        "tables with a member_id neither exported nor left out with a reason in docs/privacy.md"
    assert exported - tables == set(), "the export names tables that do not exist"
    assert exported & left_out == set(), "a table both exported and left out"
    assert documented.keys() - tables == set(), "docs/privacy.md names tables that do not exist"
    for table, paths in EXPORTED_TABLES.items():
        assert documented.get(table) == ", ".join(f"in `{p}`" for p in paths), table
    for table in left_out:
        assert len(documented[table]) > 20, f"{table}: say why it is left out"

    document = _document(await seeded.client.get("/v1/me/export",
                                                 headers=seeded.member.headers))
    for table, paths in EXPORTED_TABLES.items():
        for path in paths:
            assert _at(document, path), f"{path} ({table}) is empty"


def _privacy_table() -> dict[str, str]:
    """docs/privacy.md's table under "Tables holding member data": table -> where or why."""
    text = (ROOT / "docs" / "privacy.md").read_text(encoding="utf-8")
    section = text.split("## Tables holding member data", 1)[1].split("\n## ", 1)[0]
    # The first table of the section; the one after it is of tables without a member_id.
    lines = section.split("\n|", 1)[1].split("\n\n", 1)[0].splitlines()
    rows: dict[str, str] = {}
    for line in lines[2:]:
        table, where = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows[table.strip("`")] = where
    return rows


async def _audit_rows(database_url: str, action: str) -> list[Any]:
    return await query(database_url, "select actor_id, subject_id from audit_log"
                                     " where action = $1", action)


async def test_support_exports_a_member_once_audited(seeded: Seeded) -> None:
    path = f"/v1/members/{seeded.member.member_id}/export"
    response = await seeded.client.post(path, headers=seeded.support)
    document = _document(response)
    assert document["member_id"] == seeded.member.member_id
    assert document["profile"]["email"] == "hana@example.com"
    rows = await _audit_rows(seeded.database_url, "members.export")
    assert [(str(r["actor_id"]), str(r["subject_id"])) for r in rows] == [
        (seeded.support_id, seeded.member.member_id)]
    # The export's own row committed before the document was read: it lists itself.
    assert [a["action"] for a in document["staff_access"]][-1] == "members.export"

    refused = await seeded.client.post(path, headers=seeded.marketer)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    missing = await seeded.client.post(
        "/v1/members/00000000-0000-7000-8000-000000000000/export", headers=seeded.support)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert len(await _audit_rows(seeded.database_url, "members.export")) == 1


async def test_a_member_exports_only_themselves(seeded: Seeded) -> None:
    other = seeded.other
    document = _document(await seeded.client.get("/v1/me/export", headers=other.headers))
    assert document["member_id"] == other.member_id
    text = msgspec.json.encode(document).decode()
    for secret in (seeded.member.member_id, "hana@example.com", seeded.names["purchase"]):
        assert secret not in text
    by_staff_route = await seeded.client.post(
        f"/v1/members/{seeded.member.member_id}/export", headers=other.headers)
    assert by_staff_route.status_code == 403
    assert seeded.member.member_id not in by_staff_route.text
    # Nothing in the request names the member: the token does.
    naming = await seeded.client.get(f"/v1/me/export?member_id={seeded.member.member_id}",
                                     headers=other.headers)
    assert naming.json()["member_id"] == other.member_id
    assert "hana@example.com" not in naming.text
    assert (await seeded.client.get("/v1/me/export")).status_code == 401
    staff = await seeded.client.get("/v1/me/export", headers=seeded.support)
    assert staff.status_code == 403


async def _with_entries(database_url: str, member: SignedUp, count: int) -> None:
    """``count`` ledger entries of one point each, with their lots, written in one statement."""
    await query(database_url, """
        with made as (
            insert into point_entries (member_id, entry_id, kind, amount, reason, source,
                                       created_at)
            select $1, uuid_v7(), 'adjust', 1, 'goodwill ' || n, 'staff',
                   now() - (n || ' seconds')::interval
              from generate_series(1, $2) as n
            returning entry_id
        )
        insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,
                                available_at, released_at)
        select $1, uuid_v7(), entry_id, 1, 1, now(), now(), now() from made
        """, member.member_uuid, count)


async def _stream_export(app: Litestar, member: SignedUp, *,
                         leave_after: int | None = None) -> list[bytes]:
    """The pieces of the member's export as the app sends them to a server, called straight
    through ASGI (httpx's test transport would gather them into one): the client stays until
    the document ends, or leaves after ``leave_after`` pieces."""
    pieces: list[bytes] = []
    requested = asyncio.Event()
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        if message["type"] == "http.response.body":
            if message.get("body"):
                pieces.append(bytes(message["body"]))
            if not message.get("more_body") or len(pieces) == leave_after:
                gone.set()
                # A server's send after the client left: let the disconnect be received.
                await asyncio.sleep(0.05)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/v1/me/export",
             "raw_path": b"/v1/me/export", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver.local"),
                         (b"authorization", f"Bearer {member.access_token}".encode())],
             "client": ("testclient", 50000), "server": ("testserver.local", 80),
             "state": {}}
    await app(scope, receive, send)  # type: ignore[arg-type]
    return pieces


async def test_an_export_of_many_entries_is_streamed_in_pieces_and_has_every_entry(
    app: Litestar, client: Client, actors: Actors, settings: Any,
) -> None:
    assert client  # the app's lifespan runs
    member = await actors.member()
    await _with_entries(settings.database_url, member, 5_000)

    pieces = await _stream_export(app, member)

    body = b"".join(pieces)
    document = msgspec.json.decode(body, type=MemberExport)
    entries = document.points.entries
    assert len(entries) == 5_000
    assert {e["reason"] for e in entries} == {f"goodwill {n}" for n in range(1, 5_001)}
    assert len(document.points.lots) == 5_000
    # Sent as it was read: many pieces, none much more than a batch (an entry is far below
    # a kilobyte), rather than the whole document at once.
    assert len(body) > 4 * CHUNK_BYTES
    assert len(pieces) > len(body) // (CHUNK_BYTES + 1024)
    assert max(len(p) for p in pieces) < CHUNK_BYTES + 1024


async def test_a_client_that_leaves_mid_export_leaves_no_transaction_open(
    app: Litestar, client: Client, actors: Actors, settings: Any,
) -> None:
    assert client
    member = await actors.member()
    await _with_entries(settings.database_url, member, 5_000)

    pieces = await _stream_export(app, member, leave_after=2)

    assert len(pieces) <= 3
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(b"".join(pieces))
    # The export's snapshot is not held for a client that is gone: its connection is back in
    # the pool, out of its transaction, at once.
    open_ = await query(settings.database_url, """
        select count(*) as n, array_agg(query) as q from pg_stat_activity
         where datname = current_database() and state like 'idle in transaction%'
        """)
    assert open_[0]["n"] == 0, open_[0]["q"]
    # And the app serves the next export as before.
    again = await client.get("/v1/me/export", headers=member.headers)
    assert len(_document(again)["points"]["entries"]) == 5_000
