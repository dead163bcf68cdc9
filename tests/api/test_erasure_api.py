"""Erasure (issue 16): after a member's erasure none of their personal values is left in any
text, json or bytea column of any table (the columns read from the catalogue, every one
scanned), the ledger still adds up, they cannot sign in, ``member.erased`` reached a webhook
receiver, and the same e-mail signs up again as a new member. The grace period: cancelled by
the member or staff, done by the job when due and not before. Support's route is audited."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from jobs.catalogue import job_named
from jobs.definition import make_context
from jobs.runs import run_once
from loyalty.core.db import create_pool
from schemas.outbox import MemberErasedData, envelope_type
from tests.conftest import AppWith, make_settings
from tests.factories import PASSWORD, Actors, bearer, purchase_body, query
from tests.ledger_checks import check_invariants, ledger_rows
from tests.loyalty.ops.receiver import Answer, receiving

Client = httpx.AsyncClient
_keys = itertools.count()

# The member's personal data as typed, and as stored where normalising changes it.
PROFILE = {
    "email": "erasable.tanaka@example.com",
    "phone": "090-7777-3141",
    "name": "Erasable Tanaka",
    "name_kana": "イレイサブル タナカ",
    "postal_code": "150-0042",
    "birth_date": "1983-07-19",
}
ATTRIBUTES = {"favourite_shop": "Shibuya Hikarie Annex", "nickname": "Erasable-chan"}
STORED_PHONE = "+819077773141"
HOOKED = ["member.registered", "member.updated", "member.status_changed", "member.erased"]
# Column types that can hold text: scanned as text (arrays and json through their text form),
# bytea as bytes.
_TEXTUAL = ("text", "character varying", "character", "json", "jsonb", "ARRAY", "bytea")


def keyed(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": f"erasure-{next(_keys)}"}


async def _textual_columns(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    rows = await conn.fetch(
        """
        select c.table_name, c.column_name, c.data_type
          from information_schema.columns c
          join information_schema.tables t using (table_schema, table_name)
         where c.table_schema = 'public' and t.table_type = 'BASE TABLE'
           and c.data_type = any($1::text[])
         order by 1, 2
        """, list(_TEXTUAL))
    return [(r["table_name"], r["column_name"], r["data_type"]) for r in rows]


async def personal_values_left(dsn: str, values: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, value) for every value still found anywhere, every column scanned."""
    conn = await asyncpg.connect(dsn)
    try:
        columns = await _textual_columns(conn)
        assert len(columns) > 50, "the catalogue lists the schema's columns"
        found = []
        for table, column, data_type in columns:
            if data_type == "bytea":
                condition = f'position(convert_to($1, \'UTF8\') in "{column}") > 0'
            else:
                condition = f'strpos("{column}"::text, $1) > 0'
            for value in values:
                if await conn.fetchval(
                        f'select exists (select 1 from "{table}" where {condition})', value):  # noqa: S608 - names from the catalogue
                    found.append((table, column, value))
        return found
    finally:
        await conn.close()


async def _hook(client: Client, actors: Actors, url: str) -> None:
    admin = bearer(await actors.staff("admin"))
    created = await client.post("/v1/webhooks/endpoints", headers=admin, json={
        "url": url, "event_types": HOOKED, "description": "downstream CRM"})
    assert created.status_code == 201, created.text


async def _busy_member(client: Client, actors: Actors) -> tuple[Any, list[str]]:
    """A member with a profile, attributes, a purchase, consents, and reads and searches by
    staff: each a copy of their data somewhere. Returns them and the values to look for."""
    member = await actors.member(password=PASSWORD, **PROFILE)
    stored = (await client.get("/v1/me", headers=member.headers)).json()
    support = bearer(await actors.staff("support"))
    # Staff set attributes and correct the postal code; the stored answers echo the profile.
    corrected = await client.patch(f"/v1/members/{member.member_id}", headers=keyed(support),
                                   json={"attributes": ATTRIBUTES,
                                         "postal_code": PROFILE["postal_code"]})
    assert corrected.status_code == 200, corrected.text
    renamed = await client.patch("/v1/me", headers=keyed(member.headers),
                                 json={"name": PROFILE["name"]})
    assert renamed.status_code == 200, renamed.text
    consents = await client.put("/v1/me/consents", headers=keyed(member.headers), json={
        "consents": [{"purpose": "marketing_email", "granted": True, "text_version": "v1"}]})
    assert consents.status_code == 200, consents.text
    for q in (PROFILE["email"], PROFILE["phone"], "Erasable"):
        searched = await client.get("/v1/members", params={"q": q}, headers=support)
        assert searched.status_code == 200, searched.text
        assert searched.json()["items"], q
    assert (await client.get(f"/v1/members/{member.member_id}",
                             headers=support)).status_code == 200
    till, _ = await actors.terminal("ERASE-1")
    bought = await client.post("/v1/pos/purchases", headers=keyed(bearer(till)),
                               json=purchase_body(member.member_id, 5_000))
    assert bought.status_code == 201, bought.text
    values = [PROFILE["email"], PROFILE["phone"], STORED_PHONE, PROFILE["name"],
              PROFILE["name_kana"], stored["name_kana"], PROFILE["postal_code"],
              *ATTRIBUTES.values()]
    return member, values


