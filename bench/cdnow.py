"""A real public purchase log, for judging churn predictions (``loyalty analytics evaluate``)
on something the model was not made from: the CDNOW master data set, every purchase of the
23,570 customers who first bought at the online music shop CDNOW in the first quarter of 1997,
until the end of June 1998 (18 months; Fader and Hardie's standard test of buy-till-you-die
models). It comes inside the ``lifetimes`` package's wheel (MIT licence), which this script
downloads with pip (without installing it or anything it needs) unless ``--source`` names the
file; nothing of it is kept in the repository.

    python -m bench.cdnow --out /tmp/cdnow
    loyalty import members /tmp/cdnow/members.csv
    loyalty import purchases /tmp/cdnow/purchases.csv --create-stores
    loyalty analytics evaluate --calibration-end 2025-10-01 --horizon 273

Each line of the file is a customer id, a day, a number of CDs and the amount in dollars. Here a
customer is a member who joined on their first purchase's day, each line is one purchase at
noon in the programme's time zone at one store (``CDNOW``), and amounts are in cents. Days are
moved 28 years later (1997 becomes 2025), where the calendar repeats itself, weekdays included:
the programme takes no moment before 2000.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import subprocess
import sys
import tempfile
import zipfile
from decimal import Decimal
from pathlib import Path

WHEEL = "lifetimes==0.11.3"
DATA_FILE = "lifetimes/datasets/CDNOW_master.txt"
MEMBER_HEADER = ["external_id", "email", "name", "joined_at"]
PURCHASE_HEADER = ["member_external_id", "store_code", "receipt_id", "occurred_at", "total"]
SHIFT_YEARS = 28
NOON = dt.time(12, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))


def fetch(into: Path) -> Path:
    """The data file out of the lifetimes wheel, downloaded with pip into ``into``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--dest", str(into), WHEEL], check=True)
    [wheel] = into.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        target = into / "CDNOW_master.txt"
        target.write_bytes(archive.read(DATA_FILE))
    return target


def _later(day: dt.date) -> dt.date:
    return day.replace(year=day.year + SHIFT_YEARS)


def convert(source: Path, out: Path) -> tuple[int, int]:
    """members.csv and purchases.csv for ``loyalty import``; how many of each."""
    purchases: dict[str, list[tuple[dt.date, int]]] = {}
    for line in source.read_text().splitlines()[1:]:  # a header line first
        if not line.strip():
            continue
        customer, date_text, _count, dollars = line.split()
        purchases.setdefault(customer, []).append(
            (_later(dt.datetime.strptime(date_text, "%Y%m%d").date()), int(Decimal(dollars) * 100)))
    out.mkdir(parents=True, exist_ok=True)
    with (out / "members.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(MEMBER_HEADER)
        for customer, bought in purchases.items():
            first = min(day for day, _ in bought)
            writer.writerow([f"CD{customer}", f"cd{customer}@example.com",
                             f"CDNOW {customer}", dt.datetime.combine(first, NOON).isoformat()])
    count = 0
    with (out / "purchases.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(PURCHASE_HEADER)
        for customer, bought in purchases.items():
            for n, (day, cents) in enumerate(bought):
                writer.writerow([f"CD{customer}", "CDNOW", f"CD{customer}-{n}",
                                 dt.datetime.combine(day, NOON).isoformat(), cents])
                count += 1
    return len(purchases), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", type=Path,
                        help="CDNOW_master.txt, if you have it (otherwise downloaded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        source = args.source or fetch(Path(scratch))
        members, purchases = convert(source, args.out)
    print(f"{members:,} members and {purchases:,} purchases written to {args.out}")


if __name__ == "__main__":
    main()
