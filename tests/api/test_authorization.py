"""The authorization matrix: every route the app registers × every kind of caller.

The table below must name every route: the test enumerates the app's routes, so a route added
without deciding who may call it fails here. For each route, callers in ``allowed`` get the
route's success status; anyone else gets 401 without a credential and 403 with the wrong one.
And every answer to every caller is searched for member A's contact details and identifiers,
which only the callers docs/security.md names may see.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar

from tests.factories import (
    ACTIVE,
    CALLERS,
    PASSWORD,
    STAFF,
    Actors,
    World,
    bearer,
    idempotency,
    member_a_path,
    member_a_purchase,
    new_event,
    new_staff,
    new_store,
    registered_routes,
)

Client = httpx.AsyncClient

EVERYONE = set(CALLERS)
_unique = itertools.count()


Body = Callable[[World], Any] | None


@dataclass(frozen=True)
class Rule:
    allowed: set[str]
    ok: int = 200
    body: Body = None
    path: Callable[[World], str] | None = None
    headers: Callable[[], dict[str, str]] | None = None
    # Callers who pass the guard but must not find the object (another member's entry).
    not_found: frozenset[str] = frozenset()
    # What every caller outside ``allowed`` gets when it is not 401/403 by credential (a route
    # with a credential of its own, such as the metrics token).
    refused: int | None = None


def _register(_: World) -> dict[str, Any]:
    return {"email": f"new{next(_unique)}@example.com", "password": PASSWORD, "name": "New"}


def _member_login(world: World) -> dict[str, Any]:
    return {"email": world.extra["login_email"], "password": PASSWORD}


def _staff_login(world: World) -> dict[str, Any]:
    return {"email": world.extra["staff_email"], "password": PASSWORD}


def _refresh(world: World) -> dict[str, Any]:
    return {"refresh_token": world.extra["refresh_tokens"].pop()}


def _backtest_today() -> dict[str, Any]:
    # Today in UTC is today or yesterday in any business time zone east of it: never after.
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return {"rules": {}, "from": today, "to": today}


def _merge(world: World) -> dict[str, Any]:
    return {"from_member_id": world.extra["spare_members"].pop()}


def _terminal_path(world: World) -> str:
    return f"/v1/terminals/{world.spare_terminal_id}"


def _at(path: str) -> Callable[[World], str]:
    """``path`` with the ids of the world's objects filled in (``{segment_id}``, ...)."""
    return lambda world: path.format(**world.extra)


_segment_path = _at("/v1/segments/{segment_id}")
_template_path = _at("/v1/coupon-templates/{template_id}")
_campaign_path = _at("/v1/campaigns/{campaign_id}")
_event_path = _at("/v1/events/{event_id}")
_rsvp_path = _at("/v1/me/events/{event_id}/rsvp")
_hook_path = _at("/v1/webhooks/endpoints/{webhook_endpoint_id}")


def _coupon_campaign(world: World) -> dict[str, Any]:
    return {"name": f"Campaign {next(_unique)}", "members": [world.member_a_id],
            "action": {"type": "issue_coupon", "template_id": world.extra["template_id"]}}


MEMBER_READERS = {"admin", "support", "marketer"}
LEDGER_READERS = {"admin", "support"}
# docs/security.md: who may see member A's contact details (e-mail, phone, postal code, birth
# date), and who must never see A's member id or number (analysts work on aggregates).
CONTACT_SEERS = {"admin", "support", "member_a"}
IDENTIFIER_BLIND = {"anonymous", "member_b", "analyst"}
MARKETING = {"admin", "marketer"}
MARKETING_READERS = {"admin", "marketer", "analyst"}
MEMBERS = {"member_a", "member_b"}

