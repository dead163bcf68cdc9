"""Access tokens: only our EdDSA keys, our issuer and one of our two audiences get in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loyalty.access.passwords import Passwords
from loyalty.access.principals import MemberPrincipal, StaffPrincipal
from loyalty.access.revocation import Standing, judge
from loyalty.access.tokens import (
    MEMBER_AUDIENCE,
    STAFF_AUDIENCE,
    TokenSigner,
    load_or_create_signing_key,
)
from loyalty.core.errors import AuthenticationFailed
from tests.factories import new_private_pem

ISSUER = "loyalty"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]


def public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())


def member_claims(**changes: Any) -> dict[str, Any]:
    """Every claim a valid member token carries, with ``changes`` applied."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": MEMBER_AUDIENCE, "sub": str(uuid4()), "iat": now, "exp": now + 900,
    }
    claims.update(changes)
    return claims


def eddsa_token(claims: dict[str, Any], private_pem: str, kid: str | None) -> str:
    headers = {} if kid is None else {"kid": kid}
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)


@pytest.fixture
def signing_pem() -> str:
    return new_private_pem()


@pytest.fixture
def signer(signing_pem: str) -> TokenSigner:
    return TokenSigner(signing_pem, issuer=ISSUER, access_ttl=900)


# -- what gets in -----------------------------------------------------------------------------


def test_member_token_verifies_to_its_member(signer: TokenSigner) -> None:
    member_id = uuid4()
    assert signer.principal(signer.issue(member_id, MEMBER_AUDIENCE)) == MemberPrincipal(member_id)


def test_staff_token_verifies_to_its_staff_account_and_role(signer: TokenSigner) -> None:
    staff_id = uuid4()
    token = signer.issue(staff_id, STAFF_AUDIENCE, role="marketer")
    assert signer.principal(token) == StaffPrincipal(staff_id, "marketer")


def test_token_carries_the_required_claims_and_kid(signer: TokenSigner) -> None:
    token = signer.issue(uuid4(), MEMBER_AUDIENCE)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": signer.kid, "typ": "JWT"}
    claims = signer.verify(token)
    assert set(REQUIRED_CLAIMS) <= set(claims)
    assert claims["exp"] - claims["iat"] == 900


def test_hand_built_token_with_every_claim_verifies(signer: TokenSigner, signing_pem: str) -> None:
    # The control for the refusals below: the way they build tokens is sound in itself.
    claims = member_claims()
    token = eddsa_token(claims, signing_pem, signer.kid)
    assert signer.principal(token) == MemberPrincipal(UUID(claims["sub"]))


# -- what is refused --------------------------------------------------------------------------


def test_token_with_a_flipped_payload_character_is_refused(signer: TokenSigner) -> None:
    header, payload, signature = signer.issue(uuid4(), MEMBER_AUDIENCE).split(".")
    middle = len(payload) // 2
    flipped = "B" if payload[middle] == "A" else "A"
    tampered = f"{header}.{payload[:middle]}{flipped}{payload[middle + 1:]}.{signature}"
    with pytest.raises(AuthenticationFailed):
        signer.principal(tampered)


def test_member_token_rewritten_into_an_admin_token_is_refused(signer: TokenSigner) -> None:
    header, _, signature = signer.issue(uuid4(), MEMBER_AUDIENCE).split(".")
    escalated = b64url_json(member_claims(aud=STAFF_AUDIENCE, role="admin"))
    with pytest.raises(AuthenticationFailed):
        signer.principal(f"{header}.{escalated}.{signature}")


def test_token_signed_with_another_key_under_our_kid_is_refused(signer: TokenSigner) -> None:
    forged = eddsa_token(member_claims(), new_private_pem(), signer.kid)
    with pytest.raises(AuthenticationFailed):
        signer.principal(forged)


