"""A purchase history from a known process, for judging churn predictions
(``loyalty analytics evaluate``): CSV files for ``loyalty import``, the same for the same seed.

    python -m bench.make_purchase_history --members 20000 --seed 17 --out /tmp/history
    loyalty import members /tmp/history/members.csv
    loyalty import purchases /tmp/history/purchases.csv --create-stores
    loyalty analytics evaluate --calibration-end 2026-05-01 --horizon 90

The process (defaults below): members join evenly over the first year (their first purchase
is the day they join, at a random hour), then buy as BG/NBD assumes: while alive, a Poisson
process of their own rate (rates Gamma-distributed across members, so habits range from
weekly to yearly), and after each repeat purchase they leave for good with a probability of
their own (Beta-distributed). Spend per purchase is Gamma-Gamma: Gamma around a mean of the
member's own, those means Gamma-distributed. The history runs for two years ending at
``--end``.

This is the model's own process, so the model has the advantage of being right about it; the
test it sets is still a fair one for "does the member buy in the next 90 days": the truth is
random (a live member may not buy in 90 days, a member who left never does), and what decides
it, the member's rate and whether they have left, must be read from the history, which is
what the fixed N-day rule reads too (days since the last purchase) without weighing it by the
member's own rhythm.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loyalty.insights.churn_model import BgNbd, GammaGamma, Summaries

JST = dt.timezone(dt.timedelta(hours=9))
END = dt.datetime(2026, 11, 1, 0, 0, tzinfo=JST)
DAYS = 730
# Rates: mean r/α = 0.02 a day (about 7 purchases a year), widely spread; dropout after a
# repeat purchase: mean a/(a+b) = 0.2. Spend: mean p γ / (q - 1) = 3,000 yen.
PROCESS = BgNbd(r=0.6, alpha=30.0, a=1.0, b=4.0)
SPEND = GammaGamma(p=6.0, q=4.0, gamma=1_500.0)
STORES = [f"S{n:02d}" for n in range(1, 6)]
MEMBER_HEADER = ["external_id", "email", "name", "joined_at"]
PURCHASE_HEADER = ["member_external_id", "store_code", "receipt_id", "occurred_at", "total"]


@dataclass
class Member:
    external_id: str
    joined_at: dt.datetime
    purchases: list[tuple[dt.datetime, int]] = field(default_factory=list)


def simulate(members: int, seed: int, *, end: dt.datetime = END, process: BgNbd = PROCESS,
             spend: GammaGamma = SPEND) -> list[Member]:
    rng = np.random.default_rng(seed)
    start = end - dt.timedelta(days=DAYS)
    joins = rng.uniform(0, 365, members)
    rates = rng.gamma(process.r, 1 / process.alpha, members)
    drops = rng.beta(process.a, process.b, members)
    mean_rates = rng.gamma(spend.q, 1 / spend.gamma, members)  # ν: spend ~ Gamma(p, rate ν)
    history = []
    for i in range(members):
        days = [float(joins[i])]
        while True:
            days.append(days[-1] + rng.exponential(1 / rates[i]))
            if days[-1] >= DAYS:
                days.pop()
                break
            if rng.random() < drops[i]:
                break
        totals = np.maximum(np.round(rng.gamma(spend.p, 1 / mean_rates[i], len(days))), 1)
        moments = [start + dt.timedelta(days=day) for day in days]
        history.append(Member(f"H{i + 1:07d}", moments[0],
                              [(moment, int(total)) for moment, total in
                               zip(moments, totals, strict=True)]))
    return history


def summarise(history: list[Member], as_of: dt.datetime, until: dt.datetime) -> Summaries:
    """The members' summaries as ``loyalty.insights.churn_model`` reads them from the
    database (occasions less than a day apart are one), for members who bought by ``as_of``;
    ``bought_later``: a purchase in (as_of, until]."""
    rows = []
    for member in history:
        seen = [moment for moment, _ in member.purchases if moment <= as_of]
        if not seen:
            continue
        spent = sum(total for moment, total in member.purchases if moment <= as_of)
        gaps = [(b - a).total_seconds() / 86400 for a, b in itertools.pairwise(seen)]
        counted = [gap for gap in gaps if gap >= 1]
        rows.append((1 + len(counted), (seen[-1] - seen[0]).total_seconds() / 86400,
                     (as_of - seen[0]).total_seconds() / 86400, spent / (1 + len(counted)),
                     float(np.median(counted)) if counted else np.nan,
                     float(int((as_of - seen[-1]).total_seconds() // 86400)),
                     any(as_of < moment <= until for moment, _ in member.purchases)))
    columns = [np.array([row[i] for row in rows], dtype=np.float64) for i in range(6)]
    return Summaries([], columns[0], columns[1], columns[2], columns[3], columns[4], columns[5],
                     np.array([row[6] for row in rows], dtype=np.bool_),
                     np.ones(len(rows), dtype=np.bool_))  # a generated member allows analysis


def write_csv(history: list[Member], out: Path, seed: int) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    members, purchases = out / "members.csv", out / "purchases.csv"
    with members.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(MEMBER_HEADER)
        for member in history:
            writer.writerow([member.external_id, f"{member.external_id.lower()}@example.com",
                             f"会員 {member.external_id}", member.joined_at.isoformat()])
    with purchases.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(PURCHASE_HEADER)
        for member in history:
            for n, (moment, total) in enumerate(member.purchases):
                writer.writerow([member.external_id, STORES[int(rng.integers(len(STORES)))],
                                 f"{member.external_id}-{n}", moment.isoformat(), total])
    return members, purchases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the two CSVs")
    args = parser.parse_args()
    began = time.monotonic()
    history = simulate(args.members, args.seed)
    members, purchases = write_csv(history, args.out, args.seed)
    count = sum(len(member.purchases) for member in history)
    start = END - dt.timedelta(days=DAYS)
    print(f"{len(history):,} members, {count:,} purchases ({start:%Y-%m-%d} to "
          f"{END:%Y-%m-%d}) in {time.monotonic() - began:.1f}s: {members}, {purchases}")


if __name__ == "__main__":
    main()
