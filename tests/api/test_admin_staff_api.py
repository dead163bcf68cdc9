"""Staff accounts through /v1/staff: listed a page at a time, created with a password under the
API's rules, re-roled, renamed, deactivated and reactivated; each change audited and felt by
the account's tokens on another instance within a second; the last active admin kept."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.app import create_app
from loyalty.core.settings import Settings
from tests.api.test_revocation import refused_within, staff_login
from tests.conftest import held, serve
from tests.factories import PASSWORD, Actors, bearer, query

Client = httpx.AsyncClient


async def _admin(actors: Actors) -> dict[str, str]:
    return bearer(await actors.staff("admin"))


async def _create(client: Client, admin: dict[str, str], email: str, role: str,
                  name: str = "") -> dict[str, Any]:
    response = await client.post("/v1/staff", headers=admin, json={
        "email": email, "password": PASSWORD, "role": role, "display_name": name})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _audit(settings: Settings, subject: str) -> list[Any]:
    return [(r["action"], r["details"]) for r in await query(
        settings.database_url or "", "select action, details from audit_log"
        " where subject_id = $1 order by recorded_at, audit_id", subject)]


async def test_the_list_pages_by_email_and_filters_by_role_and_standing(
    client: Client, actors: Actors,
) -> None:
    admin = await _admin(actors)
    for n in range(3):
        await _create(client, admin, f"m{n}@list.example", "marketer")
    gone = await _create(client, admin, "gone@list.example", "marketer")
    assert (await client.patch(f"/v1/staff/{gone['staff_id']}", headers=admin,
                               json={"active": False})).status_code == 200

    first = await client.get("/v1/staff?role=marketer&active=true&limit=2", headers=admin)
    assert first.status_code == 200, first.text
    assert [s["email"] for s in first.json()["items"]] == ["m0@list.example", "m1@list.example"]
    rest = await client.get(f"/v1/staff?role=marketer&active=true&limit=2"
                            f"&cursor={first.json()['next_cursor']}", headers=admin)
    assert [s["email"] for s in rest.json()["items"]] == ["m2@list.example"]
    assert rest.json().get("next_cursor") is None
    inactive = await client.get("/v1/staff?active=false", headers=admin)
    assert [s["email"] for s in inactive.json()["items"]] == ["gone@list.example"]
    admins = await client.get("/v1/staff?role=admin", headers=admin)
    assert {s["role"] for s in admins.json()["items"]} == {"admin"}


@pytest.mark.parametrize("query_string", ["role=owner", "active=maybe", "cursor=%00",
                                          "cursor=bm90LWEtY3Vyc29yfHg", "limit=0"])
async def test_a_bad_filter_is_refused_with_a_problem(
    client: Client, actors: Actors, query_string: str,
) -> None:
    response = await client.get(f"/v1/staff?{query_string}", headers=await _admin(actors))
    # 400 for what the schema refuses, 422 for a well-formed cursor the server did not write.
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_creating_needs_a_password_under_the_rules_and_a_new_email(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    admin = await _admin(actors)
    short = await client.post("/v1/staff", headers=admin, json={
        "email": "short@staff.example", "password": "1234567", "role": "support"})
    assert short.status_code == 400, short.text
    assert "password" in short.text
    await _create(client, admin, "taken@staff.example", "support")
    again = await client.post("/v1/staff", headers=admin, json={
        "email": "Taken@Staff.example", "password": PASSWORD, "role": "analyst"})
    assert again.status_code == 409
    assert again.json()["type"].endswith(":email_taken")
    count = await query(settings.database_url or "", "select count(*) from staff"
                        " where email in ('short@staff.example', 'taken@staff.example')")
    assert count[0]["count"] == 1
    # The initial password the admin typed is the one that signs in.
    assert (await staff_login(client, "taken@staff.example"))["access_token"]


async def test_changes_are_audited_with_what_changed(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    admin = await _admin(actors)
    account = await _create(client, admin, "audited@staff.example", "support", "Sato")
    path = f"/v1/staff/{account['staff_id']}"
    renamed = await client.patch(path, headers=admin, json={"display_name": "  Sato Hanako "})
    assert renamed.json()["display_name"] == "Sato Hanako"
    assert (await client.patch(path, headers=admin, json={"role": "analyst"})).json()["role"] \
        == "analyst"
    assert (await client.patch(path, headers=admin, json={"active": False})).json()["active"] \
        is False
    assert (await client.patch(path, headers=admin, json={"active": True})).json()["active"] \
        is True
    assert await _audit(settings, account["staff_id"]) == [
        ("staff.create", {"role": "support"}),
        ("staff.update", {"display_name": ["Sato", "Sato Hanako"]}),
        ("staff.update", {"role": ["support", "analyst"]}),
        ("staff.update", {"active": [True, False]}),
        ("staff.update", {"active": [False, True]}),
    ]


async def test_an_unknown_account_or_a_bad_body_is_refused_and_changes_nothing(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    admin = await _admin(actors)
    account = await _create(client, admin, "kept@staff.example", "support")
    missing = await client.patch("/v1/staff/018f0000-0000-7000-8000-000000000000",
                                 headers=admin, json={"active": False})
    assert missing.status_code == 404
    for body in ({"role": "owner"}, {"active": "no"}, {"display_name": "a\nb"}, {"email": "x"}):
        response = await client.patch(f"/v1/staff/{account['staff_id']}", headers=admin,
                                      json=body)
        assert response.status_code == 400, (body, response.text)
    read = await client.get(f"/v1/staff/{account['staff_id']}", headers=admin)
    assert (read.json()["role"], read.json()["active"]) == ("support", True)
    assert [a for a, _ in await _audit(settings, account["staff_id"])] == ["staff.create"]


async def test_the_last_active_admin_can_be_neither_deactivated_nor_demoted(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    admin = await _admin(actors)
    me = (await client.get("/v1/staff?role=admin", headers=admin)).json()["items"]
    assert len(me) == 1
    path = f"/v1/staff/{me[0]['staff_id']}"
    for body in ({"active": False}, {"role": "support"}, {"role": "marketer", "active": True}):
        refused = await client.patch(path, headers=admin, json=body)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith(":last_admin")
        assert "another account an admin" in refused.json()["detail"]
    # With a second admin, the first may go; then the second is the last.
    second = await _create(client, admin, "second@staff.example", "admin")
    assert (await client.patch(path, headers=admin, json={"active": False})).status_code == 200
    second_token = bearer((await staff_login(client, "second@staff.example"))["access_token"])
    refused = await client.patch(f"/v1/staff/{second['staff_id']}", headers=second_token,
                                 json={"active": False})
    assert refused.status_code == 409
    active_admins = await query(settings.database_url or "",
                                "select count(*) from staff where role = 'admin' and active")
    assert active_admins[0]["count"] == 1


@pytest.fixture
async def two_instances(settings: Settings) -> AsyncIterator[tuple[Client, Client]]:
    @contextlib.asynccontextmanager
    async def two() -> AsyncIterator[tuple[Client, Client]]:
        async with serve(create_app(settings)) as a, serve(create_app(settings)) as b:
            yield a, b

    async for pair in held(two()):
        yield pair


@pytest.mark.parametrize("change", [{"active": False}, {"role": "analyst"}])
async def test_a_change_ends_the_accounts_tokens_on_another_instance_within_a_second(
    two_instances: tuple[Client, Client], settings: Settings, change: dict[str, Any],
) -> None:
    a, b = two_instances
    actors = Actors(a, settings)
    admin = await _admin(actors)
    account = await _create(a, admin, "leaving@staff.example", "support")
    token = (await staff_login(a, "leaving@staff.example"))["access_token"]
    path = "/v1/stores"
    assert (await b.get(path, headers=bearer(token))).status_code == 200

    changed = await a.patch(f"/v1/staff/{account['staff_id']}", headers=admin, json=change)
    assert changed.status_code == 200, changed.text
    await refused_within(b, token, path=path)
    # A renaming leaves the sessions alone.
    renamed_token = (await staff_login(a, "leaving@staff.example")) \
        if change.get("active") is not False else None
    if renamed_token:
        await a.patch(f"/v1/staff/{account['staff_id']}", headers=admin,
                      json={"display_name": "Renamed"})
        assert (await b.get(path, headers=bearer(renamed_token["access_token"]))).status_code \
            == 200
