"""The results: a table on standard output, where the CPU went, and one JSON file per scenario
in bench/results/."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from bench.harness import RESULTS, ROOT, Result

_FILE_NAMES = {"earn": "earn", "earn latency at half load (p99)": "latency",
               "member read": "read", "retry storm": "storm", "expiry": "expiry",
               "launch": "launch", "dormancy": "dormancy",
               "console pages": "console", "webhooks: one worker's drain": "webhooks-drain",
               "webhooks: earn ratio on": "webhooks-earn", "batches": "batches"}


def report(results: list[Result]) -> None:
    stamp = dt.datetime.now().strftime("%Y-%m-%d")
    RESULTS.mkdir(exist_ok=True)
    rows = [("scenario", "value", "reference", "ratio", "unit", "check")]
    for r in results:
        rows.append((r.scenario, f"{r.value:,.2f}", f"{r.reference:,.2f} ({r.reference_name})",
                     f"{r.ratio:.2f}", r.unit,
                     {True: "ok", False: "FAILED", None: ""}[r.passed]))
        (RESULTS / f"{stamp}-{_FILE_NAMES[r.scenario]}.json").write_text(json.dumps({
            "scenario": r.scenario, "value": r.value, "reference": r.reference,
            "reference_name": r.reference_name, "ratio": r.ratio, "unit": r.unit,
            "passed": r.passed, "settings": r.settings, "details": r.details,
            "measured_at": dt.datetime.now(dt.UTC).isoformat(),
        }, indent=2) + "\n")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print("\nwhere the CPU went, in cores of the machine's "
          f"{os.cpu_count()}: busy = service (python) + postgres + redis + kernel + other "
          "(wrk, pgbench and its connections)")
    for r in results:
        for label, cpu in _cpu_details(r.details):
            print(f"  {r.scenario} / {label}: {cpu['machine_busy']:.2f} = {cpu['python']:.2f} "
                  f"+ {cpu['postgres']:.2f} + {cpu['redis-server']:.2f} + {cpu['kernel']:.2f} "
                  f"+ {cpu['other']:.2f}")
    print(f"\nresults written to {RESULTS.relative_to(ROOT)}/{stamp}-*.json")


def _cpu_details(details: dict[str, Any], label: str = "") -> list[tuple[str, dict[str, float]]]:
    found = []
    for key, value in details.items():
        if key == "cpu_cores":
            found.append((label or "run", value))
        elif key == "pgbench_cpu_cores" and value:
            found.append(("pgbench", value))
        elif isinstance(value, dict):
            found += _cpu_details(value, key)
    return found
