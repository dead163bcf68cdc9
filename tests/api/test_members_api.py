"""Members through the API: sign-up with normalisation, profile, consents, staff search."""

from __future__ import annotations

import asyncpg
import httpx

from loyalty.settings import Settings
from tests.api.conftest import PASSWORD, Actors, bearer
from tests.conftest import query

Client = httpx.AsyncClient


async def count_members(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return int(await conn.fetchval("select count(*) from members"))
    finally:
        await conn.close()


async def test_register_returns_member_and_tokens_that_read_the_profile(client: Client) -> None:
    response = await client.post("/v1/auth/member/register", json={
        "email": "hanako@example.com", "password": PASSWORD, "name": " 佐藤　花子 ",
        "name_kana": "ｻﾄｳ ﾊﾅｺ", "birth_date": "1990-04-01",
    })
    assert response.status_code == 201
    body = response.json()
    assert body["member"]["name"] == "佐藤 花子"
    assert body["member"]["name_kana"] == "サトウ ハナコ"
    assert body["member"]["status"] == "active"
    assert body["tokens"]["token_type"] == "Bearer"
    assert body["tokens"]["expires_in"] == 900
    me = await client.get("/v1/me", headers=bearer(body["tokens"]["access_token"]))
    assert me.status_code == 200
    assert me.json() == body["member"]


async def test_fullwidth_email_is_the_same_person(client: Client, actors: Actors,
                                                  settings: Settings) -> None:
    await actors.member(email="taro@example.com")
    response = await client.post("/v1/auth/member/register", json={
        "email": "Ｔａｒｏ＠Example.COM", "password": PASSWORD, "name": "Taro"})
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith(":email_taken")
    assert await count_members(settings) == 1


async def test_phone_written_two_ways_is_the_same_phone(client: Client, actors: Actors) -> None:
    first = await actors.member(phone="090-1234-5678")
    assert first.member["phone"] == "+819012345678"
    response = await client.post("/v1/auth/member/register", json={
        "phone": "+81 90 1234 5678", "password": PASSWORD, "name": "Someone else"})
    assert response.status_code == 409
    assert response.json()["type"].endswith(":phone_taken")


async def test_register_needs_email_or_phone(client: Client, settings: Settings) -> None:
    response = await client.post("/v1/auth/member/register",
                                 json={"password": PASSWORD, "name": "Nobody"})
    assert response.status_code == 422
    assert response.json()["field"] == "email"
    assert await count_members(settings) == 0


async def test_member_logs_in_with_phone_in_any_format(client: Client, actors: Actors) -> None:
    await actors.member(phone="０９０－１２３４－５６７８")
    response = await client.post("/v1/auth/member/login",
                                 json={"phone": "+81-90-1234-5678", "password": PASSWORD})
    assert response.status_code == 200
    assert set(response.json()) == {"access_token", "refresh_token", "token_type", "expires_in"}


async def test_login_with_wrong_password_is_401_and_says_nothing_more(
    client: Client, actors: Actors
) -> None:
    await actors.member(email="a@example.com")
    wrong = await client.post("/v1/auth/member/login",
                              json={"email": "a@example.com", "password": "not it at all"})
    unknown = await client.post("/v1/auth/member/login",
                                json={"email": "nobody@example.com", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_member_changes_profile_and_email_is_normalised(
    client: Client, actors: Actors
) -> None:
    member = await actors.member(email="before@example.com")
    response = await client.patch("/v1/me", headers=member.headers, json={
        "email": "ＡＦＴＥＲ＠example.com", "name_kana": "たろう", "attributes": {"shop": "north"}})
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == "after@example.com"
    assert body["name_kana"] == "タロウ"
    assert body["attributes"] == {"shop": "north"}
    assert body["name"] == member.member["name"]
    login = await client.post("/v1/auth/member/login",
                              json={"email": "after@example.com", "password": PASSWORD})
    assert login.status_code == 200


async def test_member_cannot_take_another_members_email(client: Client, actors: Actors) -> None:
    await actors.member(email="taken@example.com")
    other = await actors.member(email="mine@example.com")
    response = await client.patch("/v1/me", headers=other.headers,
                                  json={"email": "TAKEN@example.com"})
    assert response.status_code == 409
    me = await client.get("/v1/me", headers=other.headers)
    assert me.json()["email"] == "mine@example.com"


async def test_member_cannot_clear_their_only_contact(client: Client, actors: Actors) -> None:
    member = await actors.member(email="only@example.com")
    response = await client.patch("/v1/me", headers=member.headers, json={"email": None})
    assert response.status_code == 422
    me = await client.get("/v1/me", headers=member.headers)
    assert me.json()["email"] == "only@example.com"


async def test_consents_keep_history_and_skip_unchanged_choices(
    client: Client, actors: Actors
) -> None:
    member = await actors.member()
    choice = {"purpose": "marketing_email", "granted": True, "text_version": "v1"}
    for body in ([choice], [choice], [{**choice, "granted": False}]):
        response = await client.put("/v1/me/consents", headers=member.headers,
                                    json={"consents": body})
        assert response.status_code == 200
    consents = (await client.get("/v1/me/consents", headers=member.headers)).json()
    assert [c["granted"] for c in consents["history"]] == [False, True]
    assert [(c["purpose"], c["granted"]) for c in consents["current"]] == [
        ("marketing_email", False)]


async def test_staff_finds_members_by_each_identifier(client: Client, actors: Actors) -> None:
    yamada = await actors.member(name="山田 太郎", name_kana="ヤマダ タロウ",
                                 email="yamada@example.com", phone="09011112222")
    await actors.member(name="Yamamoto Jiro", email="jiro@example.com")
    token = await actors.staff("support")
    for q in ["YAMADA@example.com", "090-1111-2222", yamada.member["member_number"], "山田",
              "やまだ", "ﾔﾏﾀﾞ"]:
        response = await client.get("/v1/members", params={"q": q}, headers=bearer(token))
        assert response.status_code == 200, q
        assert [m["member_id"] for m in response.json()["items"]] == [yamada.member_id], q
    both = await client.get("/v1/members", params={"q": "yama"}, headers=bearer(token))
    assert len(both.json()["items"]) == 1  # "Yamamoto" by name; 山田's name is not in Latin
    everyone = await client.get("/v1/members", headers=bearer(token))
    assert len(everyone.json()["items"]) == 2


async def test_staff_search_pages_with_a_cursor(client: Client, actors: Actors) -> None:
    made = [await actors.member() for _ in range(5)]
    token = await actors.staff("admin")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/members", params=params, headers=bearer(token))).json()
        seen += [m["member_id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(m.member_id for m in made)
    assert len(seen) == len(set(seen))


async def test_staff_read_of_a_member_is_audited(client: Client, actors: Actors,
                                                 settings: Settings) -> None:
    member = await actors.member()
    token = await actors.staff("support")
    response = await client.get(f"/v1/members/{member.member_id}", headers=bearer(token))
    assert response.status_code == 200
    conn = await asyncpg.connect(settings.database_url)
    try:
        actions = await conn.fetch(
            "select action from audit_log where subject_id = $1", response.json()["member_id"])
    finally:
        await conn.close()
    assert [a["action"] for a in actions] == ["members.read"]


async def test_support_suspends_a_member_who_then_cannot_log_in(
    client: Client, actors: Actors, settings: Settings
) -> None:
    member = await actors.member(email="s@example.com")
    token = await actors.staff("support")
    response = await client.patch(f"/v1/members/{member.member_id}", headers=bearer(token),
                                  json={"status": "suspended"})
    assert response.status_code == 200
    assert response.json()["status"] == "suspended"
    login = await client.post("/v1/auth/member/login",
                              json={"email": "s@example.com", "password": PASSWORD})
    assert login.status_code == 401
    refresh = await client.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert refresh.status_code == 401
    # Reinstated; both changes are in the member's status history, said to be staff's.
    reinstated = await client.patch(f"/v1/members/{member.member_id}", headers=bearer(token),
                                    json={"status": "active"})
    assert reinstated.status_code == 200
    assert await status_history(settings, member.member_id) == [
        ("active", "suspended", "staff"), ("suspended", "active", "staff")]


async def status_history(settings: Settings, member_id: str) -> list[tuple[str, str, str]]:
    assert settings.database_url
    rows = await query(settings.database_url, "select from_status, to_status, reason"
                       " from member_status_changes where member_id = $1 order by change_id",
                       member_id)
    return [(r["from_status"], r["to_status"], r["reason"]) for r in rows]


async def test_a_merge_is_in_the_merged_members_status_history(
    client: Client, actors: Actors, settings: Settings
) -> None:
    survivor = await actors.member(email="keep@example.com")
    duplicate = await actors.member(email="dupe@example.com")
    support = bearer(await actors.staff("support"))
    joined = await client.post(f"/v1/members/{survivor.member_id}/merge",
                               headers={**support, "Idempotency-Key": "merge"},
                               json={"from_member_id": duplicate.member_id})
    assert joined.status_code == 200, joined.text
    assert await status_history(settings, duplicate.member_id) == [
        ("active", "merged", "merge")]
    assert await status_history(settings, survivor.member_id) == []
