"""RFM on a purchase history from a known process (``bench/make_purchase_history.py``, seeded):
every named segment of the grid has members, as it should on any programme of some size."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bench.make_purchase_history import END, simulate, write_csv
from loyalty.core.db import Connection, init_connection
from loyalty.insights.rfm import RFM_SEGMENTS, refresh_rfm, rfm_distribution
from loyalty.ops.import_members import import_members
from loyalty.ops.import_purchases import import_purchases


@pytest.fixture
async def conn(fresh_database: str) -> AsyncIterator[Connection]:
    connection = await asyncpg.connect(fresh_database)
    await init_connection(connection)
    yield connection
    await connection.close()


async def test_every_named_segment_has_members_on_generated_history(
    conn: Connection, tmp_path: Path
) -> None:
    members_csv, purchases_csv = write_csv(simulate(1_500, 17), tmp_path, 17)
    await import_members(conn, members_csv, now=END)
    await import_purchases(conn, purchases_csv, create_stores=True, now=END)

    await refresh_rfm(conn, now=END, window_days=365)
    distribution = await rfm_distribution(conn)

    counts = {segment.name: segment.members for segment in distribution.segments}
    assert [name for name in RFM_SEGMENTS if counts[name] == 0] == [], counts
    # And every score of each measure is taken by someone.
    for measure in ("recency_score", "frequency_score", "monetary_score"):
        taken = {getattr(cell, measure) for cell in distribution.cells if cell.members}
        assert taken == {1, 2, 3, 4, 5}, (measure, taken)
