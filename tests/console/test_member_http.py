"""The member's page over HTTP, without a browser: each section for the roles that may see it,
the read audited, and the actions (adjust points, suspend and reinstate, merge a look-alike)
refused to other roles, refused without the CSRF token, refused with the message next to the
field when the form is wrong, and done once however often the same form is sent."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import httpx
import pytest
from babel.messages.pofile import read_po

from console.i18n import LOCALE
from console.member import LABELS
from loyalty.core.settings import Settings
from tests.console.member_seed import COUPON, TWIN_EMAIL, Seeded, seed_member_page
from tests.console.seed import MEMBERS, seed
from tests.console.test_console_http import sign_in

KEY = re.compile(r'name="key" value="([^"]+)"')


@pytest.fixture
async def members(settings: Settings) -> Seeded:
    assert settings.database_url
    await seed(settings.database_url)
    return await seed_member_page(settings.database_url)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    yield conn
    await conn.close()


def key_of(page: httpx.Response) -> str:
    found = KEY.search(page.text)
    assert found, page.text
    return found.group(1)


async def entries(db: asyncpg.Connection, member_id: UUID) -> list[tuple[str, int, str]]:
    rows = await db.fetch("select kind, amount, reason from point_entries where member_id = $1"
                          " order by created_at, entry_id", member_id)
    return [(r["kind"], r["amount"], r["reason"]) for r in rows]


async def test_support_sees_every_section_with_contacts_ledger_and_traces(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
) -> None:
    await sign_in(client, "support")
    page = await client.get(f"/console/members/{members.yamada}")
    assert page.status_code == 200
    text = page.text
    for shown in (MEMBERS[0][0], MEMBERS[0][1], MEMBERS[0][2], "1985-04-12",
                  "ステータス履歴", "同意", "マーケティングメール", "ランク", "利用可能",
                  "ポイント履歴", "ポイントの計算内訳", "actions.review", "10 points per review",
                  COUPON, "イベント", "離反リスク", "重複の可能性がある会員",
                  "氏名と生年月日が同じ", f"/console/members/{members.yamada}/merge/{members.twin}",
                  'action="/console/members/', "/adjust", "利用停止…"):
        assert shown in text, shown
    # The read is audited as the API's is, saying it came through the console.
    audited = await db.fetchrow(
        "select details from audit_log where action = 'members.read' and subject_id = $1",
        members.yamada)
    assert audited is not None
    assert '"console"' in audited["details"]


async def test_search_results_link_to_the_member_page(
    client: httpx.AsyncClient, members: Seeded,
) -> None:
    await sign_in(client, "marketer")
    found = await client.get("/console/members", params={"q": "佐藤"})
    assert f'href="/console/members/{members.sato}"' in found.text


async def test_a_marketer_sees_the_profile_without_contacts_ledger_or_actions(
    client: httpx.AsyncClient, members: Seeded,
) -> None:
    token = await sign_in(client, "marketer")
    page = await client.get(f"/console/members/{members.yamada}")
    assert page.status_code == 200
    text = page.text
    assert MEMBERS[0][0] in text
    assert COUPON in text
    assert "@" not in text.replace("@staff.example", "")  # no member's e-mail anywhere
    assert MEMBERS[0][3] not in text
    assert "1985-04-12" not in text
    for hidden in ("ポイント履歴", "actions.review", "/adjust", "/status?to=", "/merge/",
                   "重複の可能性がある会員"):
        assert hidden not in text, hidden
    # The server refuses what the page does not offer.
    for path, data in ((f"/console/members/{members.yamada}/adjust",
                        {"points": "100", "reason": "お詫び", "key": "k1"}),
                       (f"/console/members/{members.yamada}/status",
                        {"status": "suspended", "reason": "不正利用の疑い", "key": "k2"}),
                       (f"/console/members/{members.yamada}/merge/{members.twin}", {"key": "k3"})):
        refused = await client.post(path, data={**data, "csrf_token": token})
        assert refused.status_code == 403, path
    assert (await client.get(f"/console/members/{members.yamada}/history")).status_code == 403
    assert (await client.get(
        f"/console/members/{members.yamada}/merge/{members.twin}")).status_code == 403


async def test_an_analyst_may_not_open_a_member(
    client: httpx.AsyncClient, members: Seeded,
) -> None:
    await sign_in(client, "analyst")
    answer = await client.get(f"/console/members/{members.yamada}")
    assert answer.status_code == 403
    assert MEMBERS[0][0] not in answer.text


async def test_an_unknown_member_is_a_404_page(
    client: httpx.AsyncClient, members: Seeded,
) -> None:
    await sign_in(client, "support")
    answer = await client.get("/console/members/00000000-0000-7000-8000-000000000000")
    assert answer.status_code == 404
    assert "会員が見つかりません" in answer.text


async def test_an_adjustment_without_the_csrf_token_changes_nothing(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
) -> None:
    await sign_in(client, "support")
    before = await entries(db, members.yamada)
    refused = await client.post(f"/console/members/{members.yamada}/adjust",
                                data={"points": "100", "reason": "お詫び", "key": "abc"})
    assert refused.status_code == 403
    assert await entries(db, members.yamada) == before


async def test_an_adjustment_writes_one_entry_even_when_the_form_is_sent_twice(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
) -> None:
    token = await sign_in(client, "support")
    page = await client.get(f"/console/members/{members.yamada}")
    form = {"points": "300", "reason": "配送遅延のお詫び", "key": key_of(page),
            "csrf_token": token}
    before = await entries(db, members.yamada)
    first = await client.post(f"/console/members/{members.yamada}/adjust", data=form)
    again = await client.post(f"/console/members/{members.yamada}/adjust", data=form)
    assert first.status_code == again.status_code == 303
    assert first.headers["location"].endswith("?done=adjusted#history")
    after = await entries(db, members.yamada)
    assert after == [*before, ("adjust", 300, "配送遅延のお詫び")]
    shown = await client.get(first.headers["location"])
    history = shown.text[shown.text.index('id="history-rows"'):]
    assert "配送遅延のお詫び" in history.split("</tr>")[0]  # the newest entry, at the top
    assert "ポイントを調整しました" in shown.text
    audits = await db.fetchval("select count(*) from audit_log where action = 'points.adjust'"
                               " and subject_id = $1", members.yamada)
    assert audits == 1
    # A new rendering of the form is a new key: a second adjustment on purpose is written.
    form["key"] = key_of(shown)
    await client.post(f"/console/members/{members.yamada}/adjust", data=form)
    assert len(await entries(db, members.yamada)) == len(after) + 1


@pytest.mark.parametrize(("points", "reason", "message"), [
    ("0", "お詫び", "0 ポイントの調整では何も変わりません"),
    ("abc", "お詫び", "整数で入力してください"),
    ("-100000", "お詫び", "利用可能ポイントが足りません"),
    ("100", "   ", "理由を3文字以上で入力してください"),
    ("100", "", "理由を3文字以上で入力してください"),
    ("999999999999", "お詫び", "100,000,000 ポイントまで"),
    ("100", "お詫\x01び", "見えない制御文字"),
])
async def test_a_wrong_adjustment_comes_back_with_the_message_and_changes_nothing(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
    points: str, reason: str, message: str,
) -> None:
    token = await sign_in(client, "support")
    page = await client.get(f"/console/members/{members.yamada}")
    before = await entries(db, members.yamada)
    answer = await client.post(f"/console/members/{members.yamada}/adjust", data={
        "points": points, "reason": reason, "key": key_of(page), "csrf_token": token})
    assert answer.status_code == 400
    assert message in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert f'value="{points}"' in answer.text  # what was typed stays in the box
    assert await entries(db, members.yamada) == before


async def test_full_width_digits_are_read_as_the_api_reads_numbers(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
) -> None:
    token = await sign_in(client, "admin")
    page = await client.get(f"/console/members/{members.sato}")
    answer = await client.post(f"/console/members/{members.sato}/adjust", data={
        "points": "－５", "reason": "誤付与の訂正", "key": key_of(page), "csrf_token": token})
    # Sato has no points: a debit is refused as the API refuses it.
    assert answer.status_code == 400
    answer = await client.post(f"/console/members/{members.sato}/adjust", data={
        "points": "１，２００", "reason": "誤付与の訂正", "key": key_of(answer),
        "csrf_token": token})
    assert answer.status_code == 303
    assert await entries(db, members.sato) == [("adjust", 1200, "誤付与の訂正")]


async def test_the_next_page_of_the_history_is_an_htmx_fragment(
    client: httpx.AsyncClient, members: Seeded,
) -> None:
    token = await sign_in(client, "support")
    for n in range(22):
        page = await client.get(f"/console/members/{members.sato}")
        await client.post(f"/console/members/{members.sato}/adjust", data={
            "points": "1", "reason": f"テスト付与 {n:02}", "key": key_of(page),
            "csrf_token": token})
    page = await client.get(f"/console/members/{members.sato}")
    assert "テスト付与 21" in page.text
    assert "テスト付与 01" not in page.text
    more = re.search(r'hx-get="(/console/members/[^"]+/history\?cursor=[^"]+)"', page.text)
    assert more
    fragment = await client.get(more.group(1).replace("&amp;", "&"),
                                headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert "テスト付与 01" in fragment.text
    assert "テスト付与 00" in fragment.text
    assert "テスト付与 21" not in fragment.text
    whole = await client.get(more.group(1).replace("&amp;", "&"))
    assert "<html" in whole.text
    assert "テスト付与 00" in whole.text


async def test_suspend_and_reinstate_take_a_confirmation_and_a_reason(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
) -> None:
    token = await sign_in(client, "support")
    confirm = await client.get(f"/console/members/{members.sato}/status?to=suspended")
    assert confirm.status_code == 200
    assert "利用停止にしますか" in confirm.text
    empty = await client.post(f"/console/members/{members.sato}/status", data={
        "status": "suspended", "reason": "", "key": key_of(confirm), "csrf_token": token})
    assert empty.status_code == 400
    assert "理由を3文字以上で入力してください" in empty.text
    assert await db.fetchval("select status from members where member_id = $1",
                             members.sato) == "active"
    no_token = await client.post(f"/console/members/{members.sato}/status", data={
        "status": "suspended", "reason": "不正利用の疑い", "key": key_of(confirm)})
    assert no_token.status_code == 403
    form = {"status": "suspended", "reason": "不正利用の疑い", "key": key_of(confirm),
            "csrf_token": token}
    done = await client.post(f"/console/members/{members.sato}/status", data=form)
    assert done.status_code == 303
    assert (await client.post(f"/console/members/{members.sato}/status",
                              data=form)).status_code == 303
    assert await db.fetchval("select status from members where member_id = $1",
                             members.sato) == "suspended"
    audits = await db.fetch("select details from audit_log where action = 'members.update'"
                            " and subject_id = $1", members.sato)
    assert len(audits) == 1
    assert "不正利用の疑い" in audits[0]["details"]
    page = await client.get(done.headers["location"])
    assert "会員を利用停止にしました" in page.text
    assert "利用を再開…" in page.text
    confirm = await client.get(f"/console/members/{members.sato}/status?to=active")
    back = await client.post(f"/console/members/{members.sato}/status", data={
        "status": "active", "reason": "本人確認済み", "key": key_of(confirm),
        "csrf_token": token})
    assert back.status_code == 303
    history = await db.fetch("select from_status, to_status, reason from member_status_changes"
                             " where member_id = $1 order by change_id", members.sato)
    assert [tuple(r) for r in history] == [("active", "suspended", "staff"),
                                           ("suspended", "active", "staff")]
    page = await client.get(f"/console/members/{members.sato}")
    assert "スタッフによる変更" in page.text


async def test_merge_shows_both_members_then_moves_the_points_once(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
) -> None:
    token = await sign_in(client, "support")
    compare = await client.get(f"/console/members/{members.yamada}/merge/{members.twin}")
    assert compare.status_code == 200
    text = compare.text
    assert TWIN_EMAIL in text
    assert MEMBERS[0][2] in text
    assert "が残ります" in text
    assert "統合され" in text
    assert "氏名と生年月日が同じ" in text
    twin_points = await db.fetchval("select available from point_balances where member_id = $1",
                                    members.twin)
    assert twin_points > 0
    before = await db.fetchval("select available from point_balances where member_id = $1",
                               members.yamada)
    assert (await client.post(f"/console/members/{members.yamada}/merge/{members.twin}",
                              data={"key": key_of(compare)})).status_code == 403
    form = {"key": key_of(compare), "csrf_token": token}
    merged = await client.post(f"/console/members/{members.yamada}/merge/{members.twin}",
                               data=form)
    assert merged.status_code == 303
    again = await client.post(f"/console/members/{members.yamada}/merge/{members.twin}",
                              data=form)
    assert again.status_code == 303  # the same form: the first answer, nothing more
    assert await db.fetchval("select available from point_balances where member_id = $1",
                             members.yamada) == before + twin_points
    row = await db.fetchrow("select status, merged_into from members where member_id = $1",
                            members.twin)
    assert row is not None
    assert (row["status"], row["merged_into"]) == ("merged", members.yamada)
    assert await db.fetchval("select count(*) from audit_log where action = 'members.merge'"
                             ) == 1
    page = await client.get(merged.headers["location"])
    assert "会員を統合しました" in page.text
    assert "この会員と似た会員は見つかりません" in page.text
    # The merged member's page points to the survivor and shows no one's points as theirs.
    gone = await client.get(f"/console/members/{members.twin}")
    assert gone.status_code == 200
    assert f'href="/console/members/{members.yamada}"' in gone.text
    assert "ポイント履歴" not in gone.text
    assert "/adjust" not in gone.text
    # A new form for a merge already done says so and changes nothing.
    compare = await client.get(f"/console/members/{members.yamada}/merge/{members.twin}")
    late = await client.post(f"/console/members/{members.yamada}/merge/{members.twin}",
                             data={"key": "another-key", "csrf_token": token})
    assert late.status_code == 409
    assert "すでに統合済み" in late.text


async def test_a_member_cannot_be_merged_into_themselves(
    client: httpx.AsyncClient, members: Seeded,
) -> None:
    token = await sign_in(client, "support")
    page = await client.get(f"/console/members/{members.yamada}/merge/{members.yamada}")
    assert page.status_code == 400
    assert "同じ会員どうしは統合できません" in page.text
    answer = await client.post(f"/console/members/{members.yamada}/merge/{members.yamada}",
                               data={"key": "k", "csrf_token": token})
    assert answer.status_code == 400


def test_every_label_of_the_member_page_has_a_japanese_translation() -> None:
    with (LOCALE / "ja" / "LC_MESSAGES" / "console.po").open("rb") as po:
        catalogue = {m.id: m.string for m in read_po(po) if m.id}
    assert [label for label in LABELS.values() if not catalogue.get(label)] == []


async def test_odd_query_parameters_are_refused_not_failed(
    client: httpx.AsyncClient, members: Seeded,
) -> None:
    await sign_in(client, "support")
    for path in (f"/console/members/{members.yamada}?done=<b>",
                 f"/console/members/{members.yamada}/status?to=erased",
                 f"/console/members/{members.yamada}/history?cursor=%3Cscript%3E",
                 f"/console/members/{members.yamada}/history?cursor=AAAA"):
        answer = await client.get(path)
        assert answer.status_code == 400, (path, answer.status_code)


async def test_the_churn_models_scores_are_on_the_page(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
) -> None:
    """The weekly churn model's figures for the member, or what applies where it has none."""
    fit = await db.fetchval(
        "insert into churn_model_fits (fitted_at, as_of, parameters, members, converged)"
        " values (now(), now(), '{}', 3, true) returning fit_id")
    await db.execute(
        "insert into member_churn_scores (member_id, method, p_alive, expected_purchases_90d,"
        " predicted_value_12m, scored_at, fit_id) values ($1, 'model', 0.87, 1.24, 5400, now(),"
        " $3), ($2, 'cadence', null, null, null, now(), $3)",
        members.yamada, members.twin, fit)
    await sign_in(client, "marketer")
    scored = (await client.get(f"/console/members/{members.yamada}")).text
    assert "顧客であり続ける見込み 87%" in scored
    assert "今後90日の予想購買 1.2 回" in scored
    assert "￥5,400" in scored
    fallback = (await client.get(f"/console/members/{members.twin}")).text
    assert "離反予測モデルはまだこの会員を評価していません" in fallback


