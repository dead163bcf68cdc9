"""Bad input gets a clear 4xx problem+json and changes nothing; no input makes a 500."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from loyalty.core.settings import Settings
from tests.factories import PASSWORD, Actors, SignedUp, bearer

Client = httpx.AsyncClient

TABLES = ("members", "member_consents", "staff", "stores", "terminals", "refresh_tokens")


async def snapshot(settings: Settings) -> dict[str, int]:
    """Row counts of every table a write could touch, and a digest of their contents."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        counts = {t: int(await conn.fetchval(f"select count(*) from {t}")) for t in TABLES}  # noqa: S608 - table names from the test's own constant list
        counts["members_digest"] = hash(tuple(
            tuple(r) for r in await conn.fetch("select * from members order by member_id")))
        return counts
    finally:
        await conn.close()


def assert_problem(response: Any, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, response.text
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].startswith("urn:loyalty:problem:")
    assert body["status"] == response.status_code
    assert body["detail"]


async def test_malformed_and_wrongly_typed_bodies_change_nothing(
    client: Client, actors: Actors, settings: Settings
) -> None:
    member = await actors.member(email="keep@example.com")
    before = await snapshot(settings)
    register = "/v1/auth/member/register"
    valid = {"email": "new@example.com", "password": PASSWORD, "name": "New"}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", register, {"content": b'{"email": "new@example.com", "pass',
                            "headers": {"content-type": "application/json"}}),
        ("POST", register, {"content": b"\xff\xfe not json at all",
                            "headers": {"content-type": "application/json"}}),
        ("POST", register, {"json": [valid]}),
        ("POST", register, {"json": "a string"}),
        ("POST", register, {"json": {**valid, "password": 12345678}}),
        ("POST", register, {"json": {**valid, "birth_date": "yesterday"}}),
        ("POST", register, {"json": {**valid, "is_admin": True}}),
        ("POST", register, {"json": {**valid, "name": "x" * 101}}),
        ("POST", register, {"json": {**valid, "name": "nul\x00byte"}}),
        ("POST", register, {"json": {**valid, "password": "p" * 10_000}}),
        ("POST", register, {"json": {**valid, "email": "not-an-email"}}),
        ("POST", register, {"json": {**valid, "phone": "12"}}),
        ("POST", register, {"json": {**valid, "name_kana": "Latin letters"}}),
        ("POST", register, {"json": {**valid, "attributes": {f"k{i}": i for i in range(51)}}}),
        ("POST", register, {"json": {**valid, "attributes": {"nested": {"deep": [1]}}}}),
        ("POST", register, {"json": {**valid, "consents": [{"purpose": "telepathy",
                                                            "granted": True,
                                                            "text_version": "1"}]}}),
        ("PATCH", "/v1/me", {"json": {"status": "suspended"}}),
        ("PATCH", "/v1/me", {"json": {"email": "keep@example.com", "name": ""}}),
        ("PATCH", "/v1/me", {"json": {"phone": "+1 not a phone"}}),
        ("PUT", "/v1/me/consents", {"json": {"consents": [
            {"purpose": "push", "granted": True, "text_version": "1"},
            {"purpose": "push", "granted": False, "text_version": "1"}]}}),
    ]
    for method, path, kwargs in cases:
        headers = {**member.headers, **kwargs.pop("headers", {})}
        response = await client.request(method, path, headers=headers, **kwargs)
        assert_problem(response)
    assert await snapshot(settings) == before


async def test_deeply_nested_json_is_refused(client: Client) -> None:
    body = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await client.post("/v1/auth/member/register", content=body,
                                 headers={"content-type": "application/json"})
    assert_problem(response)


async def test_huge_body_is_413(client: Client, settings: Settings) -> None:
    before = await snapshot(settings)
    body = b'{"name": "' + b"x" * (settings.max_request_bytes + 1) + b'"}'
    response = await client.post("/v1/auth/member/register", content=body,
                                 headers={"content-type": "application/json"})
    assert_problem(response, 413)
    assert await snapshot(settings) == before


