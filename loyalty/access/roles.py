"""Which staff role may do what: docs/security.md's table, in code, each role set once, for
the API and the console alike.

The API's guards take these tuples (``staff_with(*MARKETING_EDITORS)``), and the console's
navigation and pages the same ones; a handler that may show a member
to a role that must not see their contact details leaves those fields out of its answer
(``without_contact``). Each set is named for what it lets a role do, and says which column of
the table it is; tests/api/test_authorization.py calls every route as every role to hold them to it.
"""

from __future__ import annotations

import msgspec

from schemas.members import Member

# "contact details": e-mail, phone, postal code, birth date; customer service reaches and
# identifies people.
CONTACT_READERS = ("admin", "support")
# "profile without contact": name, number, status, tier, attributes.
PROFILE_READERS = ("admin", "support", "marketer")
# "profile without contact ... (and corrects, suspends, merges)": support fixes a member's record.
MEMBER_EDITORS = ("admin", "support")
# "profile without contact", its first line: member ids and numbers at all (analysts work on
# aggregates only, so a segment preview gives them the count without the sample).
IDENTIFIER_READERS = ("admin", "support", "marketer")
# "one member's ledger and history": points, entries, lots, tier history.
LEDGER_READERS = ("admin", "support")
# "contact details" and "one member's ledger and history" at once: a member's data export, for
# a request received by customer service (GDPR art. 15 and 20).
MEMBER_EXPORTERS = ("admin", "support")
# "one member's ledger and history ... (and adjusts)": manual points adjustments.
POINTS_ADJUSTERS = ("admin", "support")
# "aggregates", and "configuration" read by analysts: KPIs, cohorts, RFM, campaign results;
# coupon templates, segment definitions, campaigns, events.
MARKETING_READERS = ("admin", "marketer", "analyst")
# "configuration" a marketer writes: earning rules, tiers, coupons, segments, campaigns, events,
# grants.
MARKETING_EDITORS = ("admin", "marketer")
# "configuration" read by analysts: jobs and their runs (marketers have no use for them).
JOB_READERS = ("admin", "analyst")
# "configuration: all": staff accounts, stores, terminals; starting a job.
ADMINS = ("admin",)
# "configuration": the stores list, which every staff role reads.
STORE_READERS = ("admin", "marketer", "analyst", "support")


def without_contact(member: Member) -> Member:
    """``member`` as a role that may not see contact details gets it: those fields absent."""
    return msgspec.structs.replace(member, email=msgspec.UNSET, phone=msgspec.UNSET,
                                   postal_code=msgspec.UNSET, birth_date=msgspec.UNSET)


def as_seen_by(role: str, member: Member) -> Member:
    return member if role in CONTACT_READERS else without_contact(member)