def test_token_signed_with_another_key_and_no_kid_is_refused(signer: TokenSigner) -> None:
    forged = eddsa_token(member_claims(), new_private_pem(), kid=None)
    with pytest.raises(AuthenticationFailed):
        signer.principal(forged)


def test_token_signed_by_us_without_kid_is_refused(signer: TokenSigner, signing_pem: str) -> None:
    with pytest.raises(AuthenticationFailed):
        signer.principal(eddsa_token(member_claims(), signing_pem, kid=None))


@pytest.mark.parametrize("with_kid", [True, False])
def test_unsigned_alg_none_token_is_refused(signer: TokenSigner, with_kid: bool) -> None:
    header = {"alg": "none", "typ": "JWT", **({"kid": signer.kid} if with_kid else {})}
    unsigned = f"{b64url_json(header)}.{b64url_json(member_claims())}."
    with pytest.raises(AuthenticationFailed):
        signer.principal(unsigned)


@pytest.mark.parametrize("secret_form", ["pem", "raw"])
def test_hs256_token_keyed_with_our_public_key_is_refused(
    signer: TokenSigner, signing_pem: str, secret_form: str
) -> None:
    # Algorithm confusion: a verifier that let the token pick HS256 would check this HMAC
    # with the public key, which anyone can read from the JWKS.
    public = serialization.load_pem_public_key(public_pem(signing_pem).encode())
    secret = (
        public_pem(signing_pem).encode() if secret_form == "pem"
        else public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    header = b64url_json({"alg": "HS256", "typ": "JWT", "kid": signer.kid})
    signing_input = f"{header}.{b64url_json(member_claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(AuthenticationFailed):
        signer.principal(f"{signing_input}.{b64url(mac)}")


def test_token_for_another_audience_is_refused(signer: TokenSigner) -> None:
    with pytest.raises(AuthenticationFailed):
        signer.principal(signer.issue(uuid4(), "loyalty:terminal"))


def test_token_from_another_issuer_is_refused(signer: TokenSigner, signing_pem: str) -> None:
    elsewhere = TokenSigner(signing_pem, issuer="someone-else", access_ttl=900)
    with pytest.raises(AuthenticationFailed):
        signer.principal(elsewhere.issue(uuid4(), MEMBER_AUDIENCE))


def test_expired_token_is_refused(signer: TokenSigner) -> None:
    now = int(time.time())
    expired = signer.issue(uuid4(), MEMBER_AUDIENCE, iat=now - 960, exp=now - 60)
    with pytest.raises(AuthenticationFailed, match="expired"):
        signer.principal(expired)


@pytest.mark.parametrize("missing", REQUIRED_CLAIMS)
def test_token_missing_a_required_claim_is_refused(
    signer: TokenSigner, signing_pem: str, missing: str
) -> None:
    claims = member_claims()
    del claims[missing]
    with pytest.raises(AuthenticationFailed):
        signer.principal(eddsa_token(claims, signing_pem, signer.kid))


def test_token_naming_both_audiences_is_refused(signer: TokenSigner, signing_pem: str) -> None:
    claims = member_claims(aud=[MEMBER_AUDIENCE, STAFF_AUDIENCE], role="admin")
    with pytest.raises(AuthenticationFailed):
        signer.principal(eddsa_token(claims, signing_pem, signer.kid))


@pytest.mark.parametrize("role", [{}, {"role": None}, {"role": ["admin"]}])
def test_staff_token_without_a_role_is_refused(signer: TokenSigner, role: dict[str, Any]) -> None:
    with pytest.raises(AuthenticationFailed):
        signer.principal(signer.issue(uuid4(), STAFF_AUDIENCE, **role))


def test_token_whose_subject_is_not_an_id_is_refused(signer: TokenSigner) -> None:
    with pytest.raises(AuthenticationFailed):
        signer.principal(signer.issue(uuid4(), MEMBER_AUDIENCE, sub="admin"))


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "...", "Bearer x.y.z", "€.€.€"])
def test_garbage_string_is_refused(signer: TokenSigner, garbage: str) -> None:
    with pytest.raises(AuthenticationFailed):
        signer.principal(garbage)