async def test_bad_query_and_path_parameters_are_4xx(client: Client, actors: Actors) -> None:
    admin = bearer(await actors.staff("admin"))
    for path in ["/v1/members?limit=abc", "/v1/members?limit=0", "/v1/members?limit=100000",
                 "/v1/members?status=sleeping", "/v1/members?joined_from=soon",
                 "/v1/members?cursor=%%%%", "/v1/members?cursor=" + "A" * 300,
                 "/v1/members?q=" + "q" * 101, "/v1/members/not-a-uuid",
                 "/v1/members/00000000-0000-0000-0000-000000000000",
                 "/v1/terminals?include_revoked=perhaps",
                 "/v1/analytics/kpis?from=soon&to=2025-01-31",
                 "/v1/analytics/kpis?from=2025-02-01&to=2025-01-31",
                 "/v1/analytics/cohorts?from=2025-13&to=2025-12",
                 "/v1/jobs/no_such_job/runs", "/v1/jobs/dormancy/runs?cursor=x",
                 "/v1/jobs/dormancy/runs?limit=0"]:
        assert_problem(await client.get(path, headers=admin))
    assert_problem(await client.delete("/v1/terminals/00000000-0000-0000-0000-000000000000",
                                       headers=admin), 404)


async def test_wrong_method_and_unknown_path_are_problems(client: Client) -> None:
    assert_problem(await client.put("/v1/me"), 405)
    assert_problem(await client.get("/v1/nothing-here"), 404)


async def test_authorization_header_of_another_scheme_is_401(client: Client) -> None:
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "token"]:
        assert_problem(await client.get("/v1/me", headers={"Authorization": value}), 401)


async def test_duplicate_store_and_staff_are_409(client: Client, actors: Actors) -> None:
    admin = bearer(await actors.staff("admin", email="boss@staff.example"))
    assert (await client.post("/v1/stores", headers=admin,
                              json={"code": "S1", "name": "One"})).status_code == 201
    assert_problem(await client.post("/v1/stores", headers=admin,
                                     json={"code": "S1", "name": "Again"}), 409)
    assert_problem(await client.post("/v1/staff", headers=admin, json={
        "email": "BOSS@staff.example", "password": PASSWORD, "role": "admin"}), 409)
    assert_problem(await client.post("/v1/terminals", headers=admin,
                                     json={"store_code": "NOWHERE"}), 404)


# -- fuzzing: arbitrary JSON at every route that takes a body --------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from([
    "email", "phone", "password", "name", "name_kana", "birth_date", "postal_code",
    "attributes", "consents", "status", "refresh_token", "code", "store_code", "role",
    "display_name", "purpose", "granted", "text_version", "channel", "member", "receipt_id",
    "occurred_at", "total", "currency", "lines", "redeem_points", "amount", "type", "target",
    "points", "reason", "from_member_id", "base", "multipliers", "bonuses", "actions",
    "expiry", "purchase", "action", "rules", "tiers", "levels", "measure", "period",
    "threshold", "multiplier_percent", "coupons", "discount", "validity", "min_spend",
    "stores", "categories", "per_member_limit", "total_limit", "stackable", "on_return",
    "public_code", "count", "prefix", "members", "segment_id", "definition", "sample_size",
    "holdout_percent", "max_members", "starts_at", "ends_at", "capacity", "place",
    "invitation_only", "description", "active", "coupon_id", "items", "kind",
    "idempotency_key", "returned", "purchase_id",
])
bodies = st.one_of(json_values, st.dictionaries(field_names, json_values, max_size=6))

