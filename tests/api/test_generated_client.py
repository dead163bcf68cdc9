"""A client generated from the served OpenAPI document, as an integrator would make one with
openapi-python-client, has every model and every operation, and works: it registers a member,
reads /v1/me, records a purchase at a till and gets a typed problem for a conflict."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from litestar import Litestar

from tests.conftest import asgi_transport
from tests.factories import PASSWORD, Actors

PACKAGE = "loyalty_client"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.fixture
def generated(tmp_path: Path, document: dict[str, Any]) -> Iterator[ModuleType]:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    bin_dir = Path(sys.executable).parent
    made = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", str(spec),
         "--meta", "none", "--output-path", str(tmp_path / PACKAGE), "--fail-on-warning"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert made.returncode == 0, made.stdout + made.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await client.get("/schema/openapi.json")).json())


def test_every_operation_and_model_is_generated(generated: ModuleType,
                                                document: dict[str, Any]) -> None:
    assert generated.__file__ is not None
    api = Path(generated.__file__).parent / "api"
    modules = {path.stem for path in api.rglob("*.py") if path.stem != "__init__"}
    operations = {_snake(op["operationId"]) for item in document["paths"].values()
                  for op in item.values() if isinstance(op, dict) and "operationId" in op}
    assert operations - modules == set()
    models = importlib.import_module(f"{PACKAGE}.models")
    missing = [name for name in document["components"]["schemas"] if not hasattr(models, name)]
    assert missing == []


async def test_the_generated_client_signs_up_reads_buys_and_reads_a_problem(
    generated: ModuleType, app: Litestar, client: httpx.AsyncClient, actors: Actors
) -> None:
    api = f"{PACKAGE}.api"
    register = importlib.import_module(f"{api}.auth.register_member")
    get_me = importlib.import_module(f"{api}.member_app.get_me")
    purchase = importlib.import_module(f"{api}.point_of_sale.pos_record_purchase")
    models = importlib.import_module(f"{PACKAGE}.models")
    transport = {"transport": asgi_transport(app)}  # the app the fixture is serving
    anonymous = generated.Client(base_url="http://testserver.local", httpx_args=transport)

    body = models.MemberRegistration(email="generated@example.com", password=PASSWORD,
                                     name="Generated Client")
    registered = await register.asyncio(client=anonymous, body=body)
    assert isinstance(registered, models.Registered), registered
    member = generated.AuthenticatedClient(base_url="http://testserver.local",
                                           token=registered.tokens.access_token,
                                           httpx_args=transport)
    me = await get_me.asyncio(client=member)
    assert isinstance(me, models.Member)
    assert me.email == "generated@example.com"

    api_key, _ = await actors.terminal("GEN-01")
    till = generated.AuthenticatedClient(base_url="http://testserver.local", token=api_key,
                                         httpx_args=transport)
    sale = models.Purchase(
        member=models.MemberRef(number=me.member_number), receipt_id="GEN-1", total=1000,
        currency="JPY", occurred_at=dt.datetime.now(dt.UTC),
        lines=[models.PurchaseLine(sku="TEA", unit_price=1000)])
    recorded = await purchase.asyncio(client=till, body=sale, idempotency_key="gen-1")
    assert isinstance(recorded, models.PurchaseRecorded), recorded
    assert recorded.points_earned == 10

    again = await register.asyncio_detailed(client=anonymous, body=body)
    assert again.status_code == 409
    assert isinstance(again.parsed, models.Problem)
    assert again.parsed.type_.endswith("email_taken")
    assert again.parsed.detail
