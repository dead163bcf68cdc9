"""Passwords changed, reset through a link the mailer sends, refused when common; e-mail and phone
proved with a code (issue 16)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from loyalty.access.ratelimit import RateLimiter
from loyalty.core.settings import Settings
from tests.api.test_revocation import refused_within
from tests.factories import PASSWORD, Actors, SignedUp, bearer, query

Client = httpx.AsyncClient
NEW_PASSWORD = "a brand new passphrase"


async def events(settings: Settings, type_: str, member_id: str | None = None
                 ) -> list[dict[str, Any]]:
    """The payloads of the outbox's events of ``type_`` (about one member, if given)."""
    assert settings.database_url
    rows = await query(settings.database_url,
                       "select data from outbox where type = $1"
                       " and ($2::uuid is null or member_id = $2) order by seq",
                       type_, member_id)
    return [dict(row["data"]) for row in rows]


async def login(client: Client, password: str, **contact: str) -> httpx.Response:
    return await client.post("/v1/auth/member/login", json={**contact, "password": password})


async def sign_in_again(client: Client, member: SignedUp) -> SignedUp:
    """A second session of the same member."""
    response = await login(client, PASSWORD, email=member.member["email"])
    assert response.status_code == 200, response.text
    tokens = response.json()
    return SignedUp(member.member, tokens["access_token"], tokens["refresh_token"])


async def refresh(client: Client, refresh_token: str) -> httpx.Response:
    return await client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


# -- changing one's password ---------------------------------------------------------------------


async def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(
    client: Client, actors: Actors,
) -> None:
    member = await actors.member()
    other = await sign_in_again(client, member)
    changed = await client.put("/v1/me/password", headers=member.headers,
                               json={"current_password": PASSWORD,
                                     "new_password": NEW_PASSWORD})
    assert changed.status_code == 204, changed.text
    # The other session: its refresh token and, within the promise, its access token.
    assert (await refresh(client, other.refresh_token)).status_code == 401
    await refused_within(client, other.access_token)
    # This one goes on, refresh token and all.
    assert (await client.get("/v1/me", headers=member.headers)).status_code == 200
    assert (await refresh(client, member.refresh_token)).status_code == 200
    email = member.member["email"]
    assert (await login(client, PASSWORD, email=email)).status_code == 401
    assert (await login(client, NEW_PASSWORD, email=email)).status_code == 200


