-- Cheaper webhook claims and one index fewer per delivery (issue 15; docs/performance.md,
-- "Webhooks"; decision 0014).
--
-- A claim used to move next_attempt_at a lease ahead. That column is indexed, so every claim
-- wrote a new version of the row into every index of the table (six), and recording the
-- outcome wrote it into four again: the worker's database work ran at the service's priority
-- while the worker itself yielded its CPU. A claim now sets leased_until, which no index
-- covers, on rows that keep a fifth of each page free (fillfactor), so it is a heap-only
-- update: no index is touched until the outcome is recorded.
--
-- The primary key leads with event_id: it serves the outbox's cascading delete, which had an
-- index of its own, and still makes (endpoint, event) unique (replays rely on it).
-- Deliveries claimed under the old rule keep their next attempt a lease ahead: not due before.

alter table webhook_deliveries add column leased_until timestamptz;
alter table webhook_deliveries set (fillfactor = 80);

alter table webhook_deliveries drop constraint webhook_deliveries_pkey;
alter table webhook_deliveries add primary key (event_id, endpoint_id);
drop index webhook_deliveries_event;

