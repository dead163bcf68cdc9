-- A delivery's endpoint and event are no longer foreign keys (issue 15; docs/performance.md,
-- "Webhooks"; decision 0014).
--
-- The fan-out writes a purchase's deliveries in the purchase's transaction, and each foreign
-- key was checked there with a key-share lock on the endpoint's row and on the event's: in
-- pgbench, the earn transaction with its two events ran 20 % slower with an endpoint
-- subscribed, and about half of that was those checks. They also made a purchase fail: one
-- fanning out while an admin deleted the endpoint waited for the delete's row lock and then
-- found no endpoint to point at (a foreign key violation at the till).
--
-- Nothing needs them: deliveries are written only from events of the same transaction (the
-- trigger), from the outbox (replays) or with their test event, and read only joined to both
-- (claims, the log, the metrics). Deleting an endpoint deletes its deliveries; a delivery a
-- transaction fans out to an endpoint deleted meanwhile is never sent and goes with its event
-- when retention deletes that (loyalty/ops/delivery.py), as every delivery does. The attempts
-- keep their key to the deliveries: the worker writes them, not the till.

alter table webhook_deliveries drop constraint webhook_deliveries_endpoint_id_fkey;
alter table webhook_deliveries drop constraint webhook_deliveries_event_id_fkey;
