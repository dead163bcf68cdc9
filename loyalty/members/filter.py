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
