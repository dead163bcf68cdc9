-- The transactional outbox (issue 15): every event the programme tells other systems about,
-- written by the statement or the transaction that makes its effect, so an event exists if and
-- only if its effect committed. Delivery to webhook endpoints reads from here.
--
-- event_id: time-ordered (UUID v7), the receiver's idempotency key. seq: the order of writing,
-- which deliveries for one member follow (two events of one millisecond have no order by id).
-- member_id: the member the event is about, when it is about one.

create table outbox (
    event_id     uuid primary key default uuid_v7(),
    seq          bigint generated always as identity unique,
    type         text not null,
    occurred_at  timestamptz not null default now(),
    api_version  text not null,
    member_id    uuid,
    data         jsonb not null
);
create index outbox_occurred on outbox (occurred_at);
create index outbox_member on outbox (member_id, seq) where member_id is not null;