# -- key rotation -----------------------------------------------------------------------------


def test_token_from_the_previous_key_verifies_while_that_key_is_listed(signing_pem: str) -> None:
    previous = TokenSigner(signing_pem, issuer=ISSUER, access_ttl=900)
    member_id = uuid4()
    token = previous.issue(member_id, MEMBER_AUDIENCE)
    current = TokenSigner(
        new_private_pem(), issuer=ISSUER, access_ttl=900,
        previous_public_pems=public_pem(signing_pem),
    )
    assert current.principal(token) == MemberPrincipal(member_id)


def test_token_from_the_previous_key_is_refused_once_that_key_is_dropped(
    signing_pem: str,
) -> None:
    token = TokenSigner(signing_pem, issuer=ISSUER, access_ttl=900).issue(uuid4(), MEMBER_AUDIENCE)
    current = TokenSigner(new_private_pem(), issuer=ISSUER, access_ttl=900)
    with pytest.raises(AuthenticationFailed):
        current.principal(token)


def test_jwks_lists_current_and_previous_keys_with_distinct_kids(signing_pem: str) -> None:
    previous = TokenSigner(signing_pem, issuer=ISSUER, access_ttl=900)
    current = TokenSigner(
        new_private_pem(), issuer=ISSUER, access_ttl=900,
        previous_public_pems=public_pem(signing_pem),
    )
    keys = current.jwks()["keys"]
    assert [key["kid"] for key in keys] == [current.kid, previous.kid]
    assert current.kid != previous.kid
    assert all(key["kty"] == "OKP" and key["crv"] == "Ed25519" for key in keys)
    assert all("d" not in key for key in keys)


def test_signing_key_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_signing_key(data_dir)
    key_file = data_dir / "jwt-signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_or_create_signing_key(data_dir) == first
    assert list(data_dir.iterdir()) == [key_file]
    signer = TokenSigner(first, issuer=ISSUER, access_ttl=900)
    member_id = uuid4()
    assert signer.principal(signer.issue(member_id, MEMBER_AUDIENCE)) == MemberPrincipal(member_id)


# -- passwords --------------------------------------------------------------------------------


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(time_cost=1, memory_kib=8, parallelism=1)


async def test_right_password_verifies(passwords: Passwords) -> None:
    stored = await passwords.hash("correct horse battery staple")
    assert await passwords.verify(stored, "correct horse battery staple") is True


async def test_wrong_password_does_not_verify(passwords: Passwords) -> None:
    stored = await passwords.hash("correct horse battery staple")
    assert await passwords.verify(stored, "correct horse battery stapler") is False


async def test_password_is_stored_as_salted_argon2id(passwords: Passwords) -> None:
    first, second = await passwords.hash("secret"), await passwords.hash("secret")
    assert first.startswith("$argon2id$")
    assert "secret" not in first
    assert first != second


@pytest.mark.parametrize("stored", [None, ""])
async def test_account_without_a_password_never_verifies(
    passwords: Passwords, stored: str | None
) -> None:
    assert await passwords.verify(stored, "") is False
    assert await passwords.verify(stored, "anything") is False


@pytest.mark.parametrize(
    "stored", ["garbage", "$argon2id$", "$argon2id$v=19$m=8,t=1,p=1$bm90$YmFk", "secret"]
)
async def test_garbage_stored_hash_never_verifies(passwords: Passwords, stored: str) -> None:
    assert await passwords.verify(stored, "secret") is False


