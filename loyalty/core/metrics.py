"""Business counters for ``/metrics``, counted where an effect commits (a replayed request is not
counted again). Each process counts its own; Prometheus adds the instances up."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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

# Webhooks (loyalty/ops/delivery.py). The outbox's latest seq grows by one per event written
# (a rolled-back effect may take a number too): rate() of it is events written per second.
OUTBOX_LAST_SEQ = Gauge("loyalty_outbox_last_seq",
                        "The latest seq of the outbox: events written, as a running number")
WEBHOOK_DELIVERIES = Counter(
    "loyalty_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome (delivered, failed: to be retried, gave_up, gone:"
    " its endpoint deleted meanwhile)",
    ["outcome"])
WEBHOOK_OLDEST_UNDELIVERED = Gauge(
    "loyalty_webhook_oldest_undelivered_seconds",
    "Age of the oldest event not yet delivered to each endpoint (0: none waiting)",
    ["endpoint"])
