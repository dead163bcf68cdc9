"""Tokens at the door: forged or stale ones are 401, refresh tokens rotate, guessing stops."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loyalty.access.tokens import MEMBER_AUDIENCE, STAFF_AUDIENCE, load_or_create_signing_key
from loyalty.core.settings import Settings
from tests.conftest import AppWith
from tests.factories import PASSWORD, Actors, bearer, query

Client = httpx.AsyncClient


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _sign(settings: Settings, claims: dict[str, object], *, key: Ed25519PrivateKey | None = None,
          kid: str | None = None) -> str:
    """A token signed with the service's own key (or ``key``), carrying ``claims``."""
    if key is None:
        pem = load_or_create_signing_key(settings.data_path).encode()
        loaded = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(loaded, Ed25519PrivateKey)
        key = loaded
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)


async def test_forged_and_stale_tokens_are_401(
    client: Client, actors: Actors, settings: Settings
) -> None:
    member = await actors.member()
    good = member.access_token
    claims = _claims(good)
    kid = jwt.get_unverified_header(good)["kid"]
    header, payload, signature = good.split(".")
    now = int(time.time())
    forged = {
        "tampered payload": ".".join([header, _b64({**claims, "sub": "0" * 32}), signature]),
        "tampered signature": ".".join([header, payload, signature[::-1]]),
        "signed with another key": _sign(settings, claims, key=Ed25519PrivateKey.generate(),
                                          kid=kid),
        "alg none": ".".join([_b64({"alg": "none", "typ": "JWT", "kid": kid}), payload, ""]),
        "wrong audience": _sign(settings, {**claims, "aud": "someone-else"}, kid=kid),
        "wrong issuer": _sign(settings, {**claims, "iss": "elsewhere"}, kid=kid),
        "expired": _sign(settings, {**claims, "iat": now - 3600, "exp": now - 60}, kid=kid),
        "no expiry": _sign(settings, {k: v for k, v in claims.items() if k != "exp"}, kid=kid),
        "unknown kid": _sign(settings, claims, kid="not-a-key"),
        "garbage": "not.a.token",
    }
    assert (await client.get("/v1/me", headers=bearer(good))).status_code == 200
    for name, token in forged.items():
        response = await client.get("/v1/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["type"].endswith(":authentication_failed"), name


async def test_a_token_that_names_no_session_is_refused(
    client: Client, actors: Actors, settings: Settings
) -> None:
    # Signed with our own key, as tokens of the previous version were: log-out could not end
    # it, so it is not taken (the app refreshes, and gets a token with a session).
    member = await actors.member()
    kid = jwt.get_unverified_header(member.access_token)["kid"]
    claims = {k: v for k, v in _claims(member.access_token).items() if k != "sid"}
    sessionless = await client.get("/v1/me", headers=bearer(_sign(settings, claims, kid=kid)))
    assert sessionless.status_code == 401
    assert sessionless.json()["type"].endswith(":session_ended")
    assert (await client.get("/v1/me", headers=member.headers)).status_code == 200


async def test_member_token_does_not_open_staff_routes(client: Client, actors: Actors) -> None:
    member = await actors.member()
    # A member token relabelled as staff would need the service's own signature to pass.
    as_staff = {**_claims(member.access_token), "aud": STAFF_AUDIENCE, "role": "admin"}
    relabelled = ".".join([member.access_token.split(".")[0], _b64(as_staff),
                           member.access_token.split(".")[2]])
    assert (await client.get("/v1/members", headers=bearer(relabelled))).status_code == 401
    assert (await client.get("/v1/members", headers=member.headers)).status_code == 403
    # Staff tokens carry the staff audience and cannot stand in for a member.
    staff = await actors.staff("admin")
    assert _claims(staff)["aud"] == STAFF_AUDIENCE
    assert _claims(member.access_token)["aud"] == MEMBER_AUDIENCE
    assert (await client.get("/v1/me", headers=bearer(staff))).status_code == 403


async def test_refresh_rotates_and_a_reused_token_revokes_its_family(
    client: Client, actors: Actors
) -> None:
    member = await actors.member()
    first = await client.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert first.status_code == 200
    successor = first.json()["refresh_token"]
    assert successor != member.refresh_token
    assert (await client.get("/v1/me", headers=bearer(first.json()["access_token"]))).status_code \
        == 200

    reused = await client.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert reused.status_code == 401
    assert reused.json()["type"].endswith(":refresh_token_reused")
    # The thief's successor is dead too: the whole family went with the reuse.
    after = await client.post("/v1/auth/refresh", json={"refresh_token": successor})
    assert after.status_code == 401


async def test_refresh_of_another_session_survives_a_reuse(client: Client, actors: Actors) -> None:
    member = await actors.member(email="two@example.com")
    other = await client.post("/v1/auth/member/login",
                              json={"email": "two@example.com", "password": PASSWORD})
    await client.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    await client.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    survivor = await client.post("/v1/auth/refresh",
                                 json={"refresh_token": other.json()["refresh_token"]})
    assert survivor.status_code == 200


async def test_logout_ends_the_session(client: Client, actors: Actors) -> None:
    member = await actors.member()
    assert (await client.post("/v1/auth/logout",
                              json={"refresh_token": member.refresh_token})).status_code == 204
    refresh = await client.post("/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert refresh.status_code == 401


async def test_staff_refresh_keeps_the_role(client: Client, actors: Actors) -> None:
    await actors.staff("marketer", email="m@staff.example")
    login = await client.post("/v1/auth/staff/login",
                              json={"email": "m@staff.example", "password": PASSWORD})
    refreshed = await client.post("/v1/auth/refresh",
                                  json={"refresh_token": login.json()["refresh_token"]})
    assert refreshed.status_code == 200
    assert _claims(refreshed.json()["access_token"])["role"] == "marketer"


async def test_jwks_verifies_issued_tokens(client: Client, actors: Actors) -> None:
    member = await actors.member()
    jwks = (await client.get("/.well-known/jwks.json")).json()
    kid = jwt.get_unverified_header(member.access_token)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid]
    assert "d" not in jwk  # never the private part
    key = jwt.PyJWK(jwk).key
    claims = jwt.decode(member.access_token, key, algorithms=["EdDSA"], audience=MEMBER_AUDIENCE)
    assert claims["sub"] == member.member_id


async def test_password_guessing_is_stopped_per_account(app_with: AppWith) -> None:
    async with app_with(login_failures_per_account=3) as (client, actors):
        await actors.member(email="victim@example.com")
        statuses = []
        for _ in range(5):
            response = await client.post("/v1/auth/member/login",
                                         json={"email": "victim@example.com", "password": "guess"})
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429, 429]
        assert int(response.headers["retry-after"]) > 0
        # Even the right password waits until the window passes: guessing gains nothing.
        right = await client.post("/v1/auth/member/login",
                                  json={"email": "VICTIM@example.com", "password": PASSWORD})
        assert right.status_code == 429