MATRIX: dict[tuple[str, str], Rule] = {
    ("GET", "/health/live"): Rule(EVERYONE),
    ("GET", "/health/ready"): Rule(EVERYONE),
    # Off unless LOYALTY_METRICS_PUBLIC or a scraper's LOYALTY_METRICS_TOKEN: no principal opens
    # it (tests/api/test_exchange.py has the token and the public setting).
    ("GET", "/metrics"): Rule(set(), refused=403),
    ("GET", "/.well-known/jwks.json"): Rule(EVERYONE),
    ("GET", "/schema"): Rule(EVERYONE),
    ("GET", "/schema/openapi.json"): Rule(EVERYONE),
    ("GET", "/schema/swagger"): Rule(EVERYONE),
    ("GET", "/schema/oauth2-redirect.html"): Rule(EVERYONE),
    ("GET", "/schema/{path:str}"): Rule(EVERYONE, path=lambda _: "/schema/openapi.json"),
    ("GET", "/schema/assets/{file_path:path}"): Rule(
        EVERYONE, path=lambda _: "/schema/assets/swagger-ui.css"),
    ("POST", "/v1/auth/member/register"): Rule(EVERYONE, 201, _register),
    ("POST", "/v1/auth/member/login"): Rule(EVERYONE, 200, _member_login),
    ("POST", "/v1/auth/staff/login"): Rule(EVERYONE, 200, _staff_login),
    ("POST", "/v1/auth/refresh"): Rule(EVERYONE, 200, _refresh),
    ("POST", "/v1/auth/logout"): Rule(EVERYONE, 204,
                                      lambda _: {"refresh_token": "x" * 43}),
    # Anyone may ask; the answer is the same for every address (a fresh one each time, under
    # the per-contact limit).
    ("POST", "/v1/auth/member/password-reset"): Rule(
        EVERYONE, 202, lambda _: {"email": f"reset{next(_unique)}@example.com"}),
    # The token decides, not the caller: an unknown one is 422 for everyone.
    ("POST", "/v1/auth/member/password-reset/confirm"): Rule(
        EVERYONE, 422, lambda _: {"token": "x" * 43, "new_password": "a new passphrase"}),
    ("PUT", "/v1/me/password"): Rule(MEMBERS, 204, lambda _: {
        "current_password": PASSWORD, "new_password": "a new passphrase"}),
    ("POST", "/v1/me/verification"): Rule(MEMBERS, 202, lambda _: {"channel": "email"}),
    # Past the guard a made-up code is wrong (422); the right one is in the event only.
    ("POST", "/v1/me/verify"): Rule(MEMBERS, 422,
                                    lambda _: {"channel": "email", "code": "000000"}),
    ("PUT", "/v1/staff/me/password"): Rule(STAFF, 204, lambda _: {
        "current_password": PASSWORD, "new_password": "a new passphrase"}),
    ("GET", "/v1/me"): Rule({"member_a", "member_b"}),
    ("PATCH", "/v1/me"): Rule({"member_a", "member_b"}, body=lambda _: {}),
    ("GET", "/v1/me/consents"): Rule({"member_a", "member_b"}),
    ("PUT", "/v1/me/consents"): Rule({"member_a", "member_b"}, body=lambda _: {"consents": []}),
    # Erasure: the grace period of the test settings (14 days) leaves both members as they
    # are; each is pending until the cancels that sort after.
    ("DELETE", "/v1/me"): Rule(MEMBERS, 202, body=lambda _: {"password": PASSWORD}),
    ("GET", "/v1/me/erasure"): Rule(MEMBERS),
    ("POST", "/v1/me/erasure/cancel"): Rule(MEMBERS),
    ("POST", "/v1/members/{member_id:uuid}/erasure"): Rule(
        {"admin", "support"}, 202, lambda _: {"reason": "a letter from the member"},
        path=lambda w: f"{member_a_path(w)}/erasure"),
    ("POST", "/v1/members/{member_id:uuid}/erasure/cancel"): Rule(
        {"admin", "support"}, path=lambda w: f"{member_a_path(w)}/erasure/cancel"),
    ("GET", "/v1/me/export"): Rule(MEMBERS),
    ("GET", "/v1/members"): Rule(MEMBER_READERS),
    ("GET", "/v1/members/{member_id:uuid}"): Rule(MEMBER_READERS, path=member_a_path),
    ("PATCH", "/v1/members/{member_id:uuid}"): Rule({"admin", "support"}, body=lambda _: {},
                                                    path=member_a_path),
    ("POST", "/v1/members/{member_id:uuid}/export"): Rule(
        {"admin", "support"}, path=lambda w: f"{member_a_path(w)}/export"),
    ("GET", "/v1/pos/whoami"): Rule({"terminal_x"}),
    ("GET", "/v1/terminals"): Rule({"admin"}),
    ("POST", "/v1/terminals"): Rule({"admin"}, 201, lambda _: {"store_code": "STORE-X"}),
    ("DELETE", "/v1/terminals/{terminal_id:uuid}"): Rule({"admin"}, 204, path=_terminal_path),
    ("POST", "/v1/staff"): Rule({"admin"}, 201, new_staff),
    ("GET", "/v1/staff"): Rule({"admin"}),
    ("GET", "/v1/staff/{staff_id:uuid}"): Rule({"admin"}, path=_at("/v1/staff/{login_staff_id}")),
    ("PATCH", "/v1/staff/{staff_id:uuid}"): Rule(
        {"admin"}, body=lambda _: {"display_name": "Matrix"},
        path=_at("/v1/staff/{login_staff_id}")),
    ("GET", "/v1/audit"): Rule({"admin"}),
    ("GET", "/v1/stores"): Rule(STAFF),
    ("POST", "/v1/stores"): Rule({"admin"}, 201, new_store),
    # points
    ("GET", "/v1/pos/members/lookup"): Rule(
        {"terminal_x"}, path=lambda w: f"/v1/pos/members/lookup?number={w.extra['number']}"),
    ("POST", "/v1/pos/quotes"): Rule({"terminal_x"}, 200, member_a_purchase),
    ("POST", "/v1/pos/purchases"): Rule({"terminal_x"}, 201, member_a_purchase,
                                        headers=idempotency),
    ("POST", "/v1/pos/purchases/{purchase_id:uuid}/returns"): Rule(
        {"terminal_x"}, 201, lambda _: {"amount": 100}, headers=idempotency,
        path=lambda w: f"/v1/pos/purchases/{w.extra['purchase_id']}/returns"),
    ("POST", "/v1/pos/batches"): Rule({"terminal_x"}, 200, lambda w: {"items": [
        {"kind": "purchase", "idempotency_key": f"batch-{next(_unique)}",
         "purchase": member_a_purchase(w)}]}),
    ("GET", "/v1/me/points"): Rule({"member_a", "member_b"}),
    ("GET", "/v1/me/points/history"): Rule({"member_a", "member_b"}),
    ("GET", "/v1/me/points/entries/{entry_id:uuid}"): Rule(
        {"member_a", "member_b"}, not_found=frozenset({"member_b"}),
        path=lambda w: f"/v1/me/points/entries/{w.extra['entry_id']}"),
    ("GET", "/v1/me/card"): Rule({"member_a", "member_b"}),
    ("POST", "/v1/me/actions"): Rule({"member_a", "member_b"}, 200,
                                     lambda _: {"type": "site_visit"}),
    ("GET", "/v1/members/{member_id:uuid}/points"): Rule(
        LEDGER_READERS, path=lambda w: f"{member_a_path(w)}/points"),
    ("GET", "/v1/members/{member_id:uuid}/points/history"): Rule(
        LEDGER_READERS, path=lambda w: f"{member_a_path(w)}/points/history"),
    ("POST", "/v1/members/{member_id:uuid}/adjustments"): Rule(
        {"admin", "support"}, 201, lambda _: {"points": 5, "reason": "goodwill"},
        headers=idempotency, path=lambda w: f"{member_a_path(w)}/adjustments"),
    ("GET", "/v1/members/duplicates"): Rule({"admin", "support"}),
    ("POST", "/v1/members/{member_id:uuid}/merge"): Rule(
        {"admin", "support"}, 200, _merge, headers=idempotency,
        path=lambda w: f"{member_a_path(w)}/merge"),
    ("GET", "/v1/tiers"): Rule({"admin", "marketer"}),
    ("PUT", "/v1/tiers"): Rule({"admin", "marketer"}, 200, lambda _: {}),
    ("GET", "/v1/me/tier"): Rule({"member_a", "member_b"}),
    ("GET", "/v1/members/{member_id:uuid}/tier"): Rule(
        LEDGER_READERS, path=lambda w: f"{member_a_path(w)}/tier"),
    ("GET", "/v1/earning-rules"): Rule({"admin", "marketer"}),
    ("GET", "/v1/earning-rules/versions"): Rule({"admin", "marketer"}),
    ("PUT", "/v1/earning-rules"): Rule({"admin", "marketer"}, 200, lambda _: {}),
    ("POST", "/v1/earning-rules/simulate"): Rule(
        {"admin", "marketer"}, 200, lambda _: {"action": {"type": "site_visit"}}),
    ("POST", "/v1/earning-rules/backtest"): Rule(
        {"admin", "marketer"}, 200, lambda _: _backtest_today()),
    ("GET", "/v1/earning-rules/backtests/{backtest_id:uuid}"): Rule(
        {"admin", "marketer"},
        path=lambda w: f"/v1/earning-rules/backtests/{w.extra['backtest_id']}"),
    # coupons
    ("POST", "/v1/coupon-templates"): Rule(MARKETING, 201, lambda _: {
        "name": "Matrix", "discount": {"type": "fixed_amount", "amount": 10}}),
    ("GET", "/v1/coupon-templates"): Rule(MARKETING_READERS),
    ("GET", "/v1/coupon-templates/{template_id:uuid}"): Rule(MARKETING_READERS,
                                                            path=_template_path),
    ("PATCH", "/v1/coupon-templates/{template_id:uuid}"): Rule(
        MARKETING, body=lambda _: {"name": "Renamed"}, path=_template_path),
    ("POST", "/v1/coupon-templates/{template_id:uuid}/codes"): Rule(
        MARKETING, 201, lambda _: {"count": 1}, path=lambda w: f"{_template_path(w)}/codes"),
    ("POST", "/v1/coupon-templates/{template_id:uuid}/issue"): Rule(
        MARKETING, 201, lambda w: {"members": [w.member_a_id]}, headers=idempotency,
        path=lambda w: f"{_template_path(w)}/issue"),
    ("GET", "/v1/me/coupons"): Rule(MEMBERS),
    ("POST", "/v1/pos/coupons/validate"): Rule({"terminal_x"}, 200, lambda _: {
        "coupons": [{"code": "MATRIX-CODE"}], "lines": [{"sku": "S", "unit_price": 100}]}),
    # segments
    ("POST", "/v1/segments"): Rule(MARKETING, 201,
                                   lambda _: {"name": "Active", "definition": ACTIVE}),
    ("GET", "/v1/segments"): Rule(MARKETING_READERS),
    ("POST", "/v1/segments/preview"): Rule(MARKETING_READERS, 200,
                                           lambda _: {"definition": ACTIVE}),
    ("GET", "/v1/segments/{segment_id:uuid}"): Rule(MARKETING_READERS, path=_segment_path),
    ("PATCH", "/v1/segments/{segment_id:uuid}"): Rule(
        MARKETING, body=lambda _: {"name": "Renamed"}, path=_segment_path),
    ("GET", "/v1/segments/{segment_id:uuid}/members"): Rule(
        MARKETING, path=lambda w: f"{_segment_path(w)}/members"),
    # campaigns
    ("POST", "/v1/campaigns"): Rule(MARKETING, 201, _coupon_campaign),
    ("GET", "/v1/campaigns"): Rule(MARKETING_READERS),
    ("GET", "/v1/campaigns/{campaign_id:uuid}"): Rule(MARKETING_READERS, path=_campaign_path),
    ("POST", "/v1/campaigns/{campaign_id:uuid}/launch"): Rule(
        MARKETING, 200, headers=idempotency, path=lambda w: f"{_campaign_path(w)}/launch"),
    ("GET", "/v1/campaigns/{campaign_id:uuid}/results"): Rule(
        MARKETING_READERS, path=lambda w: f"{_campaign_path(w)}/results"),
    # events
    ("GET", "/v1/events"): Rule(MARKETING_READERS),
    ("POST", "/v1/events"): Rule(MARKETING, 201, new_event),
    ("GET", "/v1/events/{event_id:uuid}"): Rule(MARKETING_READERS, path=_event_path),
    ("PATCH", "/v1/events/{event_id:uuid}"): Rule(
        MARKETING, body=lambda _: {"name": "Renamed"}, path=_event_path),
    ("GET", "/v1/me/events"): Rule(MEMBERS),
    ("POST", "/v1/me/events/{event_id:uuid}/rsvp"): Rule(MEMBERS, 201, path=_rsvp_path),
    ("DELETE", "/v1/me/events/{event_id:uuid}/rsvp"): Rule(MEMBERS, 204, path=_rsvp_path),
    ("POST", "/v1/pos/events/{event_id:uuid}/checkins"): Rule(
        {"terminal_x"}, 201, lambda w: {"member": {"id": w.member_a_id}},
        headers=idempotency,
        path=lambda w: f"/v1/pos/events/{w.extra['checkin_event_id']}/checkins"),
    # bulk points grants
    ("GET", "/v1/points/grants"): Rule(MARKETING),
    ("POST", "/v1/points/grants"): Rule(
        MARKETING, 201,
        lambda w: {"points": 5, "reason": "matrix grant", "members": [w.member_a_id]},
        headers=idempotency),
    ("GET", "/v1/points/grants/{grant_id:uuid}"): Rule(
        MARKETING, path=lambda w: f"/v1/points/grants/{w.extra['grant_id']}"),
    # analytics
    ("GET", "/v1/analytics/kpis"): Rule(
        MARKETING_READERS, path=lambda _: "/v1/analytics/kpis?from=2025-01-01&to=2025-01-31"),
    ("GET", "/v1/analytics/rfm"): Rule(MARKETING_READERS),
    ("GET", "/v1/analytics/cohorts"): Rule(
        MARKETING_READERS, path=lambda _: "/v1/analytics/cohorts?from=2025-01&to=2025-03"),
    ("GET", "/v1/analytics/liability"): Rule(MARKETING_READERS),
    # scheduled jobs
    ("GET", "/v1/jobs"): Rule({"admin", "analyst"}),
    ("GET", "/v1/jobs/{name:str}/runs"): Rule(
        {"admin", "analyst"}, path=lambda _: "/v1/jobs/dormancy/runs"),
    ("POST", "/v1/jobs/{name:str}/run"): Rule(
        {"admin"}, 202, path=lambda _: "/v1/jobs/idempotency_cleanup/run"),
    # webhooks
    ("POST", "/v1/webhooks/endpoints"): Rule({"admin"}, 201, lambda _: {
        "url": "https://93.184.216.34/matrix", "event_types": ["points.earned"]}),
    ("GET", "/v1/webhooks/endpoints"): Rule({"admin"}),
    ("GET", "/v1/webhooks/endpoints/{endpoint_id:uuid}"): Rule({"admin"}, path=_hook_path),
    ("PATCH", "/v1/webhooks/endpoints/{endpoint_id:uuid}"): Rule(
        {"admin"}, body=lambda _: {"description": "Renamed"}, path=_hook_path),
    ("DELETE", "/v1/webhooks/endpoints/{endpoint_id:uuid}"): Rule(
        {"admin"}, 204, path=_at("/v1/webhooks/endpoints/{spare_webhook_endpoint_id}")),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id:uuid}/rotate-secret"): Rule(
        {"admin"}, path=lambda w: f"{_hook_path(w)}/rotate-secret"),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id:uuid}/test"): Rule(
        {"admin"}, 202, path=lambda w: f"{_hook_path(w)}/test"),
    ("GET", "/v1/webhooks/endpoints/{endpoint_id:uuid}/deliveries"): Rule(
        {"admin"}, path=lambda w: f"{_hook_path(w)}/deliveries"),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry"):
        Rule({"admin"}, 202, path=_at("/v1/webhooks/endpoints/{webhook_endpoint_id}/deliveries/"
                                      "{webhook_delivery_id}/retry")),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id:uuid}/replay"): Rule(
        {"admin"}, 202, lambda _: {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
        path=lambda w: f"{_hook_path(w)}/replay"),
}


