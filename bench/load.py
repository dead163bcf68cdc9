"""Load a realistic data set, set-based: members with a few purchases each, their ledger
(entries, lots, balances), some engagement, and one lot in ten already past its expiry.

Everything is generated inside PostgreSQL from ``generate_series`` (no rows travel from
Python), in member-number chunks so progress can be shown. The secondary indexes of the big
tables are dropped for the load and rebuilt after it, as one would for any bulk import.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import init_connection, migrate, recreate_database, with_database
from loyalty.points.rules import ensure_default_rules
from schemas.admin import Store, TerminalCreated

CHUNK = 100_000

# Indexes rebuilt after the load (name, definition); primary keys and unique constraints that
# the load itself relies on stay.
_SECONDARY = [
    ("members_name_key", "create index members_name_key on members "
                         "(name_key text_pattern_ops)"),
    ("members_status", "create index members_status on members (status, member_id)"),
    ("point_entries_history", "create index point_entries_history on point_entries "
                              "(member_id, created_at desc, entry_id desc)"),
    ("point_lots_open", "create index point_lots_open on point_lots "
                        "(member_id, expires_at, lot_id) where remaining > 0"),
    ("point_lots_due", "create index point_lots_due on point_lots (expires_at) "
                       "where remaining > 0"),
    ("purchases_id", "create index purchases_id on purchases (purchase_id)"),
    ("purchases_member_time", "create index purchases_member_time on purchases "
                              "(member_id, occurred_at)"),
    ("member_actions_caps", "create index member_actions_caps on member_actions "
                            "(member_id, action, business_date)"),
]

_MEMBERS = """
insert into members (member_id, member_number, email, name, name_key, birth_date,
                     status, joined_at, last_activity_at, password_hash)
select uuid_v7(), with_check_digit((10000000 + n)::text), 'member' || n || '@bench.example',
       '会員 ' || n, '会員' || n,
       date '1960-01-01' + (n::bigint * 7919 % 18000)::int,
       'active', $3::timestamptz - ((n::bigint * 104729 % 1000) || ' days')::interval,
       $3::timestamptz - ((n * 7 % 60) || ' days')::interval, null
  from generate_series($1::int, $2::int) as n
"""

_NUMBERS = """
insert into bench_members (n, member_id)
select (member_number::bigint / 10 - 10000000)::int, member_id from members
 where member_number::bigint / 10 - 10000000 between $1 and $2
"""

# Purchases: n % 5 of them per member (two on average), over the last year. Each earns
# floor(total / 100) points in one entry and one lot; one lot in ten expired yesterday.
_PURCHASES = """
with made as (
    select b.member_id, b.n, k,
           uuid_v7() as purchase_id, uuid_v7() as entry_id, uuid_v7() as lot_id,
           500 + (b.n * 31 + k * 997) % 20000 as total,
           $3::timestamptz - (((b.n + k * 37) % 360) || ' days')::interval as occurred_at
      from bench_members b, generate_series(1, b.n % 5) as k
     where b.n between $1 and $2
), purchases as (
    insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                           occurred_at, currency, total, lines, points_earned,
                           points_redeemed, rule_version, recorded_at)
    select member_id, purchase_id, $4, $5, 'B-' || n || '-' || k, occurred_at, 'JPY', total,
           jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (n % 50), 'category',
                                                'food', 'quantity', 1, 'unit_price', total)),
           total / 100, 0, 1, occurred_at
      from made
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source,
                               purchase_id, rule_version, created_at)
    select member_id, entry_id, 'earn', total / 100, 'Purchase at BENCH, receipt B-' || n,
           'purchase', purchase_id, 1, occurred_at
      from made where total >= 100
)
insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,
                        available_at, released_at, expires_at)
select member_id, lot_id, entry_id, total / 100, total / 100, occurred_at, occurred_at,
       occurred_at,
       case when (n + k) % 10 = 0 then $3::timestamptz - interval '1 day'
            else $3::timestamptz + (((n + k) % 300 + 30) || ' days')::interval end
  from made where total >= 100
"""

_BALANCES = """
insert into point_balances (member_id, available, lifetime_earned, purchase_count)
select b.member_id, coalesce(sum(l.remaining), 0), coalesce(sum(l.remaining), 0), b.n % 5
  from bench_members b
  left join point_lots l on l.member_id = b.member_id
 where b.n between $1 and $2
 group by b.member_id, b.n