async def test_a_member_without_analysis_consent_shows_why_instead_of_scores(
    client: httpx.AsyncClient, members: Seeded, db: asyncpg.Connection,
) -> None:
    """A row a job wrote before the withdrawal committed is not shown either: the page reads
    the consent, as the segments do (docs/privacy.md)."""
    fit = await db.fetchval(
        "insert into churn_model_fits (fitted_at, as_of, parameters, members, converged)"
        " values (now(), now(), '{}', 3, true) returning fit_id")
    await db.execute(
        "insert into member_consents (member_id, purpose, granted, text_version, channel,"
        " actor_kind) values ($1, 'data_analysis', false, 'v1', 'app', 'member')",
        members.yamada)
    await db.execute(
        "insert into member_churn_scores (member_id, method, p_alive, expected_purchases_90d,"
        " predicted_value_12m, scored_at, fit_id) values ($1, 'model', 0.87, 1.24, 5400, now(),"
        " $2)", members.yamada, fit)
    await sign_in(client, "marketer")
    page = (await client.get(f"/console/members/{members.yamada}")).text
    assert "分析への同意なし" in page
    assert "顧客であり続ける見込み" not in page
    assert "離反リスクの判定はありません。" not in page
    other = (await client.get(f"/console/members/{members.twin}")).text
    assert "分析への同意なし" not in other
