-- Due deliveries in the order a claim takes them (issue 15; docs/performance.md, "Webhooks").
--
-- A claim takes the earliest due deliveries by (next_attempt_at, seq). The index held
-- next_attempt_at alone, and the planner preferred to read every pending delivery, check each
-- against its member's earlier ones and sort them all: with 18,000 waiting (fifteen seconds of
-- purchases) a claim of 100 took 65-100 ms, and a growing backlog made every claim slower.
-- In claim order the index is read only until the batch is full: 2.6-3.2 ms.

drop index webhook_deliveries_due;
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at, seq)
    where status = 'pending';
