"""Import of a brand's history from CSV files: its members, then their past purchases.

A brand moving onto the platform brings years of customers and receipts; its KPIs, tiers and
dormancy must be right on the first day, and a file of a million rows must load in minutes.

- The file is streamed: each row is validated by type (``MemberRow``, ``PurchaseRow``, built
  from the same constrained types as the API's bodies) and normalised by the API's own
  functions, then the rows that pass are COPYed into a temporary staging table in batches.
  Memory stays bounded whatever the file's size, and nothing is written to the programme's
  tables before the whole file has been read.
- Everything that compares rows with each other or with the database (duplicates within the
  file, external ids already imported, e-mails and phones of other members, unknown members
  and stores, receipts already recorded) is set-based SQL over the staging table. Rows are
  then written in batches (members in file order, purchases in member order), one transaction
  each, so a till's purchase never waits long for a member an import is touching.
- Idempotent by external ids: a member is found again by ``external_id``, a purchase by
  (store, receipt id), the same key a till's purchase has. A run that stopped half-way (killed,
  disconnected) is finished by running it again.
- Imported purchases earn no points: they are history, not new business. They count for
  everything that reads purchases (RFM, tier measures, KPIs) and move the member's last
  activity forward, so dormancy is right too.

Rejected rows go to a report (line, reason, the row as it was), written at the end from the
reasons kept in the database and a second pass over the file, both in line order.
See docs/importing.md for the columns and the decisions. What every import does with its file
(one import at a time, staging, progress, the report) is ``import_files``; the two kinds are
``import_members`` and ``import_purchases``; this module is ``loyalty import``'s entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TextIO
from zoneinfo import ZoneInfo

import asyncpg

from loyalty.core.db import analyze, init_connection, migrate
from loyalty.core.errors import InvalidInput
from loyalty.ops.import_files import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DORMANCY_DAYS,
    DEFAULT_TIMEZONE,
    ImportSummary,
    check_header,
    prepare_report,
)
from loyalty.ops.import_members import MemberRow, import_members
from loyalty.ops.import_purchases import PurchaseRow, import_purchases

ImportKind = Literal["members", "purchases"]
IMPORT_KINDS: tuple[ImportKind, ...] = ("members", "purchases")


# What each kind of import writes in bulk: analyzed at its end, whatever its size (a first
# import grows these tables from nothing).
IMPORTED_TABLES: dict[ImportKind, tuple[str, ...]] = {
    "members": ("members", "point_balances", "member_status_changes"),
    "purchases": ("purchases", "members", "point_balances", "member_status_changes", "stores"),
}


def check_import_file(kind: ImportKind, source: Path) -> list[str]:
    """Whether ``source`` can be imported as ``kind`` at all: its header, as the import reads
    it, or InvalidInput saying what to fix. The rows are checked by the import itself."""
    return check_header(source, MemberRow if kind == "members" else PurchaseRow)


async def run_import(
    dsn: str, kind: ImportKind, source: Path, *, report: Path | None,
    region: str, currency: str, create_stores: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE, show_progress: bool = True,
    progress: TextIO | None = None, tz: ZoneInfo = DEFAULT_TIMEZONE,
    dormancy_days: int = DEFAULT_DORMANCY_DAYS,
) -> ImportSummary:
    """What ``loyalty import`` (and the console's import page) runs: migrate, then import on a
    connection of its own. Progress goes to ``progress`` if given (the console passes an
    ``ImportProgress``), else to stderr when ``show_progress``."""
    if batch_size < 1:
        raise InvalidInput("--batch-size must be at least 1", field="batch_size")
    report = prepare_report(source, report)
    if progress is None and show_progress:
        progress = sys.stderr
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        # The staged rows are sorted (for duplicates, for the order of writing) and kept in
        # temporary tables: in memory rather than on disk, on this connection of its own.
        await conn.execute("set work_mem = '256MB'; set temp_buffers = '256MB'")
        if kind == "members":
            summary = await import_members(conn, source, report=report, region=region,
                                           batch_size=batch_size, progress=progress, tz=tz,
                                           dormancy_days=dormancy_days)
        else:
            summary = await import_purchases(conn, source, report=report, currency=currency,
                                             create_stores=create_stores, batch_size=batch_size,
                                             progress=progress, tz=tz,
                                             dormancy_days=dormancy_days)
        # The planner's statistics of the tables an import has grown (many times over, on a
        # first import) are stale until autovacuum comes round: refresh them now, before the
        # first analytics query plans against an empty table's figures.
        await analyze(conn, *IMPORTED_TABLES[kind])
        return summary
    finally:
        await conn.close()
