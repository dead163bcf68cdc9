"""Importing past purchases from CSV (docs/importing.md): each row's member resolved by external
id (following merges as the till does), its store checked or created, then inserted set-based
in member order, in batches, earning no points. A purchase is found again by (store, receipt
id), so a second run adds nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.core.normalize import normalize_text
from loyalty.members.status_history import rebuild_status_history
from loyalty.ops.import_files import (
    CLOCK_SKEW,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DORMANCY_DAYS,
    DEFAULT_TIMEZONE,
    ExternalId,
    ImportSummary,
    Progress,
    forget_snapshots,
    import_session,
    prepare_report,
    record_rejections,
    stage_file,
    write_report,
)
from loyalty.points.rules import ensure_default_rules
from schemas.base import (
    Code,
    Instant,
)
from schemas.points import Money, ReceiptId

# Merges are followed to the surviving member, as the till does, this many hops at most.
MERGE_HOPS = 5

class PurchaseRow(msgspec.Struct, forbid_unknown_fields=True):
    """One row of a purchases file; fields without a default are required columns."""

    member_external_id: ExternalId
    store_code: Code
    receipt_id: ReceiptId
    occurred_at: Instant
    total: Money
    returned_amount: Money = 0


# -- purchases --------------------------------------------------------------------------------

_PURCHASE_STAGING = """
create temporary table import_purchases (
    seq                 int not null,
    line                int not null,
    member_external_id  text not null,
    store_code          text not null,
    receipt_id          text not null,
    occurred_at         timestamptz not null,
    total               bigint not null,
    returned_amount     bigint not null
);
create temporary table import_member_ids (
    external_id  text primary key,
    member_id    uuid not null,
    status       text not null
);
create temporary table import_purchases_checked (
    seq              int not null,
    line             int not null,
    member_id        uuid,
    store_id         uuid,
    store_code       text not null,
    receipt_id       text not null,
    occurred_at      timestamptz not null,
    total            bigint not null,
    returned_amount  bigint not null,
    reason           text
);
create temporary table import_touched (
    member_id  uuid primary key,
    earliest   timestamptz not null,
    latest     timestamptz not null,
    purchases  bigint not null
);
"""
_PURCHASE_COLUMNS = ("seq", "line", "member_external_id", "store_code", "receipt_id",
                     "occurred_at", "total", "returned_amount")

# The member each external id names: followed through merges to the survivor, as the till does
# with a merged-away member's number.
_RESOLVE_MEMBERS = """
insert into import_member_ids (external_id, member_id, status)
with recursive walk as (
    select m.external_id, m.member_id, m.status, m.merged_into, 0 as hops
      from members m
     where m.external_id in (select member_external_id from import_purchases)
    union all
    select w.external_id, m.member_id, m.status, m.merged_into, w.hops + 1
      from walk w join members m on m.member_id = w.merged_into
     where w.status = 'merged' and w.hops < $1
)
select distinct on (external_id) external_id, member_id, status
  from walk
 order by external_id, hops desc
"""

# A receipt repeated within the file is rejected after its first line (whether or not that one
# goes in, so a second run decides the same); then unknown or erased members, then unknown
# stores unless they are to be created. Receipts already recorded are found per batch.
# Rows are numbered for writing in member order: each member's purchases then fall in one
# batch (their balance and last activity are updated once, not once per batch), and the
# purchases' member-keyed indexes are written in order.
_CHECK_PURCHASES = """
insert into import_purchases_checked
select row_number() over (order by r.member_id, s.occurred_at, s.line), s.line, r.member_id,
       st.store_id, s.store_code, s.receipt_id, s.occurred_at, s.total, s.returned_amount,
       case
           when s.first_line < s.line
               then format('receipt %s of store %s is also on line %s',
                           s.receipt_id, s.store_code, s.first_line)
           when r.member_id is null
               then format('no member with external id %s', s.member_external_id)
           when r.status = 'erased'
               then format('member %s is erased', s.member_external_id)
           when r.status = 'merged'
               then format('member %s is merged more than %s times over', s.member_external_id,
                           $2::int)
           when st.store_id is null and not $1
               then format('no store %s', s.store_code)
       end
  from (select i.*,
               min(i.line) over (partition by i.store_code, i.receipt_id) as first_line
          from import_purchases i) s
  left join import_member_ids r on r.external_id = s.member_external_id
  left join stores st on st.code = s.store_code
