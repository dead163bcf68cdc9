"""The schema as Citus would distribute it, rehearsed with PostgreSQL's own hash partitioning,
and the partitions each statement touches (docs/scaling.md, "Rehearsal: hash-partitioned by
member_id").

``partition_by_member`` turns every member-owned table of a migrated database (its primary key
begins with ``member_id``) into a table hash-partitioned by ``member_id``, ``PARTITIONS`` ways,
with its indexes, keys, foreign keys and triggers as before: what a distributed, co-located
table is to Citus, a partition is here, and the same member's rows land in the partition of the
same remainder in every table. A unique index without ``member_id`` cannot exist on such a
table, as Citus cannot enforce one; it becomes a plain index and is reported.

``Observed`` runs a connection's statements as the domain code sends them, each first under
``EXPLAIN (ANALYZE, FORMAT JSON)`` in a transaction rolled back, and records the partitions each
one touched: the scans its plan executed (pruning at plan time leaves the others out, at
execution time they are "Subplans Removed" or never executed) and the rows it wrote in each
partition (``pg_stat_xact_user_tables``), which covers inserts, whose routing no plan shows,
and the writes of triggers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from loyalty.core.db import Connection

PARTITIONS = 4
# Row-level statements of the rehearsal's own (the statistics it reads) are not the domain's.
_EXPLAINABLE = ("select", "with", "insert", "update", "delete", "values")


@dataclass(frozen=True)
class Partitioned:
    """What ``partition_by_member`` did: the tables it partitioned, and the unique indexes it
    had to make plain (each ``table.index``)."""

    tables: frozenset[str]
    not_unique: frozenset[str]


_MEMBER_OWNED = """
select c.relname from pg_constraint k join pg_class c on c.oid = k.conrelid
 where k.contype = 'p' and c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
   and (select a.attname from pg_attribute a
         where a.attrelid = c.oid and a.attnum = k.conkey[1]) = 'member_id'
 order by c.relname
"""

# Keys and foreign keys of the member-owned tables, and foreign keys of other tables that
# reference one: dropped with the tables they belong to, made again on the partitioned ones.
_CONSTRAINTS = """
select k.conname, k.contype::text as contype, k.conrelid::regclass::text as table_name,
       pg_get_constraintdef(k.oid) as definition,
       'member_id' = any(array(select a.attname from pg_attribute a
                                where a.attrelid = k.conrelid and a.attnum = any(k.conkey)))
           as has_member
  from pg_constraint k
 where (k.contype in ('p', 'u', 'f') and k.conrelid = any($1::regclass[]))
    or (k.contype = 'f' and k.confrelid = any($1::regclass[])
        and not k.conrelid = any($1::regclass[]))
 order by k.contype desc, k.conname
"""

_INDEXES = """
select i.indexrelid::regclass::text as name, i.indrelid::regclass::text as table_name,
       i.indisunique, pg_get_indexdef(i.indexrelid) as definition,
       'member_id' = any(array(select a.attname from pg_attribute a
                                where a.attrelid = i.indrelid and a.attnum = any(i.indkey)))
           as has_member
  from pg_index i
 where i.indrelid = any($1::regclass[])
   and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid)
 order by 1
"""

_TRIGGERS = """
select pg_get_triggerdef(t.oid) as definition from pg_trigger t
 where t.tgrelid = any($1::regclass[]) and not t.tgisinternal
 order by t.tgname
"""


async def partition_by_member(conn: Connection) -> Partitioned:
    """Hash-partition every member-owned table by ``member_id``, in one transaction."""
    async with conn.transaction():
        tables = [row["relname"] for row in await conn.fetch(_MEMBER_OWNED)]
        constraints = await conn.fetch(_CONSTRAINTS, tables)
        indexes = await conn.fetch(_INDEXES, tables)
        triggers = await conn.fetch(_TRIGGERS, tables)
        for table in tables:
            await conn.execute(f'alter table "{table}" rename to "{table}__heap"')
            await conn.execute(
                f'create table "{table}" (like "{table}__heap" including defaults'
                " including constraints including generated including identity"
                " including storage including comments) partition by hash (member_id)")
            for remainder in range(PARTITIONS):
                await conn.execute(
                    f'create table "{table}_p{remainder}" partition of "{table}"'
                    f" for values with (modulus {PARTITIONS}, remainder {remainder})")
            await conn.execute(
                f'insert into "{table}" overriding system value select * from "{table}__heap"')  # noqa: S608 - table names from the catalogue, never from input
        for table in tables:
            await conn.execute(f'drop table "{table}__heap" cascade')
        not_unique: set[str] = set()
        for row in constraints:
            if row["contype"] == "u" and not row["has_member"]:
                not_unique.add(f"{row['table_name']}.{row['conname']}")
                columns = row["definition"].removeprefix("UNIQUE ")
                await conn.execute(
                    f'create index "{row["conname"]}" on "{row["table_name"]}" {columns}')
                continue
            await conn.execute(f'alter table "{row["table_name"]}"'
                               f' add constraint "{row["conname"]}" {row["definition"]}')
        for row in indexes:
            definition = row["definition"]
            if row["indisunique"] and not row["has_member"]:
                not_unique.add(f"{row['table_name']}.{row['name']}")
                definition = definition.replace("CREATE UNIQUE INDEX", "CREATE INDEX", 1)
            await conn.execute(definition)
        for row in triggers:
            await conn.execute(row["definition"])
    return Partitioned(frozenset(tables), frozenset(not_unique))


# -- what a statement touches ----------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """A scan of a member-owned table in a statement's plan: the partitions it executed, and
    what it looked rows up by (its index and filter conditions)."""

    table: str
    partitions: frozenset[int]
    condition: str


@dataclass
class Touch:
    """One statement as the domain sent it, and what it touched."""

    sql: str
    scans: list[Scan] = field(default_factory=list)
    # member-owned table -> partitions it inserted, updated or deleted rows in
    writes: dict[str, set[int]] = field(default_factory=dict)
    # other tables it (or a trigger it fired) wrote rows in
    other_writes: set[str] = field(default_factory=set)


def partition_of(relation: str, tables: frozenset[str]) -> tuple[str, int] | None:
    """(table, remainder) for a partition's name, None for any other relation."""
    table, _, remainder = relation.rpartition("_p")
    if table in tables and remainder.isdigit():
        return table, int(remainder)
    return None


