"""A body that says one thing in several ways takes exactly one of them: schemas.base.OneOf
refuses two or none as the body is decoded (400 validation_failed naming the fields, nothing
read or written), and the OpenAPI document says the same."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from loyalty.core.settings import Settings
from schemas.auth import MemberLogin
from schemas.base import OneOf, decode_edge
from schemas.campaigns import CampaignCreate
from schemas.grants import GrantRequest
from schemas.points import CouponRef, MemberRef, ReturnRequest
from tests.factories import PASSWORD, Actors, bearer

Client = httpx.AsyncClient

# Every table one of these requests could write to.
TABLES = ("members", "refresh_tokens", "purchases", "purchase_returns", "point_entries",
          "point_lots", "idempotency_keys", "coupon_redemptions", "point_grants", "campaigns",
          "audit_log")


class Pet(OneOf):
    """A pet named by name, chip or tag."""

    name: str | None = None
    chip: int | None = None
    tag: str | None = None
    one_of = ("name", "chip", "tag")


class Kennel(msgspec.Struct):
    pets: list[Pet]


def _decode(body: bytes) -> Pet:
    return msgspec.json.decode(body, type=Pet, dec_hook=decode_edge)


def test_one_of_the_alternatives_decodes() -> None:
    assert _decode(b'{"chip": 7}') == Pet(chip=7)
    # null is the same as absent: the one given is the one that counts.
    assert _decode(b'{"name": null, "tag": "A-1"}') == Pet(tag="A-1")


@pytest.mark.parametrize(("body", "said"), [
    (b"{}", "give exactly one of name, chip or tag: none was given"),
    (b'{"name": null}', "give exactly one of name, chip or tag: none was given"),
    (b'{"name": "Rex", "chip": 7}', "give exactly one of name, chip or tag: name and chip were "
                                    "given"),
])
def test_two_or_none_of_the_alternatives_do_not_decode(body: bytes, said: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=said):
        _decode(body)


def test_the_rule_holds_where_the_struct_is_nested_and_when_it_is_built_in_code() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"none was given - at `\$\.pets\[1\]`"):
        msgspec.json.decode(b'{"pets": [{"tag": "A"}, {}]}', type=Kennel, dec_hook=decode_edge)
    with pytest.raises(ValueError, match="name and tag were given"):
        Pet(name="Rex", tag="A-1")


@pytest.mark.parametrize("kind", [MemberRef, CouponRef, GrantRequest, CampaignCreate,
                                  MemberLogin, ReturnRequest])
def test_every_body_declares_fields_it_has(kind: type[OneOf]) -> None:
    assert len(kind.one_of) >= 2
    assert set(kind.one_of) <= set(kind.__struct_fields__)


# -- the six bodies, through the API ---------------------------------------------------------


@dataclass
class World:
    member_id: str
    member_email: str
    terminal: dict[str, str]
    marketer: dict[str, str]


@dataclass
class Place:
    """The alternatives a body takes, and the request (path, headers, body) that gives it the
    alternatives passed in."""

    fields: tuple[str, ...]
    request: Callable[[World, dict[str, Any]], tuple[str, dict[str, str], dict[str, Any]]]


def _purchase(world: World, member: dict[str, Any],
              coupons: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "member": member, "receipt_id": f"ONE-{uuid.uuid4().hex[:8]}",
        "occurred_at": "2026-01-05T10:00:00+09:00", "total": 1000, "currency": "JPY",
        "lines": [{"sku": "S", "unit_price": 1000}]}
    if coupons is not None:
        body["coupons"] = coupons
    return body


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"one-of-{uuid.uuid4()}"}


SEGMENT = str(uuid.uuid4())

PLACES: dict[str, Place] = {
    "member at the till": Place(
        ("id", "card", "number"),
        lambda w, given: ("/v1/pos/purchases", {**w.terminal, **_key()},
                          _purchase(w, given))),
    "coupon at the till": Place(
        ("code", "coupon_id"),
        lambda w, given: ("/v1/pos/purchases", {**w.terminal, **_key()},
                          _purchase(w, {"id": w.member_id}, [given]))),
    "points grant": Place(
        ("members", "segment_id"),
        lambda w, given: ("/v1/points/grants", {**w.marketer, **_key()},
                          {"points": 5, "reason": "one of", **given})),
    "campaign": Place(
        ("segment_id", "members"),
        lambda w, given: ("/v1/campaigns", w.marketer, {
            "name": "One of", "action": {"type": "issue_coupon",
                                         "template_id": str(uuid.uuid4())}, **given})),
    "member login": Place(
        ("email", "phone"),
        lambda w, given: ("/v1/auth/member/login", {}, {"password": PASSWORD, **given})),
    "return": Place(
        ("lines", "amount"),
        lambda w, given: (f"/v1/pos/purchases/{uuid.uuid4()}/returns",
                          {**w.terminal, **_key()}, given)),
}


def _values(world: World) -> dict[str, Any]:
    """A value each alternative would be accepted with on its own."""
    return {"id": world.member_id, "card": "c" * 40, "number": "12345678901",
            "code": "WELCOME", "coupon_id": str(uuid.uuid4()),
            "members": [world.member_id], "segment_id": SEGMENT,
            "email": world.member_email, "phone": "090-1111-2222",
            "lines": [{"line": 0, "quantity": 1}], "amount": 100}


async def _snapshot(settings: Settings) -> dict[str, int]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return {t: int(await conn.fetchval(f"select count(*) from {t}")) for t in TABLES}  # noqa: S608 - table names from the test's own constant list
    finally:
        await conn.close()


@pytest.fixture
async def world(actors: Actors) -> World:
    member = await actors.member(email="one-of@example.com")
    api_key, _ = await actors.terminal()
    return World(member.member_id, "one-of@example.com", bearer(api_key),
                 bearer(await actors.staff("marketer")))


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("given", ["two", "none"])
async def test_a_body_naming_two_or_none_of_the_alternatives_is_400_and_changes_nothing(
    client: Client, world: World, settings: Settings, place: str, given: str,
) -> None:
    spec = PLACES[place]
    values = _values(world)
    chosen = {name: values[name] for name in spec.fields[:2]} if given == "two" else {}
    path, headers, body = spec.request(world, chosen)
    before = await _snapshot(settings)
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == "urn:loyalty:problem:validation_failed"
    assert f"give exactly one of {' or '.join([', '.join(spec.fields[:-1]), spec.fields[-1]])}" \
        in problem["detail"]
    assert await _snapshot(settings) == before


async def test_the_document_says_exactly_one_of_the_alternatives(client: Client) -> None:
    schemas = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    assert schemas["MemberRef"]["allOf"] == [{"oneOf": [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in ("id", "card", "number")]}]
    for kind in (CouponRef, GrantRequest, CampaignCreate, MemberLogin, ReturnRequest):
        (alternatives,) = schemas[kind.__name__]["allOf"]
        assert [a["required"] for a in alternatives["oneOf"]] == [[n] for n in kind.one_of]
