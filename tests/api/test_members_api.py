"""Members through the API: sign-up with normalisation, profile, consents, staff search."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import httpx
import msgspec

from loyalty.core.settings import Settings
from tests.conftest import AppWith
from tests.factories import PASSWORD, Actors, bearer, query

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
        "email": "ＡＦＴＥＲ＠example.com", "name_kana": "たろう"})
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == "after@example.com"
    assert body["name_kana"] == "タロウ"
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


async def test_a_members_consent_is_recorded_as_theirs_whatever_the_body_says(
    client: Client, actors: Actors, settings: Settings
) -> None:
    member = await actors.member()
    choice = {"purpose": "marketing_email", "granted": True, "text_version": "v1"}
    for channel in ("staff", "import", "store"):
        forged = await client.put("/v1/me/consents", headers=member.headers,
                                  json={"consents": [{**choice, "channel": channel}]})
        assert forged.status_code == 400, forged.text
        assert "channel" in forged.json()["detail"]
    signed_up = await client.post("/v1/auth/member/register", json={
        "email": "forged@example.com", "password": PASSWORD, "name": "Forged",
        "consents": [{**choice, "channel": "staff"}]})
    assert signed_up.status_code == 400, signed_up.text
    assert (await client.get("/v1/me/consents", headers=member.headers)).json()["history"] == []
    for body in ({**choice, "channel": "web"}, {**choice, "granted": False}):
        response = await client.put("/v1/me/consents", headers=member.headers,
                                    json={"consents": [body]})
        assert response.status_code == 200, response.text
    rows = await query(str(settings.database_url),
                       "select channel, actor_kind, actor_id from member_consents"
                       " where member_id = $1 order by recorded_at", member.member_uuid)
    assert [(r["channel"], r["actor_kind"], str(r["actor_id"])) for r in rows] == [
        ("web", "member", member.member_id), ("app", "member", member.member_id)]


async def test_staff_finds_members_by_each_identifier(client: Client, actors: Actors) -> None:
    yamada = await actors.member(name="山田 太郎", name_kana="ヤマダ タロウ",
                                 email="yamada@example.com", phone="09011112222")
    await actors.member(name="Yamamoto Jiro", email="jiro@example.com")
    token = await actors.staff("support")
    for q in ["YAMADA@example.com", "090-1111-2222", "０９０−１１１１−２２２２",
              yamada.member["member_number"], "山田",
              "やまだ", "ﾔﾏﾀﾞ"]:
        response = await client.get("/v1/members", params={"q": q}, headers=bearer(token))
        assert response.status_code == 200, q
        assert [m["member_id"] for m in response.json()["items"]] == [yamada.member_id], q
    # "Yamamoto" by name; 山田, whose name is not in Latin, by the start of their e-mail.
    both = await client.get("/v1/members", params={"q": "yama"}, headers=bearer(token))
    assert len(both.json()["items"]) == 2
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


# -- look-alike contacts and names ------------------------------------------------------------


async def test_invisible_and_bidi_characters_in_contacts_and_names_are_refused(
    client: Client, actors: Actors, settings: Settings
) -> None:
    await actors.member(email="taro@demo.example")
    look_alikes = [
        ("email", {"email": "taro\u200b@demo.example"}),
        ("email", {"email": "ta\u200dro@demo.example"}),
        ("email", {"email": "ta\u00adro@demo.example"}),
        ("phone", {"phone": "090-1234-\u20605678"}),
        ("name", {"email": "rlo@demo.example", "name": "\u202eoraT"}),
        ("name_kana", {"email": "kana@demo.example", "name_kana": "タ\u200bロウ"}),
        ("postal_code", {"email": "zip@demo.example", "postal_code": "100\ufeff-0001"}),
    ]
    for field, fields in look_alikes:
        response = await client.post("/v1/auth/member/register",
                                     json={"password": PASSWORD, "name": "Taro", **fields})
        assert response.status_code == 422, (fields, response.text)
        assert response.json()["field"] == field
        assert response.json()["type"].endswith(":invisible_character")
    assert await count_members(settings) == 1
    member = await actors.member(email="mine@demo.example")
    for fields in [{"email": "min\u200be@demo.example"}, {"name": "Taro\u2066"}]:
        response = await client.patch("/v1/me", headers=member.headers, json=fields)
        assert response.status_code == 422, response.text
    me = (await client.get("/v1/me", headers=member.headers)).json()
    assert (me["email"], me["name"]) == ("mine@demo.example", member.member["name"])


async def test_a_name_of_invisible_characters_only_is_refused(
    client: Client, actors: Actors, settings: Settings
) -> None:
    for name in ["\u200b", "\u200b\u200b\u200b", "\u3164"]:
        response = await client.post("/v1/auth/member/register", json={
            "email": "blank@example.com", "password": PASSWORD, "name": name})
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "name"
    assert await count_members(settings) == 0
    member = await actors.member()
    response = await client.patch("/v1/me", headers=member.headers, json={"name": "\u200b"})
    assert response.status_code == 422
    assert response.json()["field"] == "name"


async def test_name_length_is_checked_on_what_is_stored(
    client: Client, actors: Actors, settings: Settings
) -> None:
    # U+FDFA passes the 100-character limit as typed and is 18 characters once normalised.
    response = await client.post("/v1/auth/member/register", json={
        "email": "long@example.com", "password": PASSWORD, "name": "\ufdfa" * 100})
    assert response.status_code == 422, response.text
    assert (response.json()["field"], response.json()["type"].split(":")[-1]) == (
        "name", "too_long")
    response = await client.post("/v1/auth/member/register", json={
        "email": "long@example.com", "password": PASSWORD, "name": "Taro",
        "name_kana": "\u3300" * 30})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "name_kana"
    assert await count_members(settings) == 0
    member = await actors.member()
    response = await client.patch("/v1/me", headers=member.headers,
                                  json={"name": "\ufdfa" * 100})
    assert response.status_code == 422
    rows = await query(str(settings.database_url),
                       "select max(length(name)) as longest from members")
    assert rows[0]["longest"] <= 100


# -- attributes: the programme's, the member's ------------------------------------------------

VIP = {"type": "attribute", "key": "vip", "test": {"op": "eq", "value": True}}


async def segment_count(client: Client, headers: dict[str, str], definition: Any) -> int:
    response = await client.post("/v1/segments/preview", headers=headers,
                                 json={"definition": definition})
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


async def test_a_member_cannot_put_themselves_into_a_segment_by_an_attribute(
    client: Client, actors: Actors, settings: Settings
) -> None:
    member = await actors.member()
    marketer = bearer(await actors.staff("marketer"))
    response = await client.patch("/v1/me", headers=member.headers,
                                  json={"attributes": {"vip": True}})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == "attributes"
    assert problem["type"].endswith(":attribute_not_editable")
    assert "'vip'" in problem["detail"]
    assert "only be set by staff" in problem["detail"]
    signed_up = await client.post("/v1/auth/member/register", json={
        "email": "vip@example.com", "password": PASSWORD, "name": "Vip",
        "attributes": {"vip": True}})
    assert signed_up.status_code == 422, signed_up.text
    assert "'vip'" in signed_up.json()["detail"]
    assert await count_members(settings) == 1
    assert await segment_count(client, marketer, VIP) == 0
    # Staff may: the segment then selects the member.
    support = bearer(await actors.staff("support"))
    response = await client.patch(f"/v1/members/{member.member_id}", headers=support,
                                  json={"attributes": {"vip": True}})
    assert response.status_code == 200, response.text
    assert await segment_count(client, marketer, VIP) == 1


async def test_declared_attributes_are_the_members_and_staffs_stay(app_with: AppWith) -> None:
    declared = ("newsletter_topics", "favourite_store")
    async with app_with(member_attributes=declared) as (client, actors):
        member = await actors.member(attributes={"favourite_store": "north"})
        assert member.member["attributes"] == {"favourite_store": "north"}
        support = bearer(await actors.staff("support"))
        response = await client.patch(f"/v1/members/{member.member_id}", headers=support,
                                      json={"attributes": {"vip": True, "segment": "gold"}})
        assert response.json()["attributes"] == {
            "favourite_store": "north", "vip": True, "segment": "gold"}
        response = await client.patch("/v1/me", headers=member.headers, json={"attributes": {
            "favourite_store": "south", "newsletter_topics": "coffee"}})
        assert response.status_code == 200, response.text
        assert response.json()["attributes"] == {
            "favourite_store": "south", "newsletter_topics": "coffee", "vip": True,
            "segment": "gold"}
        # null removes a key the member may set; a staff key stays staff's.
        response = await client.patch("/v1/me", headers=member.headers,
                                      json={"attributes": {"newsletter_topics": None}})
        assert response.json()["attributes"] == {
            "favourite_store": "south", "vip": True, "segment": "gold"}
        for attributes in ({"vip": None}, {"vip": False, "favourite_store": "east"}):
            refused = await client.patch("/v1/me", headers=member.headers,
                                         json={"attributes": attributes})
            assert refused.status_code == 422, refused.text
            assert "favourite_store, newsletter_topics" in refused.json()["detail"]
        me = await client.get("/v1/me", headers=member.headers)
        assert me.json()["attributes"] == {"favourite_store": "south", "vip": True,
                                           "segment": "gold"}


# -- probing who is a member ------------------------------------------------------------------


async def test_probing_phones_by_changing_ones_own_costs_what_signing_in_costs(
    app_with: AppWith
) -> None:
    async with app_with(login_rate_limit_per_minute=10) as (client, actors):
        await actors.member(phone="090-1111-2222")  # each sign-up counts: 9 left
        prober = await actors.member(email="prober@example.com")  # 8 left
        statuses = []
        for _ in range(10):
            response = await client.patch("/v1/me", headers=prober.headers,
                                          json={"phone": "09011112222"})
            statuses.append(response.status_code)
        assert statuses == [409] * 8 + [429] * 2
        assert int(response.headers["retry-after"]) > 0
        # Limited, a free number gets the same answer as a taken one: no oracle left.
        free = await client.patch("/v1/me", headers=prober.headers,
                                  json={"phone": "090-3333-4444"})
        assert free.status_code == 429
        # A change of anything else is not a probe.
        renamed = await client.patch("/v1/me", headers=prober.headers, json={"name": "P"})
        assert renamed.status_code == 200
        # Signing up with a taken contact is counted the same way.
        taken = await client.post("/v1/auth/member/register", json={
            "phone": "090-1111-2222", "password": PASSWORD, "name": "Again"})
        assert taken.status_code == 429


async def test_sign_ups_with_taken_contacts_are_limited_per_address(app_with: AppWith) -> None:
    async with app_with(login_rate_limit_per_minute=4) as (client, actors):
        await actors.member(email="taken@example.com")
        statuses = [(await client.post("/v1/auth/member/register", json={
            "email": "taken@example.com", "password": PASSWORD, "name": "Probe"})).status_code
            for _ in range(5)]
        assert statuses == [409, 409, 409, 429, 429]


async def test_look_alike_emails_and_names_are_listed_as_duplicates(
    client: Client, actors: Actors, settings: Settings
) -> None:
    latin = await actors.member(email="taro@demo.example", name="Taro")
    # A Cyrillic а: another address, so a sign-up of its own (delivery is the real check), and
    # a duplicate candidate for support to look at.
    cyrillic = await actors.member(email="t\u0430ro@demo.example", name="Jiro")
    kanji = await actors.member(name="田口 花子")
    katakana = await actors.member(name="田ロ 花子")  # ロ: katakana ro, not the kanji 口
    await actors.member(name="田口 花子")  # the same name again is not a look-alike...
    await actors.member(email="tar0@demo.example", name="Saburo")  # ...nor 0 for o
    support = bearer(await actors.staff("support"))
    response = await client.get("/v1/members/duplicates", headers=support)
    assert response.status_code == 200, response.text
    groups = {g["reason"]: sorted(m["member_id"] for m in g["members"])
              for g in response.json()["items"]}
    assert groups["look-alike e-mail"] == sorted([latin.member_id, cyrillic.member_id])
    assert kanji.member_id in groups["look-alike name"]
    assert katakana.member_id in groups["look-alike name"]


async def test_members_from_before_the_look_alike_keys_get_them_from_the_job(
    client: Client, actors: Actors, settings: Settings
) -> None:
    assert settings.database_url
    latin = await actors.member(email="hana@demo.example")
    # As a row from before migration 0016, or one the CSV import wrote, has it.
    await query(settings.database_url,
                "update members set email_skeleton = null, name_skeleton = null")
    cyrillic = await actors.member(email="h\u0430na@demo.example")
    support = bearer(await actors.staff("support"))
    before = (await client.get("/v1/members/duplicates", headers=support)).json()["items"]
    assert before == []
    ran = await client.post("/v1/jobs/member_skeletons/run",
                            headers=bearer(await actors.staff("admin")))
    assert ran.status_code == 202, ran.text
    for _ in range(100):
        runs = (await client.get("/v1/jobs/member_skeletons/runs", headers=support)).json()
        if runs.get("items") and runs["items"][0]["outcome"] != "running":
            break
        await asyncio.sleep(0.05)
    after = (await client.get("/v1/members/duplicates", headers=support)).json()["items"]
    assert [sorted(m["member_id"] for m in g["members"]) for g in after] == [
        sorted([latin.member_id, cyrillic.member_id])]


async def test_new_member_numbers_are_random_with_a_check_digit(
    client: Client, actors: Actors, settings: Settings
) -> None:
    assert settings.database_url
    old = await query(settings.database_url,
                      "insert into members (member_number, name, name_key, email)"
                      " values (with_check_digit('1000001'), 'Old', 'old', 'old@example.com')"
                      " returning member_number")
    numbers = [(await actors.member()).member["member_number"] for _ in range(5)]
    for number in numbers:
        assert len(number) == 12, number
        assert number[0] != "0", number
        assert luhn_valid(number), number
    as_ints = sorted(int(n) for n in numbers)
    assert all(b - a > 10 for a, b in itertools.pairwise(as_ints))
    # The numbers given before stay, and the till still finds their members.
    assert old[0]["member_number"] == "10000016"
    key, _ = await actors.terminal()
    found = await client.get("/v1/pos/members/lookup", headers=bearer(key),
                             params={"number": numbers[0]})
    assert found.status_code == 200, found.text


def luhn_valid(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


# -- the till is not a member directory -------------------------------------------------------


async def test_till_lookups_by_number_or_phone_are_limited_per_till(app_with: AppWith) -> None:
    async with app_with(terminal_lookups_per_minute=3) as (client, actors):
        member = await actors.member(phone="090-1234-5678")
        number = member.member["member_number"]
        till, _ = await actors.terminal("STORE-A")
        other_till, _ = await actors.terminal("STORE-A")
        lookups = [{"number": number}, {"phone": "090-1234-5678"}, {"number": "12345678903"},
                   {"number": number}, {"phone": "090-1234-5678"}]
        statuses = [(await client.get("/v1/pos/members/lookup", params=params,
                                      headers=bearer(till))).status_code for params in lookups]
        assert statuses == [200, 200, 404, 429, 429]
        limited = await client.get("/v1/pos/members/lookup", params={"number": number},
                                   headers=bearer(till))
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "scan the member's card" in limited.json()["detail"]
        # The card the member shows still works, and another till counts on its own.
        card = (await client.get("/v1/me/card", headers=member.headers)).json()["token"]
        scanned = await client.get("/v1/pos/members/lookup", params={"card": card},
                                   headers=bearer(till))
        assert scanned.status_code == 200
        other = await client.get("/v1/pos/members/lookup", params={"number": number},
                                 headers=bearer(other_till))
        assert other.status_code == 200


async def test_every_till_lookup_is_audited_by_kind_never_by_phone(
    client: Client, actors: Actors, settings: Settings
) -> None:
    assert settings.database_url
    member = await actors.member(phone="090-1234-5678")
    key, terminal_id = await actors.terminal()
    card = (await client.get("/v1/me/card", headers=member.headers)).json()["token"]
    for params in ({"number": member.member["member_number"]}, {"phone": "090-1234-5678"},
                   {"card": card}, {"phone": "090-9999-0000"}):
        response = await client.get("/v1/pos/members/lookup", params=params, headers=bearer(key))
        assert response.status_code in (200, 404), response.text
    rows = await query(settings.database_url,
                       "select actor_kind, actor_id, action, subject_id, details::text as details"
                       " from audit_log where action = 'pos.members.lookup'"
                       " order by recorded_at, audit_id")
    assert [(r["actor_kind"], str(r["actor_id"]), r["subject_id"] and str(r["subject_id"]))
            for r in rows] == [("terminal", terminal_id, member.member_id)] * 3 + [
        ("terminal", terminal_id, None)]
    assert [msgspec.json.decode(r["details"])["by"] for r in rows] == [
        "number", "phone", "card", "phone"]
    for row in rows:
        for secret in ("1234", "5678", "9999"):
            assert secret not in row["details"]


# -- roles: who sees contact details ----------------------------------------------------------


async def test_a_marketer_sees_members_without_contact_details_and_cannot_search_by_them(
    client: Client, actors: Actors
) -> None:
    member = await actors.member(name="Hanako", email="hanako@example.com",
                                 phone="090-1234-5678", postal_code="100-0001",
                                 birth_date="1990-04-01")
    marketer = bearer(await actors.staff("marketer"))
    support = bearer(await actors.staff("support"))
    contact = {"email", "phone", "postal_code", "birth_date"}
    full = (await client.get(f"/v1/members/{member.member_id}", headers=support)).json()
    assert contact <= set(full)
    seen = (await client.get(f"/v1/members/{member.member_id}", headers=marketer)).json()
    assert seen == {k: v for k, v in full.items() if k not in contact}
    number = member.member["member_number"]
    for q in ("hanako@example.com", "090-1234-5678"):
        found = await client.get("/v1/members", params={"q": q}, headers=marketer)
        assert found.json()["items"] == [], q
        found = await client.get("/v1/members", params={"q": q}, headers=support)
        assert [m["member_id"] for m in found.json()["items"]] == [member.member_id], q
    for q in (number, "Hana"):
        found = (await client.get("/v1/members", params={"q": q}, headers=marketer)).json()
        assert found["items"] == [seen], q
    # The start of the address finds her for support, and tells a marketer nothing.
    for q in ("hanako@", "ＨＡＮＡＫＯ＠exam"):
        found = await client.get("/v1/members", params={"q": q}, headers=support)
        assert [m["member_id"] for m in found.json()["items"]] == [member.member_id], q
    for q in ("hanako@", "hanako@exam"):
        found = await client.get("/v1/members", params={"q": q}, headers=marketer)
        assert found.json()["items"] == [], q
