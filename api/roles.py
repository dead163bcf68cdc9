"""Which staff role reads which kind of member data: docs/security.md's table, in code.

Guards take these tuples; a handler that may show a member to a role that must not see their
contact details leaves those fields out of its answer (``without_contact``).
"""

from __future__ import annotations

import msgspec

from schemas.members import Member

# E-mail, phone, postal code, birth date: customer service reaches and identifies people.
CONTACT_READERS = ("admin", "support")
# A member's profile without contact details: name, number, status, tier, attributes.
PROFILE_READERS = ("admin", "support", "marketer")
# One member's points, history and tier history.
LEDGER_READERS = ("admin", "support")
# Member ids and numbers at all (analysts work on aggregates only).
IDENTIFIER_READERS = ("admin", "support", "marketer")


def without_contact(member: Member) -> Member:
    """``member`` as a role that may not see contact details gets it: those fields absent."""
    return msgspec.structs.replace(member, email=msgspec.UNSET, phone=msgspec.UNSET,
                                   postal_code=msgspec.UNSET, birth_date=msgspec.UNSET)


def as_seen_by(role: str, member: Member) -> Member:
    return member if role in CONTACT_READERS else without_contact(member)