async def test_a_wrong_current_password_changes_nothing_and_counts_as_a_guess(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member()
    for _ in range(settings.login_failures_per_account):
        wrong = await client.put("/v1/me/password", headers=member.headers,
                                 json={"current_password": "not my password",
                                       "new_password": NEW_PASSWORD})
        assert wrong.status_code == 403, wrong.text
        assert wrong.json()["type"].endswith(":wrong_password")
        assert "current password is wrong" in wrong.json()["detail"]
    # As many wrong guesses as sign-in allows: the right one waits too.
    limited = await client.put("/v1/me/password", headers=member.headers,
                               json={"current_password": PASSWORD,
                                     "new_password": NEW_PASSWORD})
    assert limited.status_code == 429
    assert (await login(client, PASSWORD, email=member.member["email"])).status_code == 429
    assert (await client.get("/v1/me", headers=member.headers)).status_code == 200


async def test_staff_change_their_own_password_and_their_other_sessions_end(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    email = "changes.password@staff.example"
    token = await actors.staff("analyst", email=email)
    other = await client.post("/v1/auth/staff/login", json={"email": email, "password": PASSWORD})
    assert other.status_code == 200
    other_access, other_refresh = other.json()["access_token"], other.json()["refresh_token"]
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    wrong = await client.put("/v1/staff/me/password", headers=bearer(token),
                             json={**body, "current_password": "not it at all"})
    assert wrong.status_code == 403, wrong.text
    changed = await client.put("/v1/staff/me/password", headers=bearer(token), json=body)
    assert changed.status_code == 204, changed.text
    assert (await refresh(client, other_refresh)).status_code == 401
    await refused_within(client, other_access, path="/v1/stores")
    assert (await client.get("/v1/stores", headers=bearer(token))).status_code == 200
    old = await client.post("/v1/auth/staff/login", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post("/v1/auth/staff/login",
                            json={"email": email, "password": NEW_PASSWORD})
    assert new.status_code == 200
    assert settings.database_url
    [audit] = await query(settings.database_url,
                          "select actor_id, subject_id from audit_log where action = $1",
                          "staff.password")
    assert audit["actor_id"] == audit["subject_id"]


async def test_a_member_token_cannot_change_a_staff_password(
    client: Client, actors: Actors,
) -> None:
    member = await actors.member()
    refused = await client.put("/v1/staff/me/password", headers=member.headers,
                               json={"current_password": PASSWORD,
                                     "new_password": NEW_PASSWORD})
    assert refused.status_code == 403


# -- common passwords ------------------------------------------------------------------------------


@pytest.mark.parametrize("common", ["password1", "PASSWORD123", "iloveyou12", "qwertyuiop"])
async def test_a_common_password_is_refused_wherever_one_is_set(
    client: Client, actors: Actors, common: str,
) -> None:
    def refused_for_being_common(response: httpx.Response, field: str) -> None:
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["type"].endswith(":common_password")
        assert problem["field"] == field
        assert "most common passwords" in problem["detail"]
        assert "choose another" in problem["detail"]

    signed_up = await client.post("/v1/auth/member/register", json={
        "name": "Common Choice", "email": "common@example.com", "password": common})
    refused_for_being_common(signed_up, "password")
    member = await actors.member()
    changed = await client.put("/v1/me/password", headers=member.headers,
                               json={"current_password": PASSWORD, "new_password": common})
    refused_for_being_common(changed, "new_password")
    admin = bearer(await actors.staff("admin"))
    created = await client.post("/v1/staff", headers=admin, json={
        "email": "common.staff@staff.example", "password": common, "role": "support"})
    refused_for_being_common(created, "password")
    staff = bearer(await actors.staff("support"))
    staff_changed = await client.put("/v1/staff/me/password", headers=staff,
                                     json={"current_password": PASSWORD, "new_password": common})
    refused_for_being_common(staff_changed, "new_password")
    confirmed = await client.post("/v1/auth/member/password-reset/confirm",
                                  json={"token": "x" * 43, "new_password": common})
    refused_for_being_common(confirmed, "new_password")
    # Nothing was written: the old password still signs in.
    assert (await login(client, PASSWORD, email=member.member["email"])).status_code == 200


# -- resetting a forgotten password -------------------------------------------------------------


async def request_reset(client: Client, **contact: str) -> httpx.Response:
    return await client.post("/v1/auth/member/password-reset", json=contact)


async def confirm_reset(client: Client, token: str, password: str = NEW_PASSWORD
                        ) -> httpx.Response:
    return await client.post("/v1/auth/member/password-reset/confirm",
                             json={"token": token, "new_password": password})


async def test_a_reset_end_to_end_from_request_to_a_new_password(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member()
    email = member.member["email"]
    other = await sign_in_again(client, member)
    known = await request_reset(client, email=email.upper())
    unknown = await request_reset(client, email="nobody-here@example.com")
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert "30 minutes" in known.json()["detail"]
    # The member's event carries the token for the mailer; nobody's e-mail wrote nothing.
    [sent] = await events(settings, "member.password_reset_requested")
    assert sent["member_id"] == member.member_id
    assert sent["channel"] == "email"
    assert sent["contact"] == email
    assert sent["expires_at"]
    token = sent["token"]
    # Only a digest of it is kept.
    assert settings.database_url
    [stored] = await query(settings.database_url,
                           "select token_hash, expires_at - requested_at as ttl"
                           " from member_password_resets where member_id = $1",
                           member.member_uuid)
    assert bytes(stored["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert stored["ttl"].total_seconds() == 30 * 60

    confirmed = await confirm_reset(client, token)
    assert confirmed.status_code == 204, confirmed.text
    assert (await login(client, PASSWORD, email=email)).status_code == 401
    assert (await login(client, NEW_PASSWORD, email=email)).status_code == 200
    # Every session of before ends: whoever knew the old password is out.
    for session in (member, other):
        assert (await refresh(client, session.refresh_token)).status_code == 401
        await refused_within(client, session.access_token)
    # Once only.
    again = await confirm_reset(client, token, "yet another passphrase")
    assert again.status_code == 422
    assert again.json()["type"].endswith(":reset_token_used")
    assert (await login(client, NEW_PASSWORD, email=email)).status_code == 200
    # The link reached the member at that address: it is proven.
    me = await client.get("/v1/me", headers=bearer(
        (await login(client, NEW_PASSWORD, email=email)).json()["access_token"]))
    assert me.json()["email_verified"] is True


async def test_a_reset_lets_a_member_locked_out_by_wrong_guesses_in_at_once(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    """Wrong guesses (someone else's, or their own) lock the account for the window; the reset
    link proves the member, so the new password signs in at once, and the count starts
    again."""
    member = await actors.member()
    email = member.member["email"]
    for _ in range(settings.login_failures_per_account):
        assert (await login(client, "a wrong guess", email=email)).status_code == 401
    locked = await login(client, PASSWORD, email=email)
    assert locked.status_code == 429, locked.text
    assert (await request_reset(client, email=email)).status_code == 202
    [sent] = await events(settings, "member.password_reset_requested")
    assert (await confirm_reset(client, sent["token"])).status_code == 204
    signed_in = await login(client, NEW_PASSWORD, email=email)
    assert signed_in.status_code == 200, signed_in.text
    # A fresh window: the limit's worth of wrong guesses again before the next lock.
    for _ in range(settings.login_failures_per_account):
        assert (await login(client, "a wrong guess", email=email)).status_code == 401
    assert (await login(client, NEW_PASSWORD, email=email)).status_code == 429


async def test_forgetting_a_count_when_redis_is_down_fails_nobody() -> None:
    """The limiter fails open: a count it cannot clear is logged, not raised."""
    limiter = RateLimiter(aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    await limiter.forget("login:member:anyone")


async def test_a_reset_goes_to_a_phone_too_and_the_newest_link_spends_the_others(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member(phone="090-1111-2222")
    for _ in range(2):
        assert (await request_reset(client, phone="+81 90 1111 2222")).status_code == 202
    first, second = await events(settings, "member.password_reset_requested", member.member_id)
    assert first["channel"] == second["channel"] == "phone"
    assert first["contact"] == "+819011112222"
    assert first["token"] != second["token"]
    assert (await confirm_reset(client, second["token"])).status_code == 204
    used = await confirm_reset(client, first["token"], "some other passphrase")
    assert used.status_code == 422
    assert used.json()["type"].endswith(":reset_token_used")


async def test_unknown_and_expired_reset_tokens_are_refused_saying_what_to_do(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    unknown = await confirm_reset(client, "not-a-token-anyone-was-sent-0123456789")
    assert unknown.status_code == 422
    assert unknown.json()["type"].endswith(":reset_token_invalid")
    assert "ask for a new one" in unknown.json()["detail"]
    member = await actors.member()
    assert (await request_reset(client, email=member.member["email"])).status_code == 202
    [sent] = await events(settings, "member.password_reset_requested", member.member_id)
    assert settings.database_url
    await query(settings.database_url,
                "update member_password_resets set expires_at = now() - interval '1 second'"
                " where member_id = $1", member.member_uuid)
    expired = await confirm_reset(client, sent["token"])
    assert expired.status_code == 422
    assert expired.json()["type"].endswith(":reset_token_expired")
    assert (await login(client, PASSWORD, email=member.member["email"])).status_code == 200


async def test_no_reset_reaches_a_suspended_member_or_an_old_address(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    suspended = await actors.member()
    support = bearer(await actors.staff("support"))
    done = await client.patch(f"/v1/members/{suspended.member_id}", headers=support,
                              json={"status": "suspended"})
    assert done.status_code == 200, done.text
    assert (await request_reset(client, email=suspended.member["email"])).status_code == 202
    assert await events(settings, "member.password_reset_requested") == []
    # A link sent to an address the member has since replaced no longer works.
    moved = await actors.member()
    assert (await request_reset(client, email=moved.member["email"])).status_code == 202
    [sent] = await events(settings, "member.password_reset_requested", moved.member_id)
    changed = await client.patch("/v1/me", headers=moved.headers,
                                 json={"email": "moved.away@example.com"})
    assert changed.status_code == 200, changed.text
    assert (await confirm_reset(client, sent["token"])).status_code == 422


async def test_reset_requests_are_limited_per_contact_alike_for_members_and_strangers(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member()
    for contact in (member.member["email"], "stranger@example.com"):
        answers = [(await request_reset(client, email=contact)).status_code for _ in range(6)]
        assert answers == [202] * 5 + [429], contact
    assert len(await events(settings, "member.password_reset_requested")) == 5


async def test_a_reset_request_answers_in_the_same_time_found_or_not(
    client: Client, actors: Actors,
) -> None:
    member = await actors.member()

    async def timed(email: str) -> float:
        started = time.monotonic()
        assert (await request_reset(client, email=email)).status_code == 202
        return time.monotonic() - started

    known = [await timed(member.member["email"]) for _ in range(3)]
    unknown = [await timed(f"nobody{i}@example.com") for i in range(3)]
    # Both wait out the same floor, which hides the work a found member costs.
    assert min(known + unknown) >= 0.25


# -- proving an e-mail address or phone ------------------------------------------------------------


async def ask_code(client: Client, member: SignedUp, channel: str) -> httpx.Response:
    return await client.post("/v1/me/verification", headers=member.headers,
                             json={"channel": channel})


async def verify(client: Client, member: SignedUp, channel: str, code: str) -> httpx.Response:
    return await client.post("/v1/me/verify", headers=member.headers,
                             json={"channel": channel, "code": code})


async def latest_code(settings: Settings, member: SignedUp) -> dict[str, Any]:
    return (await events(settings, "member.verification_requested", member.member_id))[-1]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_a_code_proves_the_email_and_the_profile_says_so(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member(phone="090-3333-4444", email="proves@example.com")
    profile = (await client.get("/v1/me", headers=member.headers)).json()
    assert profile["email_verified"] is False
    assert profile["phone_verified"] is False
    asked = await ask_code(client, member, "email")
    assert asked.status_code == 202, asked.text
    assert asked.json()["channel"] == "email"
    sent = await latest_code(settings, member)
    assert sent["channel"] == "email"
    assert sent["contact"] == member.member["email"]
    assert re.fullmatch(r"[0-9]{6}", sent["code"])
    verified = await verify(client, member, "email", sent["code"])
    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified"] is True
    assert verified.json()["phone_verified"] is False
    # Used up: the same code again finds nothing waiting.
    again = await verify(client, member, "email", sent["code"])
    assert again.status_code == 422
    assert again.json()["type"].endswith(":verification_code_missing")
    already = await ask_code(client, member, "email")
    assert already.status_code == 409
    # A new address is not proven, and staff see that too.
    changed = await client.patch("/v1/me", headers=member.headers,
                                 json={"email": "new.address@example.com"})
    assert changed.status_code == 200
    assert changed.json()["email_verified"] is False
    support = bearer(await actors.staff("support"))
    seen = await client.get(f"/v1/members/{member.member_id}", headers=support)
    assert seen.json()["email_verified"] is False


async def test_wrong_codes_use_up_the_tries_and_then_the_code(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member(phone="090-5555-6666")
    assert (await ask_code(client, member, "phone")).status_code == 202
    code = (await latest_code(settings, member))["code"]
    for left in ("4 tries", "3 tries", "2 tries", "1 try"):
        refused = await verify(client, member, "phone", wrong(code))
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"].endswith(":verification_code_wrong")
        assert f"({left} left)" in refused.json()["detail"]
    last = await verify(client, member, "phone", wrong(code))
    assert "last try: ask for a new code" in last.json()["detail"]
    # The right code comes too late: the code is gone.
    late = await verify(client, member, "phone", code)
    assert late.status_code == 422
    assert late.json()["type"].endswith(":verification_code_missing")
    # A new code works, and only it.
    assert (await ask_code(client, member, "phone")).status_code == 202
    fresh = (await latest_code(settings, member))["code"]
    verified = await verify(client, member, "phone", fresh)
    assert verified.status_code == 200
    assert verified.json()["phone_verified"] is True


async def test_codes_expire_and_are_refused_for_a_contact_one_does_not_have(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member()
    no_phone = await ask_code(client, member, "phone")
    assert no_phone.status_code == 422
    assert no_phone.json()["type"].endswith(":no_contact")
    assert (await ask_code(client, member, "email")).status_code == 202
    code = (await latest_code(settings, member))["code"]
    assert settings.database_url
    await query(settings.database_url,
                "update member_verification_codes set expires_at = now() - interval '1 second'"
                " where member_id = $1", member.member_uuid)
    expired = await verify(client, member, "email", code)
    assert expired.status_code == 422
    assert expired.json()["type"].endswith(":verification_code_expired")
    malformed = await verify(client, member, "email", "12345a")
    assert malformed.status_code == 400


async def test_asking_for_codes_is_limited_per_member_and_channel(
    client: Client, actors: Actors,
) -> None:
    member = await actors.member()
    # The code sent at sign-up counts: four more, then the limit.
    answers = [(await ask_code(client, member, "email")).status_code for _ in range(5)]
    assert answers == [202] * 4 + [429]
    assert "Retry-After" in (await ask_code(client, member, "email")).json()["detail"]


async def test_sign_up_and_a_contact_change_send_a_code_to_the_new_contact(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member(email="signs.up@example.com", phone="090-7777-8888")
    sent = await events(settings, "member.verification_requested", member.member_id)
    assert [(e["channel"], e["contact"]) for e in sent] == [
        ("email", "signs.up@example.com"), ("phone", "+819077778888")]
    # Proven, then changed: the new address gets a code of its own, and the old one's is gone.
    assert (await verify(client, member, "email", sent[0]["code"])).status_code == 200
    unchanged = await client.patch("/v1/me", headers=member.headers,
                                   json={"email": "signs.up@example.com", "name": "Renamed"})
    assert unchanged.status_code == 200
    assert unchanged.json()["email_verified"] is True
    changed = await client.patch("/v1/me", headers=member.headers,
                                 json={"email": "moved@example.com"})
    assert changed.json()["email_verified"] is False
    latest = await latest_code(settings, member)
    assert (latest["channel"], latest["contact"]) == ("email", "moved@example.com")
    assert len(await events(settings, "member.verification_requested", member.member_id)) == 3
    assert (await verify(client, member, "email", latest["code"])).status_code == 200
    # The phone's code from sign-up still works: only the e-mail changed.
    assert (await verify(client, member, "phone", sent[1]["code"])).status_code == 200


async def test_verified_contacts_are_a_segment_condition(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    proven, unproven = await actors.member(), await actors.member()
    assert (await ask_code(client, proven, "email")).status_code == 202
    code = (await latest_code(settings, proven))["code"]
    assert (await verify(client, proven, "email", code)).status_code == 200
    marketer = bearer(await actors.staff("marketer"))

    async def members_of(definition: dict[str, Any]) -> set[str]:
        previewed = await client.post("/v1/segments/preview", headers=marketer,
                                      json={"definition": definition, "sample_size": 50})
        assert previewed.status_code == 200, previewed.text
        return {s["member_id"] for s in previewed.json()["sample"]}

    verified = await members_of({"type": "verified", "channel": "email"})
    not_verified = await members_of({"type": "verified", "channel": "email", "verified": False})
    assert proven.member_id in verified
    assert unproven.member_id not in verified
    assert unproven.member_id in not_verified
    assert proven.member_id not in not_verified
    assert proven.member_id not in await members_of({"type": "verified", "channel": "phone"})


async def test_two_tries_at_once_cannot_both_pass_a_wrong_code_limit(
    client: Client, actors: Actors, settings: Settings,
) -> None:
    member = await actors.member()
    assert (await ask_code(client, member, "email")).status_code == 202
    code = (await latest_code(settings, member))["code"]
    answers = await asyncio.gather(*(verify(client, member, "email", wrong(code))
                                     for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [422] * 10
    # Five tries in all, however they arrived: the code is gone.
    assert (await verify(client, member, "email", code)).status_code == 422