async def test_sign_in_is_limited_per_client_address(app_with: AppWith) -> None:
    async with app_with(login_rate_limit_per_minute=4) as (client, _):
        statuses = [
            (await client.post("/v1/auth/member/login",
                               json={"email": f"x{i}@example.com", "password": "whatever"}
                               )).status_code
            for i in range(6)
        ]
        assert statuses == [401, 401, 401, 401, 429, 429]


async def test_requests_are_limited_per_principal_with_retry_after(app_with: AppWith) -> None:
    async with app_with(rate_limit_per_minute=5) as (client, actors):
        first, second = await actors.member(), await actors.member()
        statuses = [(await client.get("/v1/me", headers=first.headers)).status_code
                    for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        limited = await client.get("/v1/me", headers=first.headers)
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Another member has a budget of their own.
        assert (await client.get("/v1/me", headers=second.headers)).status_code == 200


async def test_a_burst_larger_than_the_redis_pool_is_still_counted(app_with: AppWith) -> None:
    # 150 requests at once need more Redis connections than the pool holds: they wait for
    # one rather than failing open, so exactly the limit passes.
    async with app_with(rate_limit_per_minute=100) as (client, _):
        statuses = await asyncio.gather(*(client.get("/v1/me") for _ in range(150)))
        codes = [response.status_code for response in statuses]
        assert (codes.count(401), codes.count(429)) == (100, 50)


@pytest.mark.parametrize(("allowance", "tokens"), [(8, 8), (1, 1)])
async def test_a_request_takes_the_allowance_of_tokens_from_redis(
    app_with: AppWith, redis_url: str, allowance: int, tokens: int
) -> None:
    """400 a minute, a token every 150 ms: one request moves its key's TAT that many tokens
    ahead (less the few ms the request took), 8 with the allowance, 1 without."""
    async with app_with(rate_limit_per_minute=400, rate_limit_allowance=allowance) as (client, _):
        await client.get("/v1/me")
    redis = aioredis.from_url(redis_url)
    keys = [key async for key in redis.scan_iter("rl:address:*")]
    assert len(keys) == 1
    assert (tokens - 1) * 150 < await redis.pttl(keys[0]) <= tokens * 150
    await redis.aclose()



# -- the failure counter is the account's, however it is written -------------------------------


async def test_a_phone_written_four_ways_shares_one_failure_counter(
    client: Client, actors: Actors
) -> None:
    await actors.member(phone="080-2345-6789")
    for _ in range(10):
        wrong = await client.post("/v1/auth/member/login",
                                  json={"phone": "080-2345-6789", "password": "guess"})
        assert wrong.status_code == 401
    for spelling in ["080-2345-6789", "08023456789", "+81 80 2345 6789", "(080) 2345 6789"]:
        right = await client.post("/v1/auth/member/login",
                                  json={"phone": spelling, "password": PASSWORD})
        assert right.status_code == 429, spelling


async def test_e_mail_and_phone_of_one_member_share_one_failure_counter(
    client: Client, actors: Actors
) -> None:
    await actors.member(email="both@example.com", phone="090-1234-5678")
    for attempt in range(10):
        login = {"email": "Both@Example.com"} if attempt % 2 else {"phone": "09012345678"}
        assert (await client.post("/v1/auth/member/login",
                                  json={**login, "password": "guess"})).status_code == 401
    right = await client.post("/v1/auth/member/login",
                              json={"email": "both@example.com", "password": PASSWORD})
    assert right.status_code == 429


async def test_guesses_at_a_number_nobody_has_are_counted_however_it_is_written(
    client: Client,
) -> None:
    spellings = ["070-1111-2222", "07011112222", "+81 70 1111 2222", "(070) 1111 2222"]
    statuses = [
        (await client.post("/v1/auth/member/login",
                           json={"phone": spellings[i % 4], "password": "guess"})).status_code
        for i in range(11)
    ]
    assert statuses == [401] * 10 + [429]


async def test_a_staff_e_mail_written_two_ways_shares_one_failure_counter(
    client: Client, actors: Actors
) -> None:
    await actors.staff("support", email="desk@staff.example")
    for spelling in ["desk@staff.example", " ＤＥＳＫ@staff.example "] * 5:
        wrong = await client.post("/v1/auth/staff/login",
                                  json={"email": spelling, "password": "guess"})
        assert wrong.status_code == 401
    right = await client.post("/v1/auth/staff/login",
                              json={"email": "Desk@Staff.Example", "password": PASSWORD})
    assert right.status_code == 429


# -- a session's absolute lifetime ----------------------------------------------------------


async def test_refreshing_does_not_extend_a_session_past_its_maximum_age(
    fresh_database: str, app_with: AppWith
) -> None:
    async with app_with(session_max_age_seconds=600) as (client, actors):
        member = await actors.member()
        refresh = member.refresh_token
        for _ in range(3):
            rotated = await client.post("/v1/auth/refresh", json={"refresh_token": refresh})
            assert rotated.status_code == 200
            refresh = rotated.json()["refresh_token"]
        rows = await query(fresh_database,
                           "select session_started_at, expires_at from refresh_tokens"
                           " where member_id = $1 order by issued_at", member.member_uuid)
        assert len(rows) == 4
        started = rows[0]["session_started_at"]
        # Every successor ends where the first token did: the sign-in plus the maximum age,
        # not 30 days (the refresh-token lifetime) after its own issue.
        assert {row["session_started_at"] for row in rows} == {started}
        assert {row["expires_at"] for row in rows} == {started + dt.timedelta(seconds=600)}
        assert _claims(rotated.json()["access_token"])["exp"] \
            <= (started + dt.timedelta(seconds=600)).timestamp()

        # Once the maximum age has passed, the session is over however fresh its token.
        await query(fresh_database,
                    "update refresh_tokens set session_started_at = now() - interval '601 s'"
                    " where member_id = $1", member.member_uuid)
        ended = await client.post("/v1/auth/refresh", json={"refresh_token": refresh})
        assert ended.status_code == 401
        assert ended.json()["type"].endswith(":invalid_refresh_token")
