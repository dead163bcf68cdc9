-- A delivery's successful attempt is kept on the delivery itself (issue 15; docs/performance.md,
-- "Webhooks"; decision 0014).
--
-- Recording a success wrote two rows: the delivery marked delivered and a webhook_attempts row
-- with its primary key and its index by delivery, for nearly every event, in the database's
-- share of the machine while the purchases that made the events were still coming. The status,
-- latency and first bytes of the answer that delivered it now go on the delivery, in the
-- update that marks it delivered; webhook_attempts keeps the attempts that failed. The log
-- (GET .../deliveries) shows both, the success last. Sending a delivered delivery again (a
-- retry or a replay by an admin) first moves its success into webhook_attempts, so no attempt
-- leaves the log.

alter table webhook_deliveries
    add column delivered_status integer,
    add column delivered_latency_ms integer,
    add column delivered_head text;
