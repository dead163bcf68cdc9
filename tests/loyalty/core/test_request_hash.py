"""What makes two requests under one Idempotency-Key the same request."""

from __future__ import annotations

import msgspec

from loyalty.core.idempotency import request_hash
from schemas.admin import StaffCreate
from schemas.points import Adjustment


def _adjustment(raw: bytes) -> Adjustment:
    return msgspec.json.decode(raw, type=Adjustment)


def test_white_space_and_key_order_do_not_make_another_request() -> None:
    first = _adjustment(b'{"points": 5, "reason": "Goodwill"}')
    again = _adjustment(b'{ "reason":"Goodwill",\n  "points":5 }')
    assert request_hash("POST", "/a", first) == request_hash("POST", "/a", again)


def test_method_path_and_body_each_make_another_request() -> None:
    body = _adjustment(b'{"points": 5, "reason": "Goodwill"}')
    same = request_hash("POST", "/v1/members/1/adjustments", body)
    assert request_hash("PUT", "/v1/members/1/adjustments", body) != same
    assert request_hash("POST", "/v1/members/2/adjustments", body) != same
    assert request_hash("POST", "/v1/members/1/adjustments",
                        _adjustment(b'{"points": 6, "reason": "Goodwill"}')) != same
    assert request_hash("DELETE", "/v1/me/events/1/rsvp", None) != request_hash(
        "DELETE", "/v1/me/events/2/rsvp", None)


def test_a_password_is_never_part_of_the_stored_hash() -> None:
    # A SHA-256 over a known body and a password could be guessed offline; passwords are kept
    # as argon2id. So a retry that changes only the password is the same request.
    first = StaffCreate(email="a@staff.example", password="correct horse battery",
                        role="analyst")
    other = StaffCreate(email="a@staff.example", password="another long password",
                        role="analyst")
    assert request_hash("POST", "/v1/staff", first) == request_hash("POST", "/v1/staff", other)
    assert request_hash("POST", "/v1/staff", first) != request_hash(
        "POST", "/v1/staff", StaffCreate(email="b@staff.example",
                                         password="correct horse battery", role="analyst"))
