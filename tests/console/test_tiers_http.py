"""The tiers pages over HTTP: who may open them, the programme in words with the members in each
level, and the form: a bad level refused next to its field with nothing saved, a good one saved
as exactly one new earning-rules version."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from markupsafe import escape

from loyalty.core.db import init_connection
from loyalty.core.settings import Settings
from loyalty.points.rules import current_rules, rule_history
from tests.console.seed import seed
from tests.console.test_console_http import csrf_of, sign_in


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


async def run(settings: Settings, sql: str, *args: object) -> None:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def versions(settings: Settings) -> list[int]:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await init_connection(conn)
        return [rule_set.version for rule_set in await rule_history(conn)]
    finally:
        await conn.close()


def form(token: str, version: str, levels: list[tuple[str, str, str, str, str]],
         **fields: str) -> dict[str, object]:
    columns: list[tuple[str, ...]] = list(zip(*levels, strict=True)) if levels else [()] * 5
    return {"csrf_token": token, "version": version, "measure": "spend",
            "period": "rolling_12_months", "code": list(columns[0]), "name": list(columns[1]),
            "threshold": list(columns[2]), "multiplier_percent": list(columns[3]),
            "coupon_template_id": list(columns[4]), **fields}


GOOD = [("silver", "シルバー", "0", "100", ""), ("gold", "ゴールド", "50000", "150", ""),
        ("", "", "", "", "")]


@pytest.mark.usefixtures("seeded")
async def test_an_empty_programme_says_so_and_counts_every_member(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client, "marketer")
    page = await client.get("/console/tiers")
    assert page.status_code == 200, page.text
    assert '<a href="/console/tiers" aria-current="page">' in page.text
    assert "ランクはまだありません" in page.text
    assert "会員数: 3" in page.text


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["analyst", "support"])
async def test_roles_the_api_refuses_do_not_see_the_tiers(
    client: httpx.AsyncClient, settings: Settings, role: str,
) -> None:
    """As GET and PUT /v1/tiers: marketing editors only."""
    token = await sign_in(client, role)
    assert "/console/tiers" not in (await client.get("/console")).text
    for path in ("/console/tiers", "/console/tiers/edit"):
        assert (await client.get(path)).status_code == 403, path
    refused = await client.post("/console/tiers/edit", data=form(token, "1", GOOD))
    assert refused.status_code == 403
    assert await versions(settings) == [1]


@pytest.mark.usefixtures("seeded")
async def test_a_save_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    await sign_in(client, "marketer")
    refused = await client.post("/console/tiers/edit", data=form("", "1", GOOD))
    assert refused.status_code == 403
    assert "セキュリティトークン" in refused.text
    assert await versions(settings) == [1]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("levels", "field", "message"), [
    ([("silver", "シルバー", "0", "100", ""), ("gold", "ゴールド", "lots", "150", "")],
     "threshold-1-problem", "Expected `int`, got `str`"),
    ([("silver", "シルバー", "0", "50", "")], "multiplier_percent-0-problem",
     "Expected `int` >= 100"),
    # A row left empty in the middle: the error is still by the row it came from.
    ([("", "", "", "", ""), ("gold", "ゴールド", "10", "100", "not-a-uuid")],
     "coupon_template_id-1-problem", "Invalid UUID"),
    ([("silver", "シルバー", "0", "100", "0192f000-0000-7000-8000-000000000001")],
     "coupon_template_id-0-problem", "no active coupon template"),
    ([("gold", "ゴールド", "100", "100", ""), ("silver", "シルバー", "10", "100", "")],
     "levels-problem", "tier thresholds must be strictly increasing"),
])
async def test_a_bad_level_is_a_400_next_to_its_field_and_nothing_is_saved(
    client: httpx.AsyncClient, settings: Settings,
    levels: list[tuple[str, str, str, str, str]], field: str, message: str,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/tiers/edit", data=form(token, "1", levels))
    assert answer.status_code == 400, answer.text
    assert f'id="{field}"' in answer.text
    after_field = answer.text[answer.text.index(f'id="{field}"'):]
    assert str(escape(message)) in after_field[:300]
    assert "保存されていません" in answer.text
    assert 'aria-invalid="true"' in answer.text or field == "levels-problem"
    # What was typed is kept.
    assert 'value="ゴールド"' in answer.text or 'value="シルバー"' in answer.text
    assert await versions(settings) == [1]


@pytest.mark.usefixtures("seeded")
async def test_a_valid_programme_is_one_new_version_and_members_are_counted(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    editor = await client.get("/console/tiers/edit")
    assert editor.status_code == 200
    assert csrf_of(editor) == token
    saved = await client.post("/console/tiers/edit", data=form(token, "1", GOOD))
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/console/tiers?saved=2"
    assert await versions(settings) == [2, 1]
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await init_connection(conn)
        tiers = (await current_rules(conn)).rules.tiers
    finally:
        await conn.close()
    assert [(t.code, t.threshold, t.multiplier_percent) for t in tiers.levels] == [
        ("silver", 0, 100), ("gold", 50_000, 150)]
    await run(settings, "update point_balances set tier = 'gold' where member_id = "
                        "(select member_id from members order by member_number limit 1)")
    page = await client.get(saved.headers["location"])
    assert "バージョン 2 を保存しました" in page.text
    assert "ゴールド" in page.text
    assert "￥50,000" in page.text or "¥50,000" in page.text  # a spend threshold, as money
    assert "基本の 150%" in page.text
    gold_row = page.text[page.text.index("<code>gold</code>"):]
    assert '<td class="num">1</td>' in gold_row[:400]
    assert "まだランクなし" in page.text
    # The same form again (a double click) is refused: the rules moved on.
    again = await client.post("/console/tiers/edit", data=form(token, "1", GOOD))
    assert again.status_code == 409
    assert await versions(settings) == [2, 1]


@pytest.mark.usefixtures("seeded")
async def test_the_pages_speak_english_when_asked(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "marketer")
    await client.post("/console/language", data={
        "language": "en", "back": "/console", "csrf_token": token})
    expected = {
        "/console/rules": "Version 1 in force since",
        "/console/rules/edit": "Save as a new version",
        "/console/rules/diff?from=1&to=1": "The two versions are the same.",
        "/console/tiers": "The programme has no tiers yet",
        "/console/tiers/edit": "Earning multiplier (%; 100 = none)",
    }
    for path, text in expected.items():
        page = await client.get(path)
        assert page.status_code == 200, path
        assert text in page.text, path
        assert 'lang="en"' in page.text
