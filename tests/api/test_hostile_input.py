"""What a fuzzer and hand-made bodies found: each is a 4xx problem+json that changes nothing.

Dates at the ends of the calendar, bodies that are not UTF-8 or not JSON or name a key twice,
control characters and undeclared shapes in query strings, lines that do not add up to the
total, an issue of a coupon template that does not exist, forged cursors.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
from typing import Any

import asyncpg
import httpx
import pytest

from loyalty.core.settings import Settings
from tests.factories import PASSWORD, Actors, SignedUp, bearer, purchase_body

Client = httpx.AsyncClient
_n = itertools.count()

# Year 1 and year 9999, bare and with the offsets that overflow once converted to UTC.
OUTSIDE_THE_CALENDAR = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
                        "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                        "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z"]
NOW = dt.datetime.now(dt.UTC)


async def table_counts(settings: Settings) -> dict[str, int]:
    """Rows of every table of the schema: a refused request must leave all of them alone."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        tables = [r["relname"] for r in await conn.fetch(
            "select relname from pg_stat_user_tables where schemaname = 'public'"
            " and relname not in ('schema_migrations', 'audit_log') order by relname")]
        return {t: int(await conn.fetchval(f'select count(*) from "{t}"')) for t in tables}  # noqa: S608 - table names from the test's own constant list
    finally:
        await conn.close()


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].startswith("urn:loyalty:problem:")
    assert body["detail"]


def purchase(member: SignedUp, **fields: Any) -> dict[str, Any]:
    return {**purchase_body(member.member_id, 1000, prefix="H", occurred_at=NOW,
                            lines=[{"sku": "TEA", "unit_price": 500, "quantity": 2}]), **fields}


@pytest.fixture
async def cast(client: Client, actors: Actors) -> dict[str, Any]:
    till_key, _ = await actors.terminal("HOSTILE-01")
    member = await actors.member()
    # The first quote writes the default earning rules: before the counts, not between them.
    first = await client.post("/v1/pos/quotes", json=purchase(member), headers=bearer(till_key))
    assert first.status_code == 200, first.text
    return {"member": member, "till": bearer(till_key),
            "marketer": bearer(await actors.staff("marketer")),
            "admin": bearer(await actors.staff("admin"))}


def _moments_in_every_body(cast: dict[str, Any], moment: str) -> list[tuple[str, str, Any, Any]]:
    member, till, marketer = cast["member"], cast["till"], cast["marketer"]
    key = {"Idempotency-Key": f"h-{next(_n)}"}
    return [
        ("POST", "/v1/pos/purchases", purchase(member, occurred_at=moment), {**till, **key}),
        ("POST", "/v1/pos/quotes", purchase(member, occurred_at=moment), till),
        ("POST", "/v1/pos/coupons/validate", {"coupons": [{"code": "X"}], "occurred_at": moment,
                                              "lines": [{"sku": "A", "unit_price": 1}]}, till),
        ("POST", "/v1/segments/preview", {"definition": {"type": "joined", "after": moment}},
         marketer),
        ("POST", "/v1/segments", {"name": f"S{next(_n)}",
                                  "definition": {"type": "last_activity", "before": moment}},
         marketer),
        ("POST", "/v1/campaigns", {"name": f"C{next(_n)}", "starts_at": moment,
                                   "members": [member.member_id],
                                   "action": {"type": "bonus_points", "points": 10}},
         marketer),
        ("POST", "/v1/coupon-templates", {"name": f"T{next(_n)}",
                                          "discount": {"type": "fixed_amount", "amount": 100},
                                          "validity": {"type": "window", "valid_until": moment}},
         marketer),
        ("POST", "/v1/events", {"name": "Tasting", "place": "Shibuya", "capacity": 5,
                                "starts_at": moment, "ends_at": "2030-01-01T00:00:00Z"},
         marketer),
        ("POST", "/v1/earning-rules/simulate", {"purchase": {"occurred_at": moment,
                                                             "total": 100}}, marketer),
    ]