async def test_an_erased_member_leaves_no_personal_value_in_any_column(
    app_with: AppWith, fresh_database: str,
) -> None:
    # A receiver that echoes what it got: the delivery log keeps the head of its answers.
    echo = receiving(lambda request, _n: Answer(body=request.body))
    async with echo as receiver, app_with(
            erasure_grace_days=0, webhooks_worker="embedded", webhooks_allow_private=True,
            webhooks_poll_seconds=0.2) as (client, actors):
        await _hook(client, actors, receiver.url)
        member, values = await _busy_member(client, actors)
        # Receivers answered the profile events before the erasure: their answers are kept.
        await receiver.wait_for(lambda got: sum(
            r.event["type"] == "member.updated" for r in got) >= 2, seconds=20)
        before = {table for table, _, _ in await personal_values_left(fresh_database, values)}
        # The receiver's answers that delivered are kept on the deliveries (migration 0040).
        assert before >= {"members", "outbox", "idempotency_keys", "webhook_deliveries"}, \
            "the scan finds the copies while the member is there"

        wrong = await client.request("DELETE", "/v1/me", headers=member.headers,
                                     json={"password": "not the password"})
        assert wrong.status_code == 422, wrong.text
        assert wrong.json()["type"].endswith(":wrong_password")
        erased = await client.request("DELETE", "/v1/me", headers=member.headers,
                                      json={"password": PASSWORD})
        assert erased.status_code == 200, erased.text
        assert erased.json()["state"] == "erased"

        await receiver.wait_for(lambda got: any(
            r.event["type"] == "member.erased" for r in got), seconds=20)
        gone = [r for r in receiver.received if r.event["type"] == "member.erased"]
        event = msgspec.json.decode(gone[0].body, type=envelope_type("member.erased"))
        assert isinstance(event.data, MemberErasedData)  # type: ignore[attr-defined]
        assert str(event.data.member_id) == member.member_id  # type: ignore[attr-defined]

        assert await personal_values_left(fresh_database, values) == []

        # The row keeps its id and the status; purchases and points stay under that id.
        row = (await query(fresh_database, "select * from members where member_id = $1",
                           member.member_uuid))[0]
        assert row["status"] == "erased"
        assert (row["email"], row["phone"], row["password_hash"], row["birth_date"],
                row["postal_code"], row["external_id"], row["attributes"]) == (
            None, None, None, None, None, None, {})
        assert (await query(fresh_database, "select count(*) from purchases where member_id = $1",
                            member.member_uuid))[0][0] == 1
        assert (await query(fresh_database, "select reason from member_status_changes"
                            " where member_id = $1 and to_status = 'erased'",
                            member.member_uuid))[0][0] == "erasure requested by the member"
        check_invariants(await ledger_rows(fresh_database))
        assert (await query(fresh_database, "select count(*) from refresh_tokens"
                            " where member_id = $1", member.member_uuid))[0][0] == 0

        # Signing in fails, and so does the token the member held.
        login = await client.post("/v1/auth/member/login", json={
            "email": PROFILE["email"], "password": PASSWORD})
        assert login.status_code == 401, login.text
        assert (await client.get("/v1/me", headers=member.headers)).status_code == 401
        refreshed = await client.post("/v1/auth/refresh",
                                      json={"refresh_token": member.refresh_token})
        assert refreshed.status_code == 401, refreshed.text

        # The same e-mail and phone sign up again: someone new.
        again = await actors.member(email=PROFILE["email"], phone=PROFILE["phone"],
                                    name=PROFILE["name"])
        assert again.member_id != member.member_id