"""

_CREATE_STORES = """
with created as (
    insert into stores (code, name)
    select distinct store_code, store_code from import_purchases_checked
     where reason is null and store_id is null
     order by store_code
    on conflict (code) do nothing
    returning 1
)
select count(*) from created
"""
_FILL_STORES = """
update import_purchases_checked c set store_id = s.store_id
  from stores s
 where c.reason is null and c.store_id is null and s.code = c.store_code
"""

# Purchases name a terminal: each store gets one "history import" terminal, made here once.
# Its key is never issued (a random hash, and revoked from the start), so it can never
# authenticate; it says where the row came from.
_IMPORT_TERMINALS = """
insert into terminals (store_id, name, key_prefix, key_hash, revoked_at)
select s.store_id, 'history import', 'import:' || s.store_id,
       sha256(convert_to(gen_random_uuid()::text || clock_timestamp()::text, 'UTF8')), $1
  from (select distinct store_id from import_purchases_checked where reason is null) s
on conflict (key_prefix) do nothing
"""

# One batch: receipts already recorded at their store are present (looked up one by one in
# the receipt index: a hash of every purchase would grow with the table); the others go in,
# earning nothing, and the members they touch are gathered for the next two statements. A
# receipt a till records meanwhile is refused by the index, and counts as present.
_INSERT_PURCHASES = """
with batch as (
    select c.*, t.terminal_id, found.present is not null as present
      from import_purchases_checked c
      join terminals t on t.key_prefix = 'import:' || c.store_id
      left join lateral (
          select true as present from purchases p
           where p.store_id = c.store_id and p.receipt_id = c.receipt_id
           limit 1) found on true
     where c.seq > $1 and c.seq <= $2 and c.reason is null
), inserted as (
    insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                           occurred_at, currency, total, lines, points_earned, points_redeemed,
                           rule_version, returned_amount, recorded_at)
    select member_id, uuid_v7(), store_id, terminal_id, receipt_id, occurred_at, $3, total,
           '[]', 0, 0, $4, returned_amount, $5
      from batch
     where not present
     order by seq
    on conflict do nothing
    returning member_id, occurred_at
), touched as (
    insert into import_touched (member_id, earliest, latest, purchases)
    select member_id, min(occurred_at), max(occurred_at), count(*) from inserted
     group by member_id
    returning purchases
)
select (select count(*) from batch) as candidates,
       (select coalesce(sum(purchases), 0) from touched) as inserted
"""

# The purchase count follows the purchases (no first-purchase bonus for a member with a
# history), under a new balance version so a till's purchase read before it reads again.
# Rows are locked in member order, as the other batch writers lock them.
_COUNT_PURCHASES = """
with locked as materialized (
    select b.member_id from point_balances b
     where b.member_id in (select member_id from import_touched)
     order by b.member_id
       for no key update
)
update point_balances b
   set purchase_count = b.purchase_count + t.purchases, version = b.version + 1, updated_at = $1
  from import_touched t
 where b.member_id = t.member_id and b.member_id in (select member_id from locked)
"""

# Last activity moves forward only. The members' status history is then rebuilt from their
# earliest imported purchase on (``rebuild_status_history``), so the trigger that would make a
# dormant member active as of now is told to leave them (loyalty.status_recorded).
_MOVE_ACTIVITY = """
with locked as materialized (
    select m.member_id from members m join import_touched t using (member_id)
     where m.last_activity_at < t.latest
     order by m.member_id
       for no key update of m
)
update members m set last_activity_at = t.latest
  from import_touched t
 where m.member_id = t.member_id and m.last_activity_at < t.latest
   and m.member_id in (select member_id from locked)
