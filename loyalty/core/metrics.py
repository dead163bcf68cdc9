"""Business counters for ``/metrics``, counted where an effect commits (a replayed request is not
counted again). Each process counts its own; Prometheus adds the instances up."""

from __future__ import annotations

from prometheus_client import Counter

PURCHASES = Counter("loyalty_purchases_total", "Purchases recorded at tills")
POINTS = Counter("loyalty_points_total",
                 "Points moved in members' ledgers, by entry kind (earn, redeem, expire, ...)",
                 ["kind"])
COUPON_REDEMPTIONS = Counter("loyalty_coupon_redemptions_total", "Coupons redeemed at tills")
JOB_RUNS = Counter("loyalty_job_runs_total", "Scheduled and manual job runs, by how they ended",
                   ["job", "outcome"])


def count_entries(entries: list[tuple[str, int]]) -> None:
    """Points of newly written entries, ``(kind, amount)``, as positive counts per kind."""
    for kind, amount in entries:
        POINTS.labels(kind).inc(abs(amount))