_CONDITIONS = ("Index Cond", "Recheck Cond", "Filter", "TID Cond")


def _condition(node: Mapping[str, Any]) -> str:
    parts = [node[key] for key in _CONDITIONS if key in node]
    parts += [child[key] for child in node.get("Plans", ()) for key in _CONDITIONS
              if child.get("Node Type") == "Bitmap Index Scan" and key in child]
    return " and ".join(parts)


def executed_scans(plan: Mapping[str, Any], tables: frozenset[str]) -> list[Scan]:
    """The scans of ``tables`` in a plan (EXPLAIN ANALYZE, JSON), each with the partitions it
    executed at least once: partitions pruned when planning are not in the plan, those pruned
    when it starts are "Subplans Removed", those pruned at each rescan are never executed.
    The partitions of one table under one Append are one scan."""
    scans: list[Scan] = []

    def walk(node: Mapping[str, Any]) -> None:
        children = node.get("Plans", ())
        if node.get("Node Type") in ("Append", "Merge Append"):
            found = [(partition_of(child.get("Relation Name", ""), tables), child)
                     for child in children]
            leaves = [(hit, child) for hit, child in found if hit is not None]
            if leaves and len(leaves) == len(children):
                executed = frozenset(hit[1] for hit, child in leaves
                                     if child.get("Actual Loops"))
                scans.append(Scan(leaves[0][0][0], executed, _condition(leaves[0][1])))
                return
        hit = None
        if node.get("Node Type") != "ModifyTable":
            hit = partition_of(node.get("Relation Name", ""), tables)
        if hit is not None:
            executed = frozenset({hit[1]}) if node.get("Actual Loops") else frozenset()
            scans.append(Scan(hit[0], executed, _condition(node)))
        for child in children:
            walk(child)

    walk(plan)
    return scans


_WRITTEN = """
select relname, n_tup_ins + n_tup_upd + n_tup_del as written from pg_stat_xact_user_tables
"""

# Planned as a single member's statement is planned at scale, whatever the few rows of the
# rehearsal's tables: through indexes, and joins that look rows up (nested loops), which is
# where pruning at execution time happens. A statement with no member_id to prune by scans
# every partition either way.
_AS_AT_SCALE = ("enable_seqscan", "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin")


class Observed:
    """A connection whose every statement is explained (run once under EXPLAIN ANALYZE, in a
    transaction rolled back) before it runs as sent; ``touches`` lists what each touched. The
    domain functions take it for their connection."""

    def __init__(self, conn: Connection, partitioned: Partitioned) -> None:
        self._conn = conn
        self._tables = partitioned.tables
        self.touches: list[Touch] = []

    async def _written(self) -> dict[str, int]:
        return {row["relname"]: row["written"] for row in await self._conn.fetch(_WRITTEN)}

    async def _observe(self, sql: str, args: tuple[Any, ...]) -> None:
        if not sql.lstrip().lower().startswith(_EXPLAINABLE):
            return
        touch = Touch(sql)
        transaction = self._conn.transaction()
        await transaction.start()
        try:
            for setting in _AS_AT_SCALE:
                await self._conn.execute(f"set local {setting} = off")
            before = await self._written()
            explained = await self._conn.fetchval(
                "explain (analyze, format json, costs off, timing off, summary off) " + sql,
                *args)
            after = await self._written()
        finally:
            await transaction.rollback()
        [plan] = json.loads(explained)
        touch.scans = executed_scans(plan["Plan"], self._tables)
        for relation, count in after.items():
            if count <= before.get(relation, 0):
                continue
            found = partition_of(relation, self._tables)
            if found is not None:
                touch.writes.setdefault(found[0], set()).add(found[1])
            elif relation not in self._tables:
                touch.other_writes.add(relation)
        self.touches.append(touch)

    async def fetch(self, sql: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        await self._observe(sql, args)
        return await self._conn.fetch(sql, *args, **kwargs)

    async def fetchrow(self, sql: str, *args: Any, **kwargs: Any) -> asyncpg.Record | None:
        await self._observe(sql, args)
        row: asyncpg.Record | None = await self._conn.fetchrow(sql, *args, **kwargs)
        return row

    async def fetchval(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        await self._observe(sql, args)
        return await self._conn.fetchval(sql, *args, **kwargs)

    async def execute(self, sql: str, *args: Any, **kwargs: Any) -> str:
        await self._observe(sql, args)
        return await self._conn.execute(sql, *args, **kwargs)

    def transaction(self, **kwargs: Any) -> Any:
        return self._conn.transaction(**kwargs)

    def is_in_transaction(self) -> bool:
        return self._conn.is_in_transaction()

    def __getattr__(self, name: str) -> Any:
        # Anything else that sends SQL (executemany, prepare, cursor, copy...) would pass
        # unobserved: a domain function on these paths that starts using one must be seen here.
        raise AttributeError(f"Observed does not pass {name} through: observe it first")
