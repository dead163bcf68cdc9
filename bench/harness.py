"""What every part of the benchmark harness shares: where it keeps things, the database it
loads, how it says what it is doing, how a timed run starts, and the one result each scenario
returns."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA_DIR = ROOT / ".loyalty" / "bench"
WORK = DATA_DIR / "work"
RESULTS = BENCH / "results"
# The database the data set is loaded into (and its copies, DATABASE_fn and DATABASE_sql):
# dropped and made again by each run, so two runs on one server need a name each.
DATABASE = os.environ.get("LOYALTY_BENCH_DATABASE", "loyalty_bench")
if not re.fullmatch(r"[a-z_][a-z0-9_]{0,50}", DATABASE):
    sys.exit(f"bench: LOYALTY_BENCH_DATABASE={DATABASE!r} is not a plain database name"
             " (lower-case letters, digits and _, at most 51)")
STARTED = time.monotonic()


async def checkpoint(conn: asyncpg.Connection) -> None:
    """Start a timed run with no dirty pages left by what came before: the writes after a
    checkpoint log whole pages, and one falling inside a single run made it the slowest
    whatever it measured. Needs a superuser or pg_checkpoint; without, runs start where they
    fall."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("checkpoint")


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


@dataclass
class Result:
    scenario: str
    value: float
    reference: float
    unit: str
    reference_name: str
    settings: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None

    @property
    def ratio(self) -> float:
        return self.value / self.reference if self.reference else float("nan")
