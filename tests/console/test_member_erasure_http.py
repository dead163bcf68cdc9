"""Erasing a member's personal data at their request from the console, over HTTP: support gives
the reason and confirms, the request waits out the grace period (or, with none, erases at
once), the member's page says it is pending, and a cancel stops it; each step audited as the
API's is. A form without a reason, another role or a missing CSRF token writes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from babel.dates import format_date

from loyalty.core.db import init_connection
from loyalty.core.settings import Settings
from schemas.members import Member
from tests.conftest import AppWith
from tests.console.seed import MEMBERS, seed, staff_email
from tests.console.test_console_http import sign_in
from tests.console.test_member_http import key_of

REASON = "電話で受付、問い合わせ番号 123"
GRACE = dt.timedelta(days=14)  # LOYALTY_ERASURE_GRACE_DAYS's default


@pytest.fixture
async def members(settings: Settings) -> list[Member]:
    assert settings.database_url
    return await seed(settings.database_url)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    yield conn
    await conn.close()


def day_of(moment: dt.datetime) -> str:
    """The date part of how the page writes ``moment`` (Japanese, the business's clock)."""
    return format_date(moment.astimezone(ZoneInfo("Asia/Tokyo")), "medium", locale="ja")


async def erasures(db: asyncpg.Connection, member_id: UUID) -> list[asyncpg.Record]:
    return list(await db.fetch(
        "select requested_at, due_at, requested_by_kind, requested_by, cancelled_at,"
        " cancelled_by_kind, cancelled_by, erased_at from member_erasures where member_id = $1",
        member_id))


async def audits(db: asyncpg.Connection, action: str) -> list[tuple[UUID, UUID, Any]]:
    rows = await db.fetch("select actor_id, subject_id, details from audit_log"
                          " where action = $1 order by audit_id", action)
    return [(r["actor_id"], r["subject_id"], r["details"]) for r in rows]


async def staff_id(db: asyncpg.Connection, role: str) -> UUID:
    found: UUID = await db.fetchval("select staff_id from staff where email = $1",
                                    staff_email(role))
    return found


async def test_support_requests_an_erasure_with_a_reason_then_cancels_it(
    client: httpx.AsyncClient, members: list[Member], db: asyncpg.Connection,
) -> None:
    sato = members[1].member_id
    support = await staff_id(db, "support")
    token = await sign_in(client, "support")
    page = await client.get(f"/console/members/{sato}")
    assert f'href="/console/members/{sato}/erasure"' in page.text
    assert "個人情報を削除…" in page.text
    assert 'id="erasure-pending"' not in page.text

    shown_at = dt.datetime.now(dt.UTC)
    confirm = await client.get(f"/console/members/{sato}/erasure")
    assert confirm.status_code == 200
    for said in ("佐藤 花子 さんの個人情報を削除しますか？", "氏名とカナ、メールアドレス、電話番号",
                 "会員番号（仮名）にのみ紐づけて残すもの", "サインインできなくなり",
                 f"実行日時：{day_of(shown_at + GRACE)}", 'name="reason"', "個人情報を削除する"):
        assert said in confirm.text, said

    form = {"reason": REASON, "key": key_of(confirm), "csrf_token": token}
    before = dt.datetime.now(dt.UTC)
    requested = await client.post(f"/console/members/{sato}/erasure", data=form)
    after = dt.datetime.now(dt.UTC)
    assert requested.status_code == 303
    assert requested.headers["location"] == f"/console/members/{sato}?done=erasure_requested"
    # The same form sent again (a double click) asks once.
    again = await client.post(f"/console/members/{sato}/erasure", data=form)
    assert again.status_code == 303
    [row] = await erasures(db, sato)
    assert before <= row["requested_at"] <= after
    assert row["due_at"] == row["requested_at"] + GRACE
    assert (row["requested_by_kind"], row["requested_by"]) == ("staff", support)
    assert (row["cancelled_at"], row["erased_at"]) == (None, None)
    assert await audits(db, "members.erase") == [
        (support, sato, {"reason": REASON, "via": "console"})]
    # Nothing changes for the member until the grace period ends.
    member = await db.fetchrow("select status, name from members where member_id = $1", sato)
    assert member is not None
    assert tuple(member) == ("active", MEMBERS[1][0])

    page = await client.get(requested.headers["location"])
    assert "削除の依頼を受け付けました" in page.text
    assert 'id="erasure-pending"' in page.text
    assert f"会員本人の依頼により、{day_of(row['due_at'])}" in page.text
    assert "取り消す場合は削除の画面へ" in page.text

    pending = await client.get(f"/console/members/{sato}/erasure")
    assert pending.status_code == 200
    assert "佐藤 花子 さんの個人情報は削除予定です" in pending.text
    assert f"{day_of(row['due_at'])}" in pending.text
    assert 'name="reason"' not in pending.text
    assert f'action="/console/members/{sato}/erasure/cancel"' in pending.text

    cancel = {"key": key_of(pending), "csrf_token": token}
    cancelled = await client.post(f"/console/members/{sato}/erasure/cancel", data=cancel)
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == f"/console/members/{sato}?done=erasure_cancelled"
    assert (await client.post(f"/console/members/{sato}/erasure/cancel",
                              data=cancel)).status_code == 303
    [row] = await erasures(db, sato)
    assert row["cancelled_at"] is not None
    assert (row["cancelled_by_kind"], row["cancelled_by"]) == ("staff", support)
    assert row["erased_at"] is None
    assert await audits(db, "members.erase_cancel") == [
        (support, sato, {"state": "cancelled", "via": "console"})]
    assert len(await audits(db, "members.erase")) == 1

    page = await client.get(cancelled.headers["location"])
    assert "削除を取り消しました" in page.text
    assert 'id="erasure-pending"' not in page.text
    assert MEMBERS[1][2] in page.text  # the e-mail address is still there
    # The erasure page offers the form again.
    assert 'name="reason"' in (await client.get(f"/console/members/{sato}/erasure")).text


async def test_with_no_grace_period_the_member_is_erased_at_once(
    app_with: AppWith, members: list[Member], db: asyncpg.Connection,
) -> None:
    sato = members[1].member_id
    support = await staff_id(db, "support")
    async with app_with(erasure_grace_days=0) as (client, _):
        token = await sign_in(client, "support")
        confirm = await client.get(f"/console/members/{sato}/erasure")
        assert "実行日時：確定するとすぐに削除します。元に戻すことはできません。" in confirm.text
        # The member's name in the reason goes with the rest of their data (audit first).
        erased = await client.post(f"/console/members/{sato}/erasure", data={
            "reason": f"{MEMBERS[1][0]} 様より電話で依頼", "key": key_of(confirm),
            "csrf_token": token})
        assert erased.status_code == 303
        assert erased.headers["location"] == f"/console/members/{sato}?done=erased"
        row = await db.fetchrow("select status, name, name_kana, email, phone from members"
                                " where member_id = $1", sato)
        assert row is not None
        assert tuple(row) == ("erased", "", "", None, None)
        [erasure] = await erasures(db, sato)
        assert erasure["erased_at"] == erasure["requested_at"] == erasure["due_at"]
        assert await audits(db, "members.erase") == [
            (support, sato, {"reason": "[erased] 様より電話で依頼", "via": "console"})]

        page = await client.get(erased.headers["location"])
        assert page.status_code == 200
        assert "会員の個人情報を削除しました" in page.text
        assert "削除済みの会員" in page.text
        for gone in (MEMBERS[1][0], MEMBERS[1][1], MEMBERS[1][2], f"{sato}/erasure"):
            assert gone not in page.text, gone
        # The erasure page says so; a form from before (another tab) is refused, nothing more
        # written.
        done = await client.get(f"/console/members/{sato}/erasure")
        assert "この会員の個人情報は削除済みです" in done.text
        assert 'name="reason"' not in done.text
        late = await client.post(f"/console/members/{sato}/erasure", data={
            "reason": REASON, "key": "another-key", "csrf_token": token})
        assert late.status_code == 409
        assert "この会員の個人情報は削除済みです" in late.text
        assert len(await audits(db, "members.erase")) == 1
        assert len(await erasures(db, sato)) == 1


async def test_a_missing_or_too_long_reason_is_refused_by_the_field(
    client: httpx.AsyncClient, members: list[Member], db: asyncpg.Connection,
) -> None:
    sato = members[1].member_id
    token = await sign_in(client, "support")
    confirm = await client.get(f"/console/members/{sato}/erasure")
    for reason, message in (
        ("", "理由を入力してください。会員の依頼内容と受付方法を書きます"),
        ("   ", "理由を入力してください。会員の依頼内容と受付方法を書きます"),
        ("あ" * 501, "理由が長すぎます。500文字以内で入力してください。"),
        ("電話\x01で受付", "理由に見えない制御文字が含まれています"),
    ):
        refused = await client.post(f"/console/members/{sato}/erasure", data={
            "reason": reason, "key": key_of(confirm), "csrf_token": token})
        assert refused.status_code == 400, reason
        assert message in refused.text, reason
        assert 'aria-invalid="true"' in refused.text
        assert 'id="erasure-reason-error"' in refused.text
    assert await erasures(db, sato) == []
    assert await audits(db, "members.erase") == []
    missing = await client.get("/console/members/00000000-0000-7000-8000-000000000000/erasure")
    assert missing.status_code == 404


async def test_other_roles_see_the_pending_notice_but_may_not_erase_or_cancel(
    client: httpx.AsyncClient, members: list[Member], db: asyncpg.Connection,
) -> None:
    sato = members[1].member_id
    token = await sign_in(client, "support")
    confirm = await client.get(f"/console/members/{sato}/erasure")
    assert (await client.post(f"/console/members/{sato}/erasure", data={
        "reason": REASON, "key": key_of(confirm), "csrf_token": token})).status_code == 303

    token = await sign_in(client, "marketer")
    page = await client.get(f"/console/members/{sato}")
    assert page.status_code == 200
    assert 'id="erasure-pending"' in page.text
    assert "/erasure" not in page.text  # neither the link nor the way to cancel
    refused = await client.get(f"/console/members/{sato}/erasure")
    assert refused.status_code == 403
    assert "あなたの役割ではこのページを開けません" in refused.text
    for path, data in ((f"/console/members/{members[2].member_id}/erasure",
                        {"reason": REASON, "key": "k1"}),
                       (f"/console/members/{sato}/erasure/cancel", {"key": "k2"})):
        answer = await client.post(path, data={**data, "csrf_token": token})
        assert answer.status_code == 403, path
    await sign_in(client, "analyst")
    assert (await client.get(f"/console/members/{sato}/erasure")).status_code == 403
    [row] = await erasures(db, sato)
    assert row["cancelled_at"] is None
    assert await erasures(db, members[2].member_id) == []
    assert len(await audits(db, "members.erase")) == 1
    assert await audits(db, "members.erase_cancel") == []


async def test_a_form_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, members: list[Member], db: asyncpg.Connection,
) -> None:
    sato = members[1].member_id
    await sign_in(client, "support")
    confirm = await client.get(f"/console/members/{sato}/erasure")
    refused = await client.post(f"/console/members/{sato}/erasure", data={
        "reason": REASON, "key": key_of(confirm)})
    assert refused.status_code == 403
    assert "このフォームは無効です" in refused.text
    assert (await client.post(f"/console/members/{sato}/erasure/cancel", data={
        "key": key_of(confirm), "csrf_token": "forged"})).status_code == 403
    assert await erasures(db, sato) == []
    assert await audits(db, "members.erase") == []
    assert await audits(db, "members.erase_cancel") == []