@pytest.mark.parametrize("moment", OUTSIDE_THE_CALENDAR)
async def test_times_outside_2000_to_2100_are_refused_wherever_a_body_carries_one(
    client: Client, cast: dict[str, Any], settings: Settings, moment: str
) -> None:
    before = await table_counts(settings)
    for method, path, body, headers in _moments_in_every_body(cast, moment):
        response = await client.request(method, path, json=body, headers=headers)
        assert_problem(response, 400)
        assert "2000-01-01" in response.text, (path, response.text)
    assert await table_counts(settings) == before


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                    "0.5", "1700000000", "2026-11-23T12:00:00"])
async def test_times_in_query_strings_are_bounded_and_need_an_offset(
    client: Client, cast: dict[str, Any], moment: str
) -> None:
    for name in ("joined_from", "joined_to"):
        response = await client.get("/v1/members", params={name: moment},
                                    headers=cast["admin"])
        assert_problem(response, 400)


@pytest.mark.parametrize("birth_date", ["0001-01-01", "9999-12-31", "1899-12-31", "tomorrow"])
async def test_birth_dates_are_from_1900_up_to_today(
    client: Client, cast: dict[str, Any], settings: Settings, birth_date: str
) -> None:
    if birth_date == "tomorrow":
        birth_date = str((NOW + dt.timedelta(days=2)).date())
    before = await table_counts(settings)
    registered = await client.post("/v1/auth/member/register", json={
        "email": f"born{next(_n)}@example.com", "password": PASSWORD, "name": "Born",
        "birth_date": birth_date})
    assert_problem(registered, 400)
    updated = await client.patch("/v1/me", json={"birth_date": birth_date},
                                 headers=cast["member"].headers)
    assert_problem(updated, 400)
    assert await table_counts(settings) == before


async def test_a_birth_date_of_today_and_of_1900_are_accepted(client: Client,
                                                             cast: dict[str, Any]) -> None:
    for day in ("1900-01-01", str(NOW.date())):
        updated = await client.patch("/v1/me", json={"birth_date": day},
                                     headers=cast["member"].headers)
        assert updated.status_code == 200, updated.text
        assert updated.json()["birth_date"] == day


async def test_bodies_that_are_not_utf8_are_400(client: Client, cast: dict[str, Any],
                                               settings: Settings) -> None:
    member, json_type = cast["member"], {"content-type": "application/json"}
    before = await table_counts(settings)
    for path, method, headers in [
        ("/v1/pos/purchases", "POST", {**cast["till"], "Idempotency-Key": "utf"}),
        ("/v1/auth/member/register", "POST", {}),
        ("/v1/me", "PATCH", member.headers),
        ("/v1/segments", "POST", cast["marketer"]),
        ("/v1/campaigns", "POST", cast["marketer"]),
    ]:
        response = await client.request(method, path, content=b'{"name": "\xff\xfe"}',
                                        headers={**headers, **json_type})
        assert_problem(response, 400)
        assert "UTF-8" in response.json()["detail"]
    assert await table_counts(settings) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None, "application/json; charset=latin-1"])
async def test_a_body_not_sent_as_json_is_415(client: Client, cast: dict[str, Any],
                                             settings: Settings, content_type: str | None) -> None:
    import json

    before = await table_counts(settings)
    body = json.dumps(purchase(cast["member"])).encode()
    headers = {**cast["till"], "Idempotency-Key": f"ct-{next(_n)}"}
    if content_type is not None:
        headers["content-type"] = content_type
    response = await client.post("/v1/pos/purchases", content=body, headers=headers)
    assert_problem(response, 415)
    assert "Content-Type: application/json" in response.json()["detail"]
    assert await table_counts(settings) == before


