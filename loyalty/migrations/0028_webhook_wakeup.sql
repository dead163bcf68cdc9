-- Wake a delivery worker only when none is busy (docs/decisions/0014, docs/performance.md).
--
-- NOTIFY takes a cluster-wide lock from before a transaction's commit until after it: every
-- transaction that notifies commits one after the other, WAL flush included. With a NOTIFY in
-- each purchase, 32 clients committed 740 transactions/s instead of 6,700 on the bench server.
-- A busy worker holds the shared advisory lock below on its listening connection; the fan-out
-- notifies only when it can take the lock exclusively (no worker busy), and never waits for it.
-- A worker going idle releases its lock and then looks for due deliveries once more; what a
-- transaction still open at that moment fans out is found by the polling fallback at the latest.

create or replace function webhook_fan_out() returns trigger language plpgsql as $$
declare
    fanned integer;
begin
    insert into webhook_deliveries (endpoint_id, event_id, seq, member_id)
    select e.endpoint_id, n.event_id, n.seq, n.member_id
      from new_events n
      join webhook_endpoints e on e.enabled and n.type = any (e.event_types);
    get diagnostics fanned = row_count;
    if fanned > 0 and pg_try_advisory_xact_lock(hashtext('loyalty_webhooks_busy')) then
        perform pg_notify('loyalty_webhooks', '');
    end if;
    return null;
end $$;