def test_processes_creating_the_key_together_all_read_one_complete_key(tmp_path: Path) -> None:
    import concurrent.futures

    with concurrent.futures.ProcessPoolExecutor(max_workers=6) as pool:
        pems = list(pool.map(load_or_create_signing_key, [tmp_path] * 12))
    assert len(set(pems)) == 1
    assert pems[0].startswith("-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in tmp_path.iterdir()] == ["jwt-signing-key.pem"]


def test_remembered_credentials_are_dropped_at_their_deadline_and_beyond_the_size() -> None:
    from loyalty.access.principals import Remembered

    remembered: Remembered[str] = Remembered(2)
    remembered.put("a", 10.0, "A")
    remembered.put("b", 20.0, "B")
    assert remembered.get("a", 9.0) == "A"
    assert remembered.get("a", 10.0) is None  # deadline reached
    remembered.put("c", 30.0, "C")
    remembered.put("d", 30.0, "D")  # over the size: the least recently used ("b") goes
    assert remembered.get("b", 1.0) is None
    assert remembered.get("c", 1.0) == "C"
    remembered.forget(lambda value: value == "C")
    assert remembered.get("c", 1.0) is None


def test_a_remembered_token_stops_working_when_it_expires(tmp_path: Path) -> None:
    pem = load_or_create_signing_key(tmp_path)
    signer = TokenSigner(pem, issuer="loyalty", access_ttl=1)
    token = signer.issue(uuid4(), MEMBER_AUDIENCE)
    assert signer.principal(token) == signer.principal(token)  # second from memory
    time.sleep(2.1)
    with pytest.raises(AuthenticationFailed):
        signer.principal(token)


# -- sessions ---------------------------------------------------------------------------------


def test_a_token_names_the_session_it_was_issued_in(signer: TokenSigner) -> None:
    member_id, session_id = uuid4(), uuid4()
    token = signer.issue(member_id, MEMBER_AUDIENCE, sid=str(session_id))
    assert signer.principal(token) == MemberPrincipal(member_id, session_id)
    staff = signer.issue(member_id, STAFF_AUDIENCE, role="support", sid=str(session_id))
    assert signer.principal(staff) == StaffPrincipal(member_id, "support", session_id)


@pytest.mark.parametrize("sid", ["not-a-session", 42, ["x"], {"a": 1}])
def test_a_token_whose_session_is_not_an_id_is_refused(signer: TokenSigner, sid: Any) -> None:
    with pytest.raises(AuthenticationFailed):
        signer.principal(signer.issue(uuid4(), MEMBER_AUDIENCE, sid=sid))


def _standing(*, active: bool = True, role: str | None = None,
              ended: frozenset[UUID] = frozenset()) -> Standing:
    return Standing(active=active, role=role, ended=ended, read_at=0.0)


def test_a_token_of_a_standing_session_passes() -> None:
    session = uuid4()
    judge(MemberPrincipal(uuid4(), session), _standing(ended=frozenset({uuid4()})))
    judge(StaffPrincipal(uuid4(), "admin", session), _standing(role="admin"))


@pytest.mark.parametrize(
    ("principal", "standing", "reason"),
    [
        (MemberPrincipal(uuid4()), _standing(), "belongs to no session"),
        (MemberPrincipal(uuid4(), uuid4()), _standing(active=False), "can no longer sign in"),
        (StaffPrincipal(uuid4(), "admin", uuid4()), _standing(role="analyst"), "role"),
        (StaffPrincipal(uuid4(), "admin", uuid4()), _standing(active=False, role="admin"),
         "can no longer sign in"),
    ],
)
def test_a_token_whose_account_changed_is_refused(
    principal: MemberPrincipal | StaffPrincipal, standing: Standing, reason: str
) -> None:
    with pytest.raises(AuthenticationFailed, match=reason) as refused:
        judge(principal, standing)
    assert refused.value.code == "session_ended"


def test_a_token_of_an_ended_session_is_refused() -> None:
    session = uuid4()
    with pytest.raises(AuthenticationFailed, match="signed out"):
        judge(MemberPrincipal(uuid4(), session), _standing(ended=frozenset({session})))
