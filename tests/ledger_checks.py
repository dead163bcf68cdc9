"""The ledger's invariants, checked against the rows themselves (docs/architecture.md, "Points")."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass
class LedgerRows:
    entries: list[dict[str, Any]]
    lots: list[dict[str, Any]]
    allocations: list[dict[str, Any]]
    balances: list[dict[str, Any]]


async def read_rows(conn: Any) -> LedgerRows:
    async def rows(sql: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql)]

    return LedgerRows(
        entries=await rows("select * from point_entries order by member_id, entry_id"),
        lots=await rows("select * from point_lots order by member_id, lot_id"),
        allocations=await rows(
            "select * from point_allocations order by member_id, entry_id, lot_id"),
        balances=await rows("select * from point_balances order by member_id"),
    )


async def ledger_rows(dsn: str | None) -> LedgerRows:
    assert dsn is not None
    conn = await asyncpg.connect(dsn)
    try:
        return await read_rows(conn)
    finally:
        await conn.close()


def check_invariants(rows: LedgerRows) -> None:
    """Every invariant of the ledger, for every member; raises AssertionError naming it."""
    entry_sum: dict[Any, int] = defaultdict(int)
    for entry in rows.entries:
        assert entry["amount"] != 0, entry
        entry_sum[entry["member_id"]] += entry["amount"]
    lot_sum: dict[Any, int] = defaultdict(int)
    pending_sum: dict[Any, int] = defaultdict(int)
    allocated: dict[Any, int] = defaultdict(int)
    by_entry: dict[Any, int] = defaultdict(int)
    for allocation in rows.allocations:
        allocated[(allocation["member_id"], allocation["lot_id"])] += allocation["points"]
        by_entry[(allocation["member_id"], allocation["entry_id"])] += allocation["points"]
    for lot in rows.lots:
        key = (lot["member_id"], lot["lot_id"])
        assert 0 <= lot["remaining"] <= lot["points"], lot
        assert lot["remaining"] == lot["points"] + allocated[key], (
            "lot remaining != points + allocations", lot, allocated[key])
        lot_sum[lot["member_id"]] += lot["remaining"]
        if lot["released_at"] is None:
            pending_sum[lot["member_id"]] += lot["remaining"]
        by_entry[(lot["member_id"], lot["entry_id"])] += lot["points"]
    for entry in rows.entries:
        key = (entry["member_id"], entry["entry_id"])
        assert by_entry[key] == entry["amount"], (
            "entry amount != its lots and allocations", entry, by_entry[key])
    for balance in rows.balances:
        member = balance["member_id"]
        total = balance["available"] + balance["pending"]
        assert balance["available"] >= 0, balance
        assert total == entry_sum[member], ("balance != sum of entries", balance,
                                            entry_sum[member])
        assert total == lot_sum[member], ("balance != sum of lots", balance, lot_sum[member])
        assert balance["pending"] == pending_sum[member], ("pending != unreleased lots",
                                                           balance, pending_sum[member])


def check_append_only(before: LedgerRows, after: LedgerRows) -> None:
    """No entry or allocation that existed before was changed or deleted."""
    after_entries = {(e["member_id"], e["entry_id"]): e for e in after.entries}
    for entry in before.entries:
        assert after_entries.get((entry["member_id"], entry["entry_id"])) == entry, entry
    after_allocations = {(a["member_id"], a["entry_id"], a["lot_id"]): a
                         for a in after.allocations}
    for allocation in before.allocations:
        key = (allocation["member_id"], allocation["entry_id"], allocation["lot_id"])
        assert after_allocations.get(key) == allocation, allocation
