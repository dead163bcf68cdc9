"""The read model of the member's points summary (``GET /v1/me/points``): the encoded answer
kept in ``point_summaries`` with what it was computed from, served by one statement while it
still holds, computed from the whole ledger and stored again when it does not
(docs/decisions/0019-points-read-model.md).

Nothing invalidates a summary: a row is used only while the member's balance row is at the
version it was computed from (every writer of a member's points bumps it), the newest earning
rules are the version it was computed with, this process computes on the same basis, and now is
within the period it is true for. A member merged into another reads the survivor's row, checked
against the survivor's balance: the summary is the survivor's, as ``read_member_ledger`` makes
it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from functools import cache
from uuid import UUID

import msgspec

from loyalty.core.db import Connection
from loyalty.core.programme import Programme
from loyalty.points.history import EXPIRING_WINDOW, ComputedSummary, computed_summary
from loyalty.points.ledger import MERGE_HOPS
from loyalty.points.rules import RuleBook
from schemas.base import json_encoder
from schemas.points import PointsSummary

# Raised when how a summary is computed changes without its shape changing (a fix to the
# settling, say): rows computed the old way then stop matching, as after a change of shape.
_COMPUTATION = 1

# $1 the member, $2 now, $3 the basis. One row per member (none: no such member): its status
# and merge pointer, and the stored body if it still holds. Every table by the member's id, so
# one shard (docs/scaling.md); the rules version as the ledger read takes it.
_STORED = """
select m.status, m.merged_into, s.body
  from members m
  left join point_balances b on b.member_id = $1
  left join point_summaries s
         on s.member_id = $1 and s.balance_version = b.version
        and s.rules_version = (select coalesce(max(version), 0) from earning_rule_versions)
        and s.basis = $3 and s.valid_from <= $2 and (s.valid_until is null or $2 < s.valid_until)
 where m.member_id = $1
"""

# A fill never replaces a summary computed from a newer balance (or newer rules): two reads
# racing a write may store in either order. Nor does it store one for a member erased since
# the ledger was read (the erasure deleted theirs).
_STORE = """
insert into point_summaries (member_id, balance_version, rules_version, basis, valid_from,
                             valid_until, body)
select $1, $2, $3, $4, $5, $6, $7
  from members where member_id = $1 and status <> 'erased'
on conflict (member_id) do update
   set balance_version = excluded.balance_version, rules_version = excluded.rules_version,
       basis = excluded.basis, valid_from = excluded.valid_from,
       valid_until = excluded.valid_until, body = excluded.body
 where (point_summaries.balance_version, point_summaries.rules_version)
       <= (excluded.balance_version, excluded.rules_version)
"""


@cache
def summary_basis(currency: str) -> str:
    """What a stored summary depends on besides the ledger and the rules: the shape it is
    encoded in, the programme's currency, the expiring window and ``_COMPUTATION``. A process
    on another basis (a release that changed one, another currency) neither uses nor is
    served the other's rows; it computes and stores its own."""
    schema = msgspec.json.encode(msgspec.json.schema(PointsSummary))
    digest = hashlib.sha256(schema).hexdigest()[:16]
    return f"{_COMPUTATION}:{currency}:{int(EXPIRING_WINDOW.total_seconds())}:{digest}"


async def member_points(
    conn: Connection, member_id: UUID, *, rulebook: RuleBook, programme: Programme,
    now: dt.datetime,
) -> bytes:
    """The member's ``PointsSummary`` as of ``now``, encoded as JSON: the stored one if it
    still holds (one statement), else computed from the whole ledger and stored (one more
    statement, outside any transaction the caller is not in)."""
    basis = summary_basis(programme.currency)
    target = member_id
    for _ in range(MERGE_HOPS + 1):
        row = await conn.fetchrow(_STORED, target, now, basis)
        if row is None:
            break
        if row["body"] is not None and row["status"] not in ("merged", "erased"):
            body: bytes = row["body"]
            return body
        if row["status"] != "merged" or row["merged_into"] is None:
            break
        target = row["merged_into"]
    return await fill_summary(conn, member_id, rulebook=rulebook, programme=programme, now=now)


async def fill_summary(
    conn: Connection, member_id: UUID, *, rulebook: RuleBook, programme: Programme,
    now: dt.datetime,
) -> bytes:
    """Compute the summary from the whole ledger (the survivor's, for a merged member), store
    it under the member whose ledger it is, and return it encoded."""
    computed = await computed_summary(conn, member_id, rulebook=rulebook, programme=programme,
                                      now=now)
    return await store_summary(conn, computed, programme=programme, now=now)


async def store_summary(
    conn: Connection, computed: ComputedSummary, *, programme: Programme, now: dt.datetime,
) -> bytes:
    """Store a summary computed as of ``now`` unless one computed from a newer balance or newer
    rules is there already; return it encoded."""
    body = json_encoder.encode(computed.summary)
    await conn.execute(_STORE, computed.summary.member_id, computed.balance_version,
                       computed.rules_version, summary_basis(programme.currency), now,
                       computed.valid_until, body)
    return body
