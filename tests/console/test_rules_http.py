"""The earning rules pages over HTTP: who may open them, the editor refusing bad rules with the
field named and nothing saved, a valid edit making exactly one version, the simulation's trace,
and the diff between two versions."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import asyncpg
import httpx
import pytest
from babel.messages.pofile import read_po
from markupsafe import escape

from console import rulebook
from console.i18n import LOCALE
from loyalty.core.db import init_connection
from loyalty.core.settings import Settings
from loyalty.points.rules import rule_history
from schemas.rules import (
    WEEKDAYS,
    BirthdayMonth,
    CategoryIs,
    EarningRules,
    SkuIs,
    StoreIs,
    TimeWindow,
    WeekdayIs,
)
from tests.console.seed import seed
from tests.console.test_console_http import sign_in

TEXTAREA = re.compile(r'<textarea id="rules" name="rules"[^>]*>(.*?)</textarea>', re.S)
VERSION = re.compile(r'name="version" value="(\d+)"')


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


async def versions(settings: Settings) -> list[int]:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await init_connection(conn)
        return [rule_set.version for rule_set in await rule_history(conn)]
    finally:
        await conn.close()


async def fetch(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await init_connection(conn)
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def editor(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """The editor's rules (decoded from its JSON) and the version it was opened on."""
    page = await client.get("/console/rules/edit")
    assert page.status_code == 200, page.text
    text, version = TEXTAREA.search(page.text), VERSION.search(page.text)
    assert text
    assert version
    return json.loads(text.group(1).replace("&#34;", '"').replace("&quot;", '"')), \
        version.group(1)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["marketer", "admin"])
async def test_marketing_editors_read_the_rules_in_words(
    client: httpx.AsyncClient, role: str,
) -> None:
    await sign_in(client, role)
    page = await client.get("/console/rules")
    assert page.status_code == 200, page.text
    assert '<a href="/console/rules" aria-current="page">' in page.text
    assert "バージョン 1" in page.text
    assert "￥100" in page.text or "¥100" in page.text  # the base rate's amount, as money
    assert "sns_share" in page.text  # the default actions, in a table
    assert 'href="/console/rules/edit"' in page.text


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["analyst", "support"])
async def test_roles_the_api_refuses_do_not_see_the_rules(
    client: httpx.AsyncClient, settings: Settings, role: str,
) -> None:
    """As GET /v1/earning-rules: marketing editors only; an analyst is refused too."""
    token = await sign_in(client, role)
    assert "/console/rules" not in (await client.get("/console")).text
    for path in ("/console/rules", "/console/rules/edit", "/console/rules/diff"):
        refused = await client.get(path)
        assert refused.status_code == 403, path
        assert "text/html" in refused.headers["content-type"]
    posted = await client.post("/console/rules/edit", data={
        "rules": "{}", "version": "1", "csrf_token": token})
    assert posted.status_code == 403
    simulated = await client.post("/console/rules/simulate", data={
        "kind": "purchase", "total": "1000", "csrf_token": token})
    assert simulated.status_code == 403
    assert await versions(settings) == [1]