def test_matrix_names_every_registered_route(app: Litestar) -> None:
    routes = registered_routes(app)
    assert routes - MATRIX.keys() == set(), "routes without an authorization rule"
    assert MATRIX.keys() - routes == set(), "rules for routes that no longer exist"


async def test_every_route_answers_each_caller_as_the_matrix_says(
    world: World, subtests: pytest.Subtests
) -> None:
    # One world for all routes (building it is most of the cost); a subtest per route, so a
    # failure names its route and the others still run.
    for method, route in sorted(MATRIX):
        with subtests.test(msg=f"{method} {route}"):
            await _check_route(world, method, route)


async def _check_route(world: World, method: str, route: str) -> None:
    rule = MATRIX[(method, route)]
    path = rule.path(world) if rule.path else route
    for caller in CALLERS:
        body = rule.body(world) if rule.body else None
        headers = {**world.headers[caller], **(rule.headers() if rule.headers else {})}
        response = await world.client.request(
            method, path, headers=headers, **({"json": body} if body is not None else {}),
        )
        denied = rule.refused or (401 if caller == "anonymous" else 403)
        expected = rule.ok if caller in rule.allowed else denied
        if caller in rule.not_found:
            expected = 404
        assert response.status_code == expected, (caller, response.text)
        if expected >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
        _check_what_is_shown(world, caller, response)