async def test_a_key_given_twice_is_400_not_the_last_one_winning(
    client: Client, cast: dict[str, Any], settings: Settings
) -> None:
    before = await table_counts(settings)
    member = cast["member"]
    body = (b'{"member": {"id": "' + member.member_id.encode() + b'"}, "receipt_id": "TWICE",'
            b' "occurred_at": "' + NOW.isoformat().encode() + b'", "currency": "JPY",'
            b' "total": 1000, "total": 1000000,'
            b' "lines": [{"sku": "TEA", "unit_price": 1000}]}')
    response = await client.post("/v1/pos/purchases", content=body, headers={
        **cast["till"], "Idempotency-Key": "twice", "content-type": "application/json"})
    assert_problem(response, 400)
    assert "'total' appears twice" in response.json()["detail"]
    nested = (b'{"name": "N", "password": "' + PASSWORD.encode() + b'", "email": "n@example.com",'
              b' "consents": [{"purpose": "push", "granted": true, "granted": false,'
              b' "text_version": "1"}]}')
    response = await client.post("/v1/auth/member/register", content=nested,
                                 headers={"content-type": "application/json"})
    assert_problem(response, 400)
    assert await table_counts(settings) == before


@pytest.mark.parametrize("query", ["q=%00", "q=a%1Fb", "q=%C2%85"])
async def test_control_characters_in_a_staff_search_are_400(client: Client, cast: dict[str, Any],
                                                            query: str) -> None:
    assert_problem(await client.get(f"/v1/members?{query}", headers=cast["admin"]), 400)


@pytest.mark.parametrize("query", ["number=%00", "number=abc", "number=12%0A",
                                   "phone=%00", "card=%00" + "a" * 20, "card=" + "!" * 20])
async def test_a_till_lookup_checks_the_declared_shape_of_its_parameter(
    client: Client, cast: dict[str, Any], query: str
) -> None:
    response = await client.get(f"/v1/pos/members/lookup?{query}", headers=cast["till"])
    assert_problem(response, 400)


async def test_a_search_with_text_still_finds_the_member(client: Client, actors: Actors,
                                                         cast: dict[str, Any]) -> None:
    await actors.member(name="山田 花子", name_kana="やまだ はなこ",
                        email=f"hanako{next(_n)}@example.com")
    response = await client.get("/v1/members", params={"q": "やまだ"}, headers=cast["admin"])
    assert response.status_code == 200, response.text
    assert [m["name"] for m in response.json()["items"]] == ["山田 花子"]


@pytest.mark.parametrize(("fields", "code"), [
    ({"total": 1, "lines": [{"sku": "GOLD", "unit_price": 10_000_000_000}]}, "total_mismatch"),
    ({"total": 1001}, "total_mismatch"),
    ({"total": 999}, "total_mismatch"),
    ({"total": 0, "discount": 1001}, "discount_exceeds_lines"),
])
async def test_a_total_the_lines_do_not_add_up_to_is_422(
    client: Client, cast: dict[str, Any], settings: Settings, fields: dict[str, Any], code: str
) -> None:
    before = await table_counts(settings)
    for path, headers in [("/v1/pos/quotes", cast["till"]),
                          ("/v1/pos/purchases", {**cast["till"], "Idempotency-Key": "sum"})]:
        response = await client.post(path, json=purchase(cast["member"], **fields),
                                     headers=headers)
        assert_problem(response, 422)
        assert response.json()["type"].endswith(code)
    assert await table_counts(settings) == before


async def test_the_tills_own_discount_is_said_in_discount(client: Client,
                                                          cast: dict[str, Any]) -> None:
    response = await client.post(
        "/v1/pos/purchases", json=purchase(cast["member"], total=800, discount=200),
        headers={**cast["till"], "Idempotency-Key": "markdown"})
    assert response.status_code == 201, response.text
    assert response.json()["points_earned"] == 8


