"""Operations endpoints, and an API that keeps answering while Redis is gone."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx

from api.app import YOUNG_COLLECTION_EVERY, create_app
from tests.conftest import make_settings, serve
from tests.factories import PASSWORD

Client = httpx.AsyncClient


async def test_ready_checks_postgres_and_redis(client: Client) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_openapi_schema_describes_the_api(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    assert "/v1/auth/member/register" in schema["paths"]
    operation_ids = {op["operationId"] for path in schema["paths"].values()
                     for op in path.values() if isinstance(op, dict) and "operationId" in op}
    assert {"registerMember", "getMe", "searchMembers", "posWhoAmI"} <= operation_ids


async def test_without_redis_the_api_degrades_but_answers(
    fresh_database: str, tmp_path: Path
) -> None:
    settings = make_settings(fresh_database, "redis://127.0.0.1:1/0", tmp_path)
    async with serve(create_app(settings)) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "degraded",
                                "checks": {"postgres": "ok", "redis": "unavailable"}}
        registered = await client.post("/v1/auth/member/register", json={
            "email": "offline@example.com", "password": PASSWORD, "name": "Offline"})
        assert registered.status_code == 201
        me = await client.get("/v1/me", headers={
            "Authorization": f"Bearer {registered.json()['tokens']['access_token']}"})
        assert me.status_code == 200


async def test_without_postgres_ready_is_503(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings("postgresql://postgres@127.0.0.1:1/none", redis_url, tmp_path,
                             db_pool_min=0)
    async with serve(create_app(settings)) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"postgres": "unavailable", "redis": "ok"}
        assert (await client.get("/health/live")).status_code == 200


async def test_a_served_worker_sets_its_startup_objects_aside_from_the_collector(
    fresh_database: str, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(fresh_database, redis_url, tmp_path)
    threshold = gc.get_threshold()
    try:
        async with serve(create_app(settings)):
            assert gc.get_threshold() == threshold  # a test's app leaves the process alone
        async with serve(create_app(settings, serving=True)) as client:
            assert gc.get_freeze_count() > 0
            assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY
            assert (await client.get("/health/live")).status_code == 200
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