"""

_ACTIONS = """
insert into member_actions (member_id, action_id, action, business_date, points, recorded_at)
select member_id, uuid_v7(), 'site_visit', ($3::timestamptz - interval '3 days')::date, 1,
       $3::timestamptz - interval '3 days'
  from bench_members where n between $1 and $2 and n % 3 = 0
"""


async def load(
    dsn: str, *, members: int, store_id: object, terminal_id: object, now: object,
    progress: Callable[[str], None],
) -> dict[str, float]:
    """Fill an empty, migrated database; returns the seconds each stage took."""
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    timings: dict[str, float] = {}
    try:
        await ensure_default_rules(conn)
        # The generated rows are consistent by construction: skip the foreign-key triggers for
        # this session when allowed (it needs a superuser, as the embedded server's is).
        try:
            await conn.execute("set session_replication_role = replica")
        except asyncpg.InsufficientPrivilegeError:
            progress("not a superuser: loading with foreign-key checks (slower)")
        await conn.execute("create table if not exists bench_members "
                           "(n int primary key, member_id uuid not null)")
        for name, _ in _SECONDARY:
            await conn.execute(f"drop index if exists {name}")
        for stage, sql in [("members", _MEMBERS), ("numbers", _NUMBERS),
                           ("purchases", _PURCHASES), ("balances", _BALANCES),
                           ("actions", _ACTIONS)]:
            started = time.perf_counter()
            for first in range(1, members + 1, CHUNK):
                last = min(first + CHUNK - 1, members)
                args: tuple[object, ...] = (first, last)
                if "$3" in sql:
                    args += (now,)
                if "$4" in sql:
                    args += (store_id, terminal_id)
                await conn.execute(sql, *args)
                progress(f"{stage}: {last:,} of {members:,} members")
            timings[stage] = time.perf_counter() - started
        started = time.perf_counter()
        for name, definition in _SECONDARY:
            progress(f"index {name}")
            await conn.execute(definition)
        timings["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        # What autovacuum does to freshly loaded tables within minutes in production (inserts
        # alone trigger it since PostgreSQL 13): statistics, and the visibility map that lets a
        # count read an index alone. Without it, the console's segment count at 1,000,000
        # members took 340 ms instead of 65.
        progress("vacuum analyze")
        await conn.execute("vacuum (analyze)")
        timings["vacuum_analyze"] = time.perf_counter() - started
    finally:
        await conn.close()
    return timings


@dataclass(frozen=True)
class DataSet:
    """A loaded bench database: where it is, when it was loaded as of, its till, and how long
    each step of the load took."""

    dsn: str
    now: dt.datetime
    store_id: UUID
    terminal_id: UUID
    terminal_key: str
    timings: dict[str, float]


async def _bench_till(dsn: str) -> tuple[Store, TerminalCreated]:
    """The bench store, and a new till in it (a till's key is shown only when it is made)."""
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        store = await ensure_store(conn, code="BENCH", name="Benchmark store")
        return store, await create_terminal(conn, store=store, name="bench till")
    finally:
        await conn.close()


async def fresh_data_set(server_url: str, database: str, *, members: int,
                         progress: Callable[[str], None]) -> DataSet:
    """``database`` made again on the server, migrated, given the bench store and till and
    loaded with ``members`` as ``make bench`` loads them."""
    dsn = await recreate_database(server_url, database)
    store, terminal = await _bench_till(dsn)
    now = dt.datetime.now(dt.UTC)
    progress(f"loading {members:,} members")
    timings = await load(dsn, members=members, store_id=store.store_id,
                         terminal_id=terminal.terminal.terminal_id, now=now, progress=progress)
    progress("loaded in " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return DataSet(dsn, now, store.store_id, terminal.terminal.terminal_id, terminal.api_key,
                   timings)


async def reused_data_set(server_url: str, database: str, *, members: int,
                          progress: Callable[[str], None]) -> DataSet | None:
    """``database`` as an earlier run with ``--reuse`` (or one that failed) left it, when it
    holds ``members`` loaded members: migrated to this checkout and given a new till (a till's
    key is shown only when it is made). None when there is no such data set."""
    dsn = with_database(server_url, database)
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        has_members = await conn.fetchval("select to_regclass('bench_members') is not null")
        loaded = await conn.fetchval("select count(*) from bench_members") if has_members else 0
    finally:
        await conn.close()
    if loaded != members:
        return None
    progress(f"reusing {database}: {members:,} members loaded by an earlier run")
    await migrate(dsn)
    store, terminal = await _bench_till(dsn)
    return DataSet(dsn, dt.datetime.now(dt.UTC), store.store_id,
                   terminal.terminal.terminal_id, terminal.api_key, {})