BODY_ROUTES = [
    ("POST", "/v1/auth/member/register", None), ("POST", "/v1/auth/member/login", None),
    ("POST", "/v1/auth/staff/login", None), ("POST", "/v1/auth/refresh", None),
    ("POST", "/v1/auth/logout", None), ("PATCH", "/v1/me", "member"),
    ("PUT", "/v1/me/consents", "member"), ("PATCH", "/v1/members/{id}", "admin"),
    ("POST", "/v1/terminals", "admin"), ("POST", "/v1/staff", "admin"),
    ("POST", "/v1/stores", "admin"), ("POST", "/v1/pos/quotes", "terminal"),
    ("POST", "/v1/pos/purchases", "terminal"),
    ("POST", "/v1/pos/purchases/{purchase}/returns", "terminal"),
    ("POST", "/v1/pos/batches", "terminal"),
    ("POST", "/v1/me/actions", "member"),
    ("POST", "/v1/members/{id}/adjustments", "keyed_admin"),
    ("POST", "/v1/members/{id}/merge", "keyed_admin"), ("PUT", "/v1/earning-rules", "admin"),
    ("POST", "/v1/earning-rules/simulate", "admin"), ("PUT", "/v1/tiers", "admin"),
    ("POST", "/v1/earning-rules/backtest", "admin"),
    ("POST", "/v1/coupon-templates", "admin"),
    ("PATCH", "/v1/coupon-templates/{template}", "admin"),
    ("POST", "/v1/coupon-templates/{template}/codes", "admin"),
    ("POST", "/v1/coupon-templates/{template}/issue", "keyed_admin"),
    ("POST", "/v1/pos/coupons/validate", "terminal"), ("POST", "/v1/segments", "admin"),
    ("PATCH", "/v1/segments/{segment}", "admin"), ("POST", "/v1/segments/preview", "admin"),
    ("POST", "/v1/campaigns", "admin"), ("POST", "/v1/events", "admin"),
    ("PATCH", "/v1/events/{event}", "admin"),
    ("POST", "/v1/pos/events/{event}/checkins", "terminal"),
    ("POST", "/v1/points/grants", "keyed_admin"),
]


@pytest.fixture
async def fuzz_callers(client: Client, actors: Actors) -> dict[str, Any]:
    member: SignedUp = await actors.member()
    key, _ = await actors.terminal("FUZZ")
    bought = await client.post("/v1/pos/purchases", headers={
        **bearer(key), "Idempotency-Key": "fuzz-setup"}, json={
        "member": {"id": member.member_id}, "receipt_id": "F-1", "total": 1000,
        "occurred_at": "2026-01-05T10:00:00+09:00", "currency": "JPY",
        "lines": [{"sku": "S", "unit_price": 1000}]})
    assert bought.status_code == 201, bought.text
    admin = bearer(await actors.staff("admin"))

    async def made(path: str, body: dict[str, Any], field: str) -> str:
        response = await client.post(path, headers=admin, json=body)
        assert response.status_code == 201, response.text
        return str(response.json()[field])

    return {"member": member.headers, "admin": admin,
            "keyed_admin": {**admin, "Idempotency-Key": "fuzz"},
            "terminal": {**bearer(key), "Idempotency-Key": "fuzz"},
            "member_id": member.member_id, "purchase": bought.json()["purchase_id"],
            "template": await made("/v1/coupon-templates", {
                "name": "Fuzz", "discount": {"type": "fixed_amount", "amount": 5}},
                "template_id"),
            "segment": await made("/v1/segments", {
                "name": "Fuzz", "definition": {"type": "status", "statuses": ["active"]}},
                "segment_id"),
            "event": await made("/v1/events", {
                "name": "Fuzz", "place": "2F", "capacity": 5, "points": 1,
                "starts_at": "2030-01-05T10:00:00+09:00",
                "ends_at": "2030-01-05T12:00:00+09:00"}, "event_id")}


@pytest.mark.parametrize(("method", "path", "caller"), BODY_ROUTES)
@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
async def test_no_body_makes_a_500(
    client: Client, fuzz_callers: dict[str, Any], method: str, path: str, caller: str | None,
    body: Any,
) -> None:
    headers = fuzz_callers[caller] if caller else {}
    for name in ("purchase", "template", "segment", "event"):
        path = path.replace("{" + name + "}", fuzz_callers[name])
    path = path.replace("{id}", fuzz_callers["member_id"])
    response = await client.request(method, path, headers=headers, json=body)
    assert response.status_code < 500, response.text