"""


def _purchase_record(now: dt.datetime) -> Callable[[PurchaseRow], tuple[Any, ...]]:
    def record(row: PurchaseRow) -> tuple[Any, ...]:
        external_id = normalize_text(row.member_external_id)
        if not external_id:
            raise InvalidInput("required", field="member_external_id")
        if row.occurred_at > now + CLOCK_SKEW:
            raise InvalidInput("is in the future", field="occurred_at")
        if row.returned_amount > row.total:
            raise InvalidInput("is more than the total", field="returned_amount")
        return (external_id, row.store_code, row.receipt_id, row.occurred_at, row.total,
                row.returned_amount)

    return record


async def import_purchases(
    conn: Connection, source: Path, *, report: Path | None = None, currency: str = "JPY",
    create_stores: bool = False, now: dt.datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE, progress: TextIO | None = None,
    tz: ZoneInfo = DEFAULT_TIMEZONE, dormancy_days: int = DEFAULT_DORMANCY_DAYS,
) -> ImportSummary:
    """Add the purchases of a CSV file (docs/importing.md) not recorded before, earning no
    points; rebuild the status history of the members they touch as it happened (business
    days in ``tz``, dormant after ``dormancy_days``); report the rest. ``conn`` needs the jsonb
    codec (``init_connection``)."""
    now = now or dt.datetime.now(dt.UTC)
    report = prepare_report(source, report)
    async with import_session(conn, _PURCHASE_STAGING):
        staged = await stage_file(conn, source, row_type=PurchaseRow, table="import_purchases",
                              table_columns=_PURCHASE_COLUMNS, to_record=_purchase_record(now),
                              batch_size=batch_size, progress=progress)
        checking = Progress("checking", staged.staged, progress)
        async with conn.transaction():
            await ensure_default_rules(conn)
            # History is recorded under the rules in force when it was loaded: it earned
            # nothing under them, and a version of its own would become the one in force.
            rule_version = await conn.fetchval("select max(version) from earning_rule_versions")
            await conn.execute(_RESOLVE_MEMBERS, MERGE_HOPS)
            await conn.execute(_CHECK_PURCHASES, create_stores, MERGE_HOPS)
            stores_created = 0
            if create_stores:
                stores_created = await conn.fetchval(_CREATE_STORES)
                await conn.execute(_FILL_STORES)
            await conn.execute(_IMPORT_TERMINALS, now)
            await conn.execute("create index on import_purchases_checked (seq)")
            await conn.execute("analyze import_purchases_checked")
            rejected = await record_rejections(conn, "import_purchases_checked")
        checking.advance(staged.staged)
        checking.finish()
        inserted = candidates = 0
        bar = Progress("writing", staged.staged, progress)
        for start in range(0, staged.staged, batch_size):
            batch = await _write_purchases(conn, start, start + batch_size, currency,
                                           rule_version, now, tz, dormancy_days)
            candidates += batch[0]
            inserted += batch[1]
            bar.advance(min(batch_size, staged.staged - start))
        bar.finish()
        await write_report(conn, source, report, staged.header)
    return ImportSummary(kind="purchases", read=staged.read, inserted=inserted,
                         present=candidates - inserted, rejected=staged.rejected + rejected,
                         report=report, stores_created=stores_created)


async def _write_purchases(conn: Connection, start: int, end: int, currency: str,
                           rule_version: int, now: dt.datetime, tz: ZoneInfo,
                           dormancy_days: int) -> tuple[int, int]:
    """One batch in one transaction. It is safe to run again, so a deadlock with another
    batch writer (the dormancy job updates members too) costs a retry, not the import."""
    for attempt in range(5):
        try:
            async with conn.transaction():
                row = await conn.fetchrow(_INSERT_PURCHASES, start, end, currency,
                                          rule_version, now)
                assert row is not None
                await conn.execute(_COUNT_PURCHASES, now)
                await conn.execute(
                    "select set_config('loyalty.status_recorded', 'on', true)")
                await conn.execute(_MOVE_ACTIVITY)
                since = {r["member_id"]: r["earliest"] for r in await conn.fetch(
                    "select member_id, earliest from import_touched order by member_id")}
                await rebuild_status_history(conn, since, now=now, tz=tz, days=dormancy_days,
                                             reason="imported purchase")
                await forget_snapshots(conn, min(since.values(), default=None), tz)
                await conn.execute("truncate import_touched")
            return int(row["candidates"]), int(row["inserted"])
        except asyncpg.DeadlockDetectedError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")
