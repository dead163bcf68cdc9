-- Webhook endpoints and the delivery of outbox events to them (issue 15;
-- docs/decisions/0013-webhook-delivery.md).
--
-- Fan-out happens in the outbox's own transaction: a statement-level trigger on outbox inserts
-- writes one pending delivery per (subscribed, enabled endpoint, event), set-based over every
-- row the statement inserted, and wakes the delivery workers with NOTIFY (sent at commit, so
-- never for a rolled-back effect). A delivery row so exists if and only if its event committed.

create table webhook_endpoints (
    endpoint_id    uuid primary key default uuid_v7(),
    url            text not null,
    description    text not null default '',
    event_types    text[] not null,
    enabled        boolean not null default true,
    -- 'failing': disabled by the worker after failing for LOYALTY_WEBHOOKS_DISABLE_AFTER_SECONDS;
    -- 'manual': by an admin. Null while enabled.
    disabled_reason text check (disabled_reason in ('failing', 'manual')),
    disabled_at    timestamptz,
    -- The first failure since the last success; null while deliveries succeed.
    failing_since  timestamptz,
    -- Signing secrets, "whsec_" + base64. They must be readable to sign (HMAC), so they are
    -- kept as they are, like the database's other secrets are kept from everyone but admins.
    secret         text not null,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now()
);

create table webhook_deliveries (
    delivery_id     uuid not null unique default uuid_v7(),
    endpoint_id     uuid not null references webhook_endpoints on delete cascade,
    event_id        uuid not null references outbox on delete cascade,
    -- The event's seq and member, copied: a member's deliveries to one endpoint go in seq order.
    seq             bigint not null,
    member_id       uuid,
    status          text not null default 'pending'
                    check (status in ('pending', 'delivered', 'failed')),
    -- Attempts claimed (one more than those logged while one is in flight or its worker died).
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    created_at      timestamptz not null default now(),
    -- Retries give up this long (LOYALTY_WEBHOOKS_RETRY_FOR_SECONDS) after this moment: the
    -- delivery's writing, or its last retry or replay by an admin.
    retrying_since  timestamptz not null default now(),
    delivered_at    timestamptz,
    primary key (endpoint_id, event_id)
);
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at)
    where status = 'pending';
create index webhook_deliveries_member_order on webhook_deliveries (endpoint_id, member_id, seq)
    where status = 'pending' and member_id is not null;
create index webhook_deliveries_log on webhook_deliveries (endpoint_id, delivery_id);
create index webhook_deliveries_event on webhook_deliveries (event_id);

create table webhook_attempts (
    attempt_id    uuid primary key default uuid_v7(),
    delivery_id   uuid not null references webhook_deliveries (delivery_id) on delete cascade,
    attempted_at  timestamptz not null,
    status_code   integer,
    latency_ms    integer not null,
    error         text,
    -- The first bytes of the receiver's answer (LOYALTY_WEBHOOKS_RESPONSE_BYTES_KEPT).
    response_head text not null default ''
);
create index webhook_attempts_delivery on webhook_attempts (delivery_id, attempt_id);

create function webhook_fan_out() returns trigger language plpgsql as $$
declare
    fanned integer;
begin
    insert into webhook_deliveries (endpoint_id, event_id, seq, member_id)
    select e.endpoint_id, n.event_id, n.seq, n.member_id
      from new_events n
      join webhook_endpoints e on e.enabled and n.type = any (e.event_types);
    get diagnostics fanned = row_count;
    if fanned > 0 then
        perform pg_notify('loyalty_webhooks', '');
    end if;
    return null;
end $$;

create trigger outbox_fan_out after insert on outbox
    referencing new table as new_events
    for each statement execute function webhook_fan_out();