async def test_a_return_of_no_lines_is_400_saying_so(client: Client, cast: dict[str, Any]) -> None:
    bought = await client.post("/v1/pos/purchases", json=purchase(cast["member"]),
                               headers={**cast["till"], "Idempotency-Key": "to-return"})
    assert bought.status_code == 201, bought.text
    response = await client.post(
        f"/v1/pos/purchases/{bought.json()['purchase_id']}/returns", json={"lines": []},
        headers={**cast["till"], "Idempotency-Key": "nothing-back"})
    assert_problem(response, 400)
    assert "more is more than was bought" not in response.text


async def test_issuing_a_template_that_does_not_exist_is_404(client: Client,
                                                             cast: dict[str, Any]) -> None:
    response = await client.post(
        "/v1/coupon-templates/01940000-0000-7000-8000-000000000000/issue",
        json={"members": [cast["member"].member_id]},
        headers={**cast["marketer"], "Idempotency-Key": "ghost"})
    assert_problem(response, 404)
    assert response.json()["type"].endswith("coupon_template_not_found")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                    "not a time"])
async def test_a_forged_cursor_holding_a_time_is_refused(client: Client, cast: dict[str, Any],
                                                         moment: str) -> None:
    member = cast["member"]
    entries = base64.urlsafe_b64encode(
        f"{moment}|01940000-0000-7000-8000-000000000000".encode()).decode().rstrip("=")
    response = await client.get("/v1/me/points/history", params={"cursor": entries},
                                headers=member.headers)
    assert_problem(response, 422)
    events = base64.urlsafe_b64encode(
        f"{moment}|01940000-0000-7000-8000-000000000000".encode()).decode().rstrip("=")
    response = await client.get("/v1/events", params={"cursor": events},
                                headers=cast["marketer"])
    assert_problem(response, 422)


async def test_a_purchase_recorded_after_its_points_expired_earns_nothing_and_says_why(
    client: Client, cast: dict[str, Any]
) -> None:
    member, till = cast["member"], cast["till"]
    long_ago = (NOW - dt.timedelta(days=800)).isoformat()  # points last 12 months by default
    late = await client.post("/v1/pos/purchases", json=purchase(member, occurred_at=long_ago),
                             headers={**till, "Idempotency-Key": "late-upload"})
    assert late.status_code == 201, late.text
    body = late.json()
    assert body["points_earned"] == 0
    assert body["balance"] == {"available": 0, "pending": 0}
    assert body["trace"]["steps"][-1]["rule"] == "expired"
    assert sum(step["points"] for step in body["trace"]["steps"]) == 0
    recent = (NOW - dt.timedelta(days=300)).isoformat()
    kept = await client.post("/v1/pos/purchases", json=purchase(member, occurred_at=recent),
                             headers={**till, "Idempotency-Key": "recent-upload"})
    assert kept.json()["points_earned"] == 10
    points = (await client.get("/v1/me/points", headers=member.headers)).json()
    assert points["available"] == 10


@pytest.mark.parametrize(("value", "status"), [(3.889590542548425e16, 400), (2**53 + 2, 400),
                                               (12345.5, 201), (2**53, 201), (-0.25, 201)])
async def test_a_number_in_a_saved_segment_reads_back_as_it_was_saved(
    client: Client, cast: dict[str, Any], value: float, status: int
) -> None:
    """PostgreSQL's jsonb writes 3.9e16 back as an integer, which no longer fit the definition's
    type: the segment was saved, then every read of it was a 500. Numbers are now bounded to
    what storage keeps exactly."""
    definition = {"type": "attribute", "key": "spend", "test": {"op": "gt", "value": value}}
    saved = await client.post("/v1/segments", json={"name": f"N{next(_n)}",
                                                    "definition": definition},
                              headers=cast["marketer"])
    assert saved.status_code == status, saved.text
    if status == 201:
        read = await client.get(f"/v1/segments/{saved.json()['segment_id']}",
                                headers=cast["marketer"])
        assert read.status_code == 200, read.text
        assert read.json()["definition"]["test"]["value"] == value
