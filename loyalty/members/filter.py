"""Which members a piece of work applies to, as SQL: a segment's compiled definition, an explicit
list, a campaign's treated group. Values always travel as parameters.

A filter is a boolean expression over ``members m`` with ``$?`` where each parameter goes; the
statement that embeds it numbers them after its own with ``render(first)``, so one filter can
sit in a count, a page of members, a batch of grants or a campaign's assignment unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

SLOT = "$?"


@dataclass(frozen=True)
class MemberFilter:
    """``sql`` is a boolean expression over ``members m``; ``params`` fill its ``$?`` slots in
    order. Never built from values: only from constant text and slots."""

    sql: str
    params: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.sql.count(SLOT) != len(self.params):
            raise ValueError(f"{self.sql.count(SLOT)} slots for {len(self.params)} parameters")

    def render(self, first: int) -> str:
        """The expression with its slots numbered ``$first``, ``$first + 1``..."""
        parts = self.sql.split(SLOT)
        out = [parts[0]]
        for index, part in enumerate(parts[1:]):
            out.append(f"${first + index}")
            out.append(part)
        return "".join(out)

    def __and__(self, other: MemberFilter) -> MemberFilter:
        return MemberFilter(f"({self.sql}) and ({other.sql})", self.params + other.params)

    @classmethod
    def members(cls, member_ids: Iterable[UUID]) -> MemberFilter:
        """Exactly these members."""
        return cls("m.member_id = any($?::uuid[])", (list(member_ids),))

    @classmethod
    def combine(cls, op: str, filters: Sequence[MemberFilter]) -> MemberFilter:
        """``and`` / ``or`` of several filters (an empty ``and`` is true, an empty ``or``
        false)."""
        if op not in ("and", "or"):
            raise ValueError(op)
        if not filters:
            return cls("true" if op == "and" else "false")
        sql = f" {op} ".join(f"({f.sql})" for f in filters)
        return cls(sql, tuple(p for f in filters for p in f.params))


# What a segment can match at all: erased and merged records are nobody's audience.
SEGMENTABLE = MemberFilter("m.status in ('active', 'dormant', 'suspended')")
# What a campaign or a grant acts on: suspended members cannot earn or spend.
REACHABLE = MemberFilter("m.status in ('active', 'dormant')")


# -- consent, as the statements that honour it read it (docs/privacy.md, "Consent") -----------


def analysis_allowed(member: str) -> str:
    """SQL: true unless the member ``member`` (an expression for a member id) has withdrawn
    ``data_analysis``. Never asked counts as allowed: analysis is a purpose every member is told
    of at joining, and withdrawing it is their objection (migration 0033, docs/privacy.md)."""
    return f"member_analysis_allowed({member})"


# Who may be scored or targeted on a score: RFM, the at-risk flag, the churn model.
ANALYSABLE = MemberFilter(analysis_allowed("m.member_id"))

# The same rule for a statement over the whole population (the RFM refresh): the members whose
# latest data_analysis choice is a withdrawal, to join against; one pass over the choices instead
# of a probe per member (1,000,000 members, half with a choice: 1.1 s against 6.5 s).
ANALYSIS_WITHDRAWN = """(select l.member_id
   from (select distinct on (c.member_id) c.member_id, c.granted from member_consents c
          where c.purpose = 'data_analysis'
          order by c.member_id, c.recorded_at desc, c.consent_id desc) l
  where not l.granted)"""

# The member's latest choice for one purpose, NULL when never asked (member_consents_current).
_LATEST_CHOICE = """(select c.granted from member_consents c
          where c.member_id = {member} and c.purpose = '{purpose}'
          order by c.recorded_at desc, c.consent_id desc limit 1)"""


def may_message(member: str) -> str:
    """SQL: the jsonb ``{"marketing_email": bool, "push": bool}`` of the member ``member``'s
    latest choice per messaging channel, never asked being no, as campaigns' ``messaged`` reads
    it. Messaging events carry it (schemas/outbox.py ``MayMessage``)."""
    email = _LATEST_CHOICE.format(member=member, purpose="marketing_email")
    push = _LATEST_CHOICE.format(member=member, purpose="push")
    return (f"jsonb_build_object('marketing_email', coalesce({email}, false),"
            f" 'push', coalesce({push}, false))")