@pytest.mark.usefixtures("seeded")
async def test_an_edit_without_the_csrf_token_is_refused_and_saves_nothing(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    await sign_in(client, "marketer")
    rules, version = await editor(client)
    rules["base"]["points"] = 2
    refused = await client.post("/console/rules/edit", data={
        "rules": json.dumps(rules), "version": version})
    assert refused.status_code == 403
    assert "セキュリティトークン" in refused.text
    wrong = await client.post("/console/rules/simulate", data={
        "kind": "purchase", "total": "1000", "csrf_token": "x" * 43})
    assert wrong.status_code == 403
    assert await versions(settings) == [1]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("change", "path", "message"), [
    (lambda r: r["base"].update(per_amount=0), "base.per_amount", "Expected `int` >= 1"),
    (lambda r: r.update(rounding="sideways"), "rounding", "Invalid enum value 'sideways'"),
    (lambda r: r.update(surprise=1), "", "unknown field `surprise`"),
    (lambda r: r["multipliers"].append({"name": "x", "percent": 200,
                                        "when": [{"type": "moon"}]}),
     "multipliers[0].when[0].type", "Invalid value 'moon'"),
    (lambda r: r["base"].update(points=10_000, per_amount=1), "base",
     "could earn"),  # the API's range check, named by its field
])
async def test_invalid_rules_are_a_400_with_the_field_and_nothing_saved(
    client: httpx.AsyncClient, settings: Settings, change: object, path: str, message: str,
) -> None:
    token = await sign_in(client, "marketer")
    rules, version = await editor(client)
    assert callable(change)
    change(rules)
    answer = await client.post("/console/rules/edit", data={
        "rules": json.dumps(rules), "version": version, "csrf_token": token})
    assert answer.status_code == 400, answer.text
    assert "保存されていません" in answer.text
    if path:
        assert f"<code>{path}</code>" in answer.text
    assert str(escape(message)) in answer.text
    assert 'aria-invalid="true"' in answer.text
    # The text typed is kept, to be corrected.
    found = TEXTAREA.search(answer.text)
    assert found
    assert await versions(settings) == [1]


@pytest.mark.usefixtures("seeded")
async def test_malformed_json_names_the_line_and_saves_nothing(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/rules/edit", data={
        "rules": '{\n  "base": {"points": 1,}\n}', "version": "1", "csrf_token": token})
    assert answer.status_code == 400
    assert "line 2, column" in answer.text
    duplicated = await client.post("/console/rules/edit", data={
        "rules": '{"rounding": "floor", "rounding": "ceil"}', "version": "1",
        "csrf_token": token})
    assert duplicated.status_code == 400
    assert "appears twice" in duplicated.text
    assert await versions(settings) == [1]


@pytest.mark.usefixtures("seeded")
async def test_a_valid_edit_makes_exactly_one_new_version(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "marketer")
    rules, version = await editor(client)
    rules["multipliers"].append({"name": "週末2倍", "percent": 200,
                                 "when": [{"type": "weekday", "days": ["sat", "sun"]}]})
    saved = await client.post("/console/rules/edit", data={
        "rules": json.dumps(rules), "version": version, "csrf_token": token})
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/console/rules?saved=2"
    assert await versions(settings) == [2, 1]
    page = await client.get(saved.headers["location"])
    assert "バージョン 2 を保存しました" in page.text
    assert "週末2倍" in page.text
    assert "曜日" in page.text  # the condition in words
    assert "marketer@staff.example" in page.text  # who made it, in the history
    audit = await fetch(settings, "select action, details from audit_log"
                                  " where action = 'earning_rules.replace'")
    assert [(row["action"], row["details"]["version"], row["details"]["via"])
            for row in audit] == [("earning_rules.replace", 2, "console")]
    # The same form sent again (a double click) is refused: the rules moved on.
    again = await client.post("/console/rules/edit", data={
        "rules": json.dumps(rules), "version": version, "csrf_token": token})
    assert again.status_code == 409
    assert "別のバージョンが保存された" in again.text
    assert await versions(settings) == [2, 1]


@pytest.mark.usefixtures("seeded")
async def test_simulating_a_purchase_returns_the_trace_as_an_htmx_fragment(
    client: httpx.AsyncClient,
) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/rules/simulate", headers={"HX-Request": "true"}, data={
        "kind": "purchase", "store_code": "SHIBUYA", "total": "1250", "redeem_points": "0",
        "sku": ["A-1", "B-2", ""], "category": ["food", "", ""], "quantity": ["1", "2", ""],
        "unit_price": ["250", "500", ""], "csrf_token": token})
    assert answer.status_code == 200, answer.text
    assert "<html" not in answer.text
    assert "12 ポイント" in answer.text
    assert "1250 paid: 1 per 100" in answer.text  # the API's trace, as it says it
    assert "A-1" in answer.text
    assert "B-2" in answer.text


