-- In-store events as a reward kind: marketing invites members (through campaigns), members
-- reserve a seat in the app, a store terminal checks them in and attendance earns points once.
--
-- An event is configuration (a reference table when distributed); invitations, reservations
-- and check-ins are member-owned and keyed by (member_id, event_id): one of each per member
-- and event, whatever the concurrency. The seat count lives on the event row and is taken by a
-- conditional update under that row's lock, in the transaction that writes the reservation,
-- so it never exceeds the capacity.

create table events (
    event_id        uuid primary key default uuid_v7(),
    name            text not null,
    place           text not null,
    -- When set, only this store's terminals may check members in.
    store_id        uuid references stores,
    starts_at       timestamptz not null,
    ends_at         timestamptz not null,
    capacity        int not null check (capacity > 0),
    reserved        int not null default 0,
    points          bigint not null check (points >= 0),
    invitation_only boolean not null default true,
    status          text not null default 'scheduled'
                    check (status in ('scheduled', 'cancelled')),
    created_by      uuid references staff,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    check (ends_at > starts_at),
    check (reserved >= 0 and reserved <= capacity)
);
create index events_by_start on events (starts_at desc, event_id desc);

create table event_invitations (
    member_id    uuid not null references members,
    event_id     uuid not null references events,
    campaign_id  uuid,
    invited_at   timestamptz not null,
    primary key (member_id, event_id)
);
create index event_invitations_event on event_invitations (event_id);

-- A cancelled reservation keeps its row (cancelled_at set); reserving again reopens it.
create table event_reservations (
    member_id     uuid not null references members,
    event_id      uuid not null references events,
    reserved_at   timestamptz not null,
    cancelled_at  timestamptz,
    primary key (member_id, event_id)
);
create index event_reservations_event on event_reservations (event_id)
    where cancelled_at is null;

-- Written by the posting statement that awards the attendance points (loyalty.events).
create table event_checkins (
    member_id      uuid not null references members,
    event_id       uuid not null references events,
    terminal_id    uuid not null references terminals,
    store_id       uuid not null references stores,
    action_id      uuid not null,
    points         bigint not null,
    checked_in_at  timestamptz not null,
    primary key (member_id, event_id)
);
create index event_checkins_event on event_checkins (event_id);