async def test_support_erases_with_a_reason_and_the_row_is_audited_without_the_contact(
    app_with: AppWith, fresh_database: str,
) -> None:
    async with app_with(erasure_grace_days=0) as (client, actors):
        member, values = await _busy_member(client, actors)
        support = bearer(await actors.staff("support"))
        # An earlier record of the same person, merged into this one, goes with it.
        earlier = await actors.member(email="e.tanaka.old@example.com", name="E. Tanaka")
        merged = await client.post(f"/v1/members/{member.member_id}/merge",
                                   headers=keyed(support),
                                   json={"from_member_id": earlier.member_id})
        assert merged.status_code == 200, merged.text
        values += ["e.tanaka.old@example.com", "E. Tanaka"]
        reason = f"Letter of 3 March from {PROFILE['email']} asking to be forgotten"
        erased = await client.post(f"/v1/members/{member.member_id}/erasure",
                                   headers=keyed(support), json={"reason": reason})
        assert erased.status_code == 200, erased.text
        assert erased.json()["state"] == "erased"
        again = await client.post(f"/v1/members/{member.member_id}/erasure",
                                  headers=keyed(support), json={"reason": "twice"})
        assert again.status_code == 409, again.text
        assert again.json()["type"].endswith(":already_erased")

        audited = await query(fresh_database, "select details from audit_log"
                              " where action = 'members.erase' and subject_id = $1",
                              member.member_uuid)
        assert [r["details"]["reason"] for r in audited] == [
            "Letter of 3 March from [erased] asking to be forgotten"]
        searches = await query(fresh_database, "select details from audit_log"
                               " where action = 'members.search' order by recorded_at")
        assert [r["details"]["q_kind"] for r in searches] == ["email", "phone", "name"]
        assert all(r["details"]["found"] == [member.member_id] for r in searches)
        assert await personal_values_left(fresh_database, values) == []
        statuses = await query(fresh_database, "select status from members"
                               " where member_id = any($1::uuid[]) order by status",
                               [member.member_uuid, earlier.member_uuid])
        assert [r["status"] for r in statuses] == ["erased", "erased"]
        check_invariants(await ledger_rows(fresh_database))


async def test_grace_period_the_member_cancels_and_the_job_erases_when_due_and_not_before(
    app_with: AppWith, fresh_database: str, redis_url: str, tmp_path: Path,
) -> None:
    async with app_with(erasure_grace_days=14) as (client, actors):
        member = await actors.member(password=PASSWORD, email="graceful@example.com")
        support = bearer(await actors.staff("support"))
        before = dt.datetime.now(dt.UTC)
        asked = await client.request("DELETE", "/v1/me", headers=member.headers,
                                     json={"password": PASSWORD})
        assert asked.status_code == 202, asked.text
        due = dt.datetime.fromisoformat(asked.json()["due_at"])
        assert asked.json()["state"] == "pending"
        assert dt.timedelta(days=14) <= due - before < dt.timedelta(days=14, minutes=1)
        # Asking again answers the same pending erasure.
        twice = await client.request("DELETE", "/v1/me", headers=member.headers,
                                     json={"password": PASSWORD})
        assert (twice.status_code, twice.json()["due_at"]) == (202, asked.json()["due_at"])

        # The member still signs in during the grace period, and cancels.
        login = await client.post("/v1/auth/member/login", json={
            "email": "graceful@example.com", "password": PASSWORD})
        assert login.status_code == 200, login.text
        cancelled = await client.post("/v1/me/erasure/cancel", headers=member.headers)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        status = await client.get("/v1/me/erasure", headers=member.headers)
        assert status.json()["state"] == "cancelled"

        # Support takes a request by letter, and cancels it too (audited), then again.
        path = f"/v1/members/{member.member_id}/erasure"
        by_staff = await client.post(path, headers=keyed(support),
                                     json={"reason": "letter received"})
        assert by_staff.status_code == 202, by_staff.text
        undone = await client.post(f"{path}/cancel", headers=keyed(support))
        assert undone.status_code == 200
        assert undone.json()["state"] == "cancelled"
        actions = await query(fresh_database, "select action from audit_log where subject_id = $1"
                              " order by recorded_at", member.member_uuid)
        assert [r["action"] for r in actions] == ["members.erase", "members.erase_cancel"]
        asked = await client.request("DELETE", "/v1/me", headers=member.headers,
                                     json={"password": PASSWORD})
        due = dt.datetime.fromisoformat(asked.json()["due_at"])

    settings = make_settings(fresh_database, redis_url, tmp_path)
    pool = await create_pool(fresh_database, min_size=1, max_size=2)
    try:
        ctx = make_context(fresh_database, pool, settings)
        job = job_named("erasure")
        assert job is not None
        early = await run_once(ctx, job, as_of=due - dt.timedelta(seconds=1))
        assert early is not None
        assert early.counts == {"erased": 0}
        assert (await query(fresh_database, "select status from members where member_id = $1",
                            member.member_uuid))[0][0] == "active"
        when_due = await run_once(ctx, job, as_of=due)
        assert when_due is not None
        assert when_due.counts == {"erased": 1}
        rerun = await run_once(ctx, job, as_of=due + dt.timedelta(hours=1))
        assert rerun is not None
        assert rerun.counts == {"erased": 0}
    finally:
        await pool.close()
    row = (await query(fresh_database, "select status, email from members where member_id = $1",
                       member.member_uuid))[0]
    assert (row["status"], row["email"]) == ("erased", None)
    history = await query(fresh_database, "select counts from job_runs where job = 'erasure'"
                          " order by run_id")
    assert [r["counts"] for r in history] == [{"erased": 0}, {"erased": 1}, {"erased": 0}]
    events = await query(fresh_database, "select type from outbox where member_id = $1"
                         " and type like 'member.%' order by seq", member.member_uuid)
    assert [r["type"] for r in events][-2:] == ["member.status_changed", "member.erased"]