@pytest.mark.usefixtures("seeded")
async def test_simulating_an_action_shows_its_cap(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "marketer")
    answer = await client.post("/console/rules/simulate", headers={"HX-Request": "true"}, data={
        "kind": "action", "type": "site_visit", "today": "1", "csrf_token": token})
    assert answer.status_code == 200
    assert "site_visit: limit of 1 a day reached" in answer.text


@pytest.mark.usefixtures("seeded")
async def test_a_bad_simulation_says_which_field(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "marketer")
    partial = await client.post("/console/rules/simulate", headers={"HX-Request": "true"},
                                data={"kind": "purchase", "total": "-5", "csrf_token": token})
    # A 400 fragment, which htmx swaps in where the trace would be (base.html's htmx-config).
    assert partial.status_code == 400
    assert "<code>purchase.total</code>" in partial.text
    page = await client.post("/console/rules/simulate",
                             data={"kind": "action", "type": "teleport", "csrf_token": token})
    assert page.status_code == 400
    assert "no action &#39;teleport&#39;" in page.text
    assert "<html" in page.text


@pytest.mark.usefixtures("seeded")
async def test_the_diff_shows_the_changed_line_with_its_sign(
    client: httpx.AsyncClient,
) -> None:
    token = await sign_in(client, "marketer")
    rules, version = await editor(client)
    rules["base"]["points"] = 3
    saved = await client.post("/console/rules/edit", data={
        "rules": json.dumps(rules), "version": version, "csrf_token": token})
    assert saved.status_code == 303
    diff = await client.get("/console/rules/diff", params={"from": "1", "to": "2"})
    assert diff.status_code == 200
    removed = re.search(r'<tr class="removed">.*?</tr>', diff.text, re.S)
    added = re.search(r'<tr class="added">.*?</tr>', diff.text, re.S)
    assert removed
    assert added
    assert "−" in removed.group(0)
    assert '"points": 1<' in removed.group(0).replace("&#34;", '"')
    assert "+" in added.group(0)
    assert '"points": 3<' in added.group(0).replace("&#34;", '"')
    # By default: the version in force against the one before.
    assert (await client.get("/console/rules/diff")).text.count('class="added"') == 1
    missing = await client.get("/console/rules/diff", params={"from": "1", "to": "9"})
    assert missing.status_code == 400
    assert "バージョン 9 はありません" in missing.text


def test_the_condition_labels_are_translated() -> None:
    with (LOCALE / "ja" / "LC_MESSAGES" / "console.po").open("rb") as po:
        catalogue = {m.id: m.string for m in read_po(po) if m.id}
    labels = {rulebook.describe_condition(c).label for c in (
        CategoryIs(categories=["a"]), SkuIs(skus=["a"]), StoreIs(stores=["A"]),
        WeekdayIs(days=["mon"]), TimeWindow(start=dt.time(1), end=dt.time(2)),
        BirthdayMonth())}
    assert all(catalogue.get(label) for label in labels), labels
    assert all(catalogue.get(day) for day in WEEKDAYS)  # the days a weekday condition names


def test_rules_the_schema_reads_are_what_the_editor_shows() -> None:
    assert json.loads(rulebook.pretty_json(EarningRules()))["base"] == {
        "points": 1, "per_amount": 100}


@pytest.mark.usefixtures("seeded")
async def test_a_change_multiplying_recent_earnings_needs_the_confirmation(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    """As PUT /v1/earning-rules: refused until confirmed, the API's numbers shown."""
    await fetch(settings, """
        update purchases set lines = '[{"sku": "A", "unit_price": 1000, "quantity": 1,
                                        "category": "food"}]', total = 1000
        """)
    token = await sign_in(client, "marketer")
    rules, version = await editor(client)
    rules["base"]["points"] = 100
    form = {"rules": json.dumps(rules), "version": version, "csrf_token": token}
    refused = await client.post("/console/rules/edit", data=form)
    assert refused.status_code == 400
    assert "この変更には確認が必要です" in refused.text
    assert "would earn" in refused.text  # the API's own figures
    assert await versions(settings) == [1]
    confirmed = await client.post("/console/rules/edit", data={**form, "confirm": "yes"})
    assert confirmed.status_code == 303
    assert await versions(settings) == [2, 1]
