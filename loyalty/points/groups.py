"""Group commit of purchases (docs/decisions/0022-group-commit.md): purchases waiting in one
process while its writers are busy are written together, by one statement and one commit.

A purchase goes through ``loyalty.points.ledger.post`` as always (read, build) and then, if its
plan is groupable (no coupons, no tier reached: the common purchase), waits here for a writer
instead of writing alone. A writer takes the waiting purchases, at most one per member, and
writes them with one statement that keeps each row's own checks: its idempotency key (taken
by another request: the stored response answers it) and its balance version (moved since the
read: nothing of that row is written, and it goes again under the row's lock). Whatever the
statement cannot decide row by row makes it fail as a whole, and then every purchase of the
group is written alone, exactly as without groups; the keys make that safe whether or not
the failed group committed.

Nobody waits for a group to fill: a purchase that finds a writer free is written at once (a
group of one), so an idle service adds no latency; under load, purchases gather while the
writers are busy and the groups grow by themselves, up to ``most``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import Histogram

from loyalty.core.db import Connection
from loyalty.core.idempotency import Idempotency
from loyalty.core.sql import named
from loyalty.points.ledger import Grouped, Planned, posting_values
from schemas.base import json_encoder

GROUP_SIZES = Histogram(
    "loyalty_purchase_group_size", "Purchases written by one statement (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64))

# Each row's values (column of the statement's input, array type), named as the posting's own
# values and the purchase's name them (the member's id is the posting's ``member``).
_ROW = (
    ("member_id", "uuid"), ("version", "int8"), ("now", "timestamptz"),
    ("available_change", "int8"), ("pending_change", "int8"), ("earned", "int8"),
    ("redeemed", "int8"), ("expired", "int8"), ("purchases", "int8"),
    ("birthday_bonus_year", "int4"), ("key_principal_id", "uuid"), ("key", "text"),
    ("key_request_hash", "bytea"), ("response_status", "int4"), ("response_body", "bytea"),
    ("purchase_id", "uuid"), ("store_id", "uuid"), ("terminal_id", "uuid"),
    ("receipt_id", "text"), ("occurred_at", "timestamptz"), ("currency", "text"),
    # Encoded here: a list of lists would reach PostgreSQL as a two-dimensional array.
    ("total", "int8"), ("lines", "text"), ("points_earned", "int8"),
    ("points_redeemed", "int8"), ("rule_version", "int4"),
)
# The posting's lists, each element tagged with its row (the names are posting_values').
_LISTS = {
    "entry": (("entry_ids", "uuid"), ("entry_kinds", "text"), ("entry_amounts", "int8"),
              ("entry_reasons", "text"), ("entry_sources", "text"),
              ("entry_purchase_ids", "uuid"), ("entry_return_ids", "uuid"),
              ("entry_action_ids", "uuid"), ("entry_staff_ids", "uuid"),
              ("entry_related_member_ids", "uuid"), ("entry_rule_versions", "int4"),
              ("entry_traces", "jsonb")),
    "lot": (("lot_ids", "uuid"), ("lot_entry_ids", "uuid"), ("lot_points", "int8"),
            ("lot_earned_at", "timestamptz"), ("lot_available_at", "timestamptz"),
            ("lot_released", "bool"), ("lot_expires_at", "timestamptz"),
            ("lot_origin_lot_ids", "uuid")),
    "changed": (("changed_lot_ids", "uuid"), ("changed_deltas", "int8"),
                ("changed_releases", "bool")),
    "drawn": (("drawn_entry_ids", "uuid"), ("drawn_lot_ids", "uuid"), ("drawn_points", "int8")),
    "outbox": (("outbox_types", "text"), ("outbox_data", "jsonb")),
}


def _unnest(names: tuple[tuple[str, str], ...], tag: str) -> str:
    arrays = ", ".join(f":{name}::{type_}[]" for name, type_ in names)
    return f"unnest(:{tag}_rows::int8[], {arrays})"


_INPUT = ", ".join(f":row_{column}::{type_}[]" for column, type_ in _ROW)
_INPUT_NAMES = ", ".join(column for column, _ in _ROW)

# One statement for the whole group. The order of its locks is the single posting's, so that
# the two never wait on each other in a circle: every key first (in key order), then every
# balance row (in member order). A row whose balance moved before the statement began claims
# no key and writes nothing (stale); a row whose key is taken writes nothing (taken); a row
# whose key it claimed but whose balance moved while it waited for the lock cannot be undone
# alone, so the statement fails as a whole (LY409) and every row is written alone.
_GROUP_SQL = f"""
with input as materialized (
    select * from unnest({_INPUT}) with ordinality as i({_INPUT_NAMES}, n)
), fresh as materialized (
    select i.n from input i
      join point_balances b on b.member_id = i.member_id and b.version = i.version
), idem as (
    insert into idempotency_keys (principal_id, idempotency_key, request_hash, response_status,
                                  response_body, created_at)
    select i.key_principal_id, i.key, i.key_request_hash, i.response_status, i.response_body,
           i.now
      from input i join fresh f on f.n = i.n
     order by i.key_principal_id, i.key
    on conflict do nothing
    returning principal_id, idempotency_key
), keyed as materialized (
    select i.* from input i
      join idem k on k.principal_id = i.key_principal_id and k.idempotency_key = i.key
), locked as materialized (
    select b.member_id, b.version from point_balances b
     where b.member_id in (select member_id from keyed)
     order by b.member_id
       for update
), bal as (
    update point_balances b
       set version = b.version + 1,
           available = b.available + k.available_change,
           pending = b.pending + k.pending_change,
           lifetime_earned = b.lifetime_earned + k.earned,
           lifetime_redeemed = b.lifetime_redeemed + k.redeemed,
           lifetime_expired = b.lifetime_expired + k.expired,
           purchase_count = b.purchase_count + k.purchases,
           birthday_bonus_year = coalesce(k.birthday_bonus_year, b.birthday_bonus_year),
           updated_at = k.now
      from keyed k join locked l on l.member_id = k.member_id and l.version = k.version
     where b.member_id = k.member_id
    returning k.n, k.member_id, k.now
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, purchase_id,
                               return_id, action_id, staff_id, related_member_id, rule_version,
                               trace, created_at)
    select b.member_id, e.entry_id, e.kind, e.amount, e.reason, e.source, e.purchase_id,
           e.return_id, e.action_id, e.staff_id, e.related_member_id, e.rule_version, e.trace,
           b.now
      from {_unnest(_LISTS["entry"], "entry")}
           as e(n, entry_id, kind, amount, reason, source, purchase_id, return_id, action_id,
                staff_id, related_member_id, rule_version, trace)
      join bal b on b.n = e.n
), new_lots as (
    insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,
                            available_at, released_at, expires_at, origin_lot_id)
    select b.member_id, l.lot_id, l.entry_id, l.points, l.points, l.earned_at, l.available_at,
           case when l.released then b.now end, l.expires_at, l.origin_lot_id
      from {_unnest(_LISTS["lot"], "lot")}
           as l(n, lot_id, entry_id, points, earned_at, available_at, released, expires_at,
                origin_lot_id)
      join bal b on b.n = l.n
), changed_lots as (
    update point_lots p
       set remaining = p.remaining + c.delta,
           released_at = case when c.release then b.now else p.released_at end
      from {_unnest(_LISTS["changed"], "changed")} as c(n, lot_id, delta, release)
      join bal b on b.n = c.n
     where p.member_id = b.member_id and p.lot_id = c.lot_id
), allocations as (
    insert into point_allocations (member_id, entry_id, lot_id, points)
    select b.member_id, a.entry_id, a.lot_id, a.points
      from {_unnest(_LISTS["drawn"], "drawn")} as a(n, entry_id, lot_id, points)
      join bal b on b.n = a.n
), purchase as (
    insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                           occurred_at, currency, total, lines, points_earned, points_redeemed,
                           rule_version, recorded_at)
    select b.member_id, i.purchase_id, i.store_id, i.terminal_id, i.receipt_id, i.occurred_at,
           i.currency, i.total, i.lines::jsonb, i.points_earned, i.points_redeemed, i.rule_version,
           b.now
      from input i join bal b on b.n = i.n
), activity as (
    update members m set last_activity_at = greatest(m.last_activity_at, i.occurred_at)
      from input i join bal b on b.n = i.n
     where m.member_id = b.member_id
), outbox_events as (
    -- Each row's events in the order of writing, the rows in the group's order.
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select o.type, b.now, :api_version, b.member_id, o.data
      from (select * from {_unnest(_LISTS["outbox"], "outbox")} with ordinality
                   as e(n, type, data, seq)) o
      join bal b on b.n = o.n
     order by o.seq
)
select i.n, k.n is not null as keyed, b.n is not null as written, f.n is not null as fresh,
       case when k.n is not null and b.n is null
            then ledger_conflict('a balance in the group changed since it was read') end
           as conflict
  from input i
  left join fresh f on f.n = i.n
  left join keyed k on k.n = i.n
  left join bal b on b.n = i.n
 order by i.n
