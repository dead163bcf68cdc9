"""How the console writes values for staff: phone numbers in the form staff write them."""

from __future__ import annotations

from console.i18n import phone


def test_phone_numbers_are_written_as_staff_write_them() -> None:
    assert phone("+819012345678") == "090-1234-5678"
    assert phone("+81312345678") == "03-1234-5678"
    assert phone("+12025550142") == "+1 202-555-0142"
    assert phone(None) == ""
    assert phone("not a number") == "not a number"
