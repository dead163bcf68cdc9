"""The OpenAPI document is the contract clients are generated from: it says who may call each
operation, documents the problems actually sent, refuses what the server refuses, and its docs
page works offline."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections import Counter
from typing import Any

import httpx
import msgspec
import pytest

import schemas
from api.openapi import objects_in

Client = httpx.AsyncClient


@pytest.fixture
async def document(client: Client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items()
            for method, op in item.items() if isinstance(op, dict) and "responses" in op]


async def test_every_operation_says_which_credential_it_takes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {"member", "staff", "terminal"} <= set(schemes)
    expected = {"/v1/me": "member", "/v1/pos/purchases": "terminal", "/v1/members": "staff",
                "/v1/auth/member/login": None, "/health/live": None}
    for path, method, op in _operations(document):
        assert "security" in op, (method, path)
        names = [name for requirement in op["security"] for name in requirement]
        if path in expected and method in ("get", "post"):
            assert names == ([expected[path]] if expected[path] else []), (method, path)
    roles = document["paths"]["/v1/members"]["get"]["description"]
    assert "Staff roles: admin" in roles


async def test_errors_are_documented_as_the_problems_that_are_sent(
    document: dict[str, Any]
) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    for path, method, op in _operations(document):
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert list(response["content"]) == ["application/problem+json"], (path, status)
        if path.startswith("/v1/"):
            assert {"400", "404", "422", "503"} <= set(op["responses"]), (method, path)
        if op["security"]:
            assert {"401", "403"} <= set(op["responses"]), (method, path)
        if "requestBody" in op:
            assert {"413", "415"} <= set(op["responses"]), (method, path)
    text = json.dumps(document)
    assert '"status_code"' not in text  # litestar's own error shape, never sent


async def test_request_bodies_refuse_unknown_fields_in_the_document_too(
    document: dict[str, Any]
) -> None:
    components = document["components"]["schemas"]
    for name in ("Purchase", "MemberRegistration", "SegmentCreate", "CampaignCreate",
                 "CouponTemplateCreate", "ReturnRequest"):
        assert components[name]["additionalProperties"] is False, name
    assert "additionalProperties" not in components["PurchaseRecorded"]


async def test_no_integer_is_refused_by_a_one_of_integer_or_number(
    document: dict[str, Any]
) -> None:
    for node in objects_in(document):
        kinds = {c.get("type") for c in node.get("oneOf", []) if isinstance(c, dict)}
        assert not {"integer", "number"} <= kinds, node


async def test_every_model_has_a_name_of_its_own(document: dict[str, Any]) -> None:
    names = list(document["components"]["schemas"])
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name) for name in names), names
    structs: Counter[str] = Counter()
    for module in pkgutil.iter_modules(schemas.__path__):
        loaded = importlib.import_module(f"schemas.{module.name}")
        structs.update(name for name, obj in vars(loaded).items()
                       if isinstance(obj, type) and issubclass(obj, msgspec.Struct)
                       and obj.__module__ == loaded.__name__)
    assert [name for name, count in structs.items() if count > 1] == []


async def test_the_docs_page_loads_nothing_from_elsewhere(client: Client) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    assert "https://" not in page.text.split("<body>")[0]
    for asset in re.findall(r"(?:src|href)=['\"](/schema/assets/[^'\"]+)", page.text):
        answer = await client.get(asset)
        assert answer.status_code == 200, asset
        assert "max-age" in answer.headers["cache-control"]