"""  # noqa: S608 - column lists and casts from the constant tables above; values are parameters
_GROUP = named(_GROUP_SQL)


def group_values(plans: list[tuple[Planned, Idempotency]]) -> dict[str, Any]:
    """The group statement's parameters for ``plans``: one element per row in the row arrays,
    and the posting's lists flattened, each element tagged with its row (from 1)."""
    values: dict[str, Any] = {f"row_{column}": [] for column, _ in _ROW}
    for tag, names in _LISTS.items():
        values[f"{tag}_rows"] = []
        values.update({name: [] for name, _ in names})
    api_version = None
    for row, (plan, idempotency) in enumerate(plans, start=1):
        assert plan.posting is not None
        own = posting_values(plan.posting, idempotency, plan.status, plan.body)
        both = {**plan.values, **own, "member_id": own["member"],
                "lines": json_encoder.encode(plan.values["lines"]).decode()}
        api_version = own["api_version"]
        for column, _ in _ROW:
            values[f"row_{column}"].append(both[column])
        for tag, names in _LISTS.items():
            values[f"{tag}_rows"].extend([row] * len(own[names[0][0]]))
            for name, _ in names:
                values[name].extend(own[name])
    values["api_version"] = api_version
    return values


@dataclass
class _Waiting:
    plan: Planned
    idempotency: Idempotency
    member_id: Any
    # Set to a Grouped when written, or to _LEAD when this request is to write the next group.
    done: asyncio.Future[Grouped | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


# A waiting request's signal to write the next group itself, on its own connection.
_LEAD = None


class PurchaseGroups:
    """One process's group commit: at most ``writers`` groups in flight, each of at most
    ``most`` purchases. ``write`` is ``post``'s ``group``.

    A writer's place passes from request to request: the one that finds a place free writes
    at once; when its group is written, the oldest request still waiting takes the place and
    writes the next group with what has gathered meanwhile. No task of its own, so nothing to
    start or stop with the app."""

    def __init__(self, *, writers: int, most: int) -> None:
        if writers < 1 or most < 1:
            raise ValueError("group commit needs at least one writer and one purchase a group")
        self.writers = writers
        self.most = most
        self._busy = 0
        self._waiting: deque[_Waiting] = deque()

    async def write(self, conn: Connection, plan: Planned, idempotency: Idempotency) -> Grouped:
        assert plan.posting is not None
        waiting = _Waiting(plan, idempotency, plan.posting.ledger.member_id)
        if self._busy < self.writers:
            self._busy += 1
            await self._lead(conn, waiting)
        else:
            self._waiting.append(waiting)
        while True:
            try:
                outcome = await waiting.done
            except asyncio.CancelledError:
                self._abandon(waiting)
                raise
            if outcome is not _LEAD:
                return outcome
            waiting.done = asyncio.get_running_loop().create_future()
            await self._lead(conn, waiting)

    def _abandon(self, waiting: _Waiting) -> None:
        """A request cancelled while it waited: out of the queue, and if it had just been
        given a writer's place, the place goes on to the next."""
        if waiting in self._waiting:
            self._waiting.remove(waiting)
        elif (waiting.done.done() and not waiting.done.cancelled()
              and waiting.done.result() is _LEAD):
            self._pass_on()

    def _pass_on(self) -> None:
        while self._waiting:
            following = self._waiting.popleft()
            if not following.done.done():
                following.done.set_result(_LEAD)
                return
        self._busy -= 1

    def _take(self, first: _Waiting) -> list[_Waiting]:
        """``first`` and the oldest waiting purchases, at most ``most`` and one per member (two
        of one member in one group would both have read the same version); the rest keep
        their places."""
        taken = [first]
        members = {first.member_id}
        kept: deque[_Waiting] = deque()
        while self._waiting and len(taken) < self.most:
            waiting = self._waiting.popleft()
            if waiting.member_id in members:
                kept.append(waiting)
                continue
            members.add(waiting.member_id)
            taken.append(waiting)
        kept.extend(self._waiting)
        self._waiting = kept
        return taken

    async def _lead(self, conn: Connection, first: _Waiting) -> None:
        """Write the next group on ``conn`` (``first``'s request holds a writer's place), then
        pass the place on."""
        group = self._take(first)
        outcomes = [Grouped.ALONE] * len(group)
        try:
            written = await self._write(conn, group)
            if len(written) == len(group):
                outcomes = written
        finally:
            # Cancelled or failed, every request of the group is written alone; and whatever
            # happened, the place goes on, or every later purchase would wait for ever.
            try:
                for waiting, outcome in zip(group, outcomes, strict=True):
                    if not waiting.done.done():
                        waiting.done.set_result(outcome)
            finally:
                self._pass_on()

    async def _write(self, conn: Connection, group: list[_Waiting]) -> list[Grouped]:
        GROUP_SIZES.observe(len(group))
        values = group_values([(w.plan, w.idempotency) for w in group])
        # A balance that moved between the statement's start and its lock fails the group
        # (LY409); written again at once, the moved row is found stale from the start.
        for attempt in (1, 2):
            try:
                rows = await conn.fetch(_GROUP.text, *_GROUP.args(values))
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) == "LY409" and attempt == 1:
                    continue
                # A receipt recorded twice, a deadlock, a timeout: each purchase goes alone,
                # where its own statement decides it.
                return [Grouped.ALONE] * len(group)
            except (asyncpg.InterfaceError, OSError):
                # The connection is lost, the group written or not: alone, each key decides.
                return [Grouped.ALONE] * len(group)
            return [_outcome(row) for row in rows]
        return [Grouped.ALONE] * len(group)


def _outcome(row: asyncpg.Record) -> Grouped:
    if row["written"]:
        return Grouped.WRITTEN
    return Grouped.TAKEN if row["fresh"] else Grouped.STALE