def _check_what_is_shown(world: World, caller: str, response: httpx.Response) -> None:
    """Member A's contact details reach only those who may see them; A's id and number never
    reach a caller with no business with A, whatever the route answered."""
    if caller not in CONTACT_SEERS:
        for secret in world.extra["a_contact"]:
            assert secret not in response.text, (caller, secret)
    if caller in IDENTIFIER_BLIND:
        for identifier in (world.member_a_id, world.extra["number"]):
            assert identifier not in response.text, (caller, identifier)


async def test_a_member_never_reads_another_member(world: World) -> None:
    member_b = world.headers["member_b"]
    me = await world.client.get("/v1/me", headers=member_b)
    assert me.json()["member_id"] != world.member_a_id
    for method, path in [("GET", member_a_path(world)), ("PATCH", member_a_path(world)),
                         ("GET", "/v1/members?q=a@example.com")]:
        response = await world.client.request(method, path, headers=member_b,
                                              json={} if method == "PATCH" else None)
        assert response.status_code == 403
        assert world.member_a_id not in response.text


async def test_terminal_sees_only_itself(world: World) -> None:
    response = await world.client.get("/v1/pos/whoami", headers=world.headers["terminal_x"])
    assert response.json()["store"]["code"] == "STORE-X"


async def test_revoked_terminal_key_is_refused(client: Client, actors: Actors) -> None:
    key, terminal_id = await actors.terminal("STORE-Z")
    admin = bearer(await actors.staff("admin"))
    assert (await client.get("/v1/pos/whoami", headers=bearer(key))).status_code == 200
    revoked = await client.delete(f"/v1/terminals/{terminal_id}", headers=admin)
    assert revoked.status_code == 204
    assert (await client.get("/v1/pos/whoami", headers=bearer(key))).status_code == 401


async def test_terminal_created_by_admin_authenticates_with_the_key_shown_once(
    client: Client, actors: Actors
) -> None:
    admin = bearer(await actors.staff("admin"))
    await client.post("/v1/stores", headers=admin, json={"code": "NAGOYA-1", "name": "Sakae"})
    created = await client.post("/v1/terminals", headers=admin,
                                json={"store_code": "NAGOYA-1", "name": "till 1"})
    assert created.status_code == 201
    key = created.json()["api_key"]
    whoami = await client.get("/v1/pos/whoami", headers=bearer(key))
    assert whoami.json()["store"]["code"] == "NAGOYA-1"
    listed = await client.get("/v1/terminals", headers=admin)
    assert key not in listed.text
    assert created.json()["terminal"]["key_prefix"] in listed.text
