-- Foundation: stores, staff, terminals, members with consents, refresh tokens, audit log.
-- Member-owned tables carry member_id and key on it, so they can be distributed by member
-- (see docs/scaling.md). Ids are time-ordered UUIDs (version 7) for index locality.

create function uuid_v7() returns uuid
language sql volatile parallel safe as $$
    select encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    placing substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
                    from 1 for 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

create table stores (
    store_id    uuid primary key default uuid_v7(),
    code        text not null unique,
    name        text not null,
    created_at  timestamptz not null default now()
);

create table staff (
    staff_id      uuid primary key default uuid_v7(),
    email         text not null unique,
    password_hash text not null,
    role          text not null check (role in ('admin', 'marketer', 'analyst', 'support')),
    display_name  text not null default '',
    active        boolean not null default true,
    created_at    timestamptz not null default now()
);

create table terminals (
    terminal_id  uuid primary key default uuid_v7(),
    store_id     uuid not null references stores,
    name         text not null,
    key_prefix   text not null unique,
    key_hash     bytea not null unique,
    created_at   timestamptz not null default now(),
    created_by   uuid references staff,
    revoked_at   timestamptz
);
create index terminals_store on terminals (store_id);

create sequence member_number_seq start 1000001;

create table members (
    member_id         uuid primary key default uuid_v7(),
    member_number     text not null unique,
    email             text,
    phone             text,
    password_hash     text,
    name              text not null,
    name_kana         text not null default '',
    name_key          text not null,
    kana_key          text not null default '',
    birth_date        date,
    postal_code       text,
    attributes        jsonb not null default '{}',
    status            text not null default 'active'
                      check (status in ('active', 'dormant', 'suspended', 'erased')),
    status_changed_at timestamptz not null default now(),
    joined_at         timestamptz not null default now(),
    last_activity_at  timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
create unique index members_email on members (email) where email is not null;
create unique index members_phone on members (phone) where phone is not null;
-- Staff search by the start of a name or reading (pg_trgm is not in every PostgreSQL build).
create index members_name_key on members (name_key text_pattern_ops);
create index members_kana_key on members (kana_key text_pattern_ops) where kana_key <> '';
create index members_status on members (status, member_id);

-- Consent history is append-only; the current state is the latest row per purpose.
create table member_consents (
    member_id     uuid not null references members,
    consent_id    uuid not null default uuid_v7(),
    purpose       text not null,
    granted       boolean not null,
    text_version  text not null,
    channel       text not null,
    actor_kind    text not null check (actor_kind in ('member', 'staff', 'system')),
    actor_id      uuid,
    recorded_at   timestamptz not null default now(),
    primary key (member_id, consent_id)
);
create index member_consents_current on member_consents (member_id, purpose, recorded_at desc);

-- Refresh tokens rotate: each use marks the row used and issues a successor in the same
-- family. A used token presented again revokes the whole family.
create table refresh_tokens (
    token_hash   bytea primary key,
    family_id    uuid not null,
    member_id    uuid references members,
    staff_id     uuid references staff,
    issued_at    timestamptz not null default now(),
    expires_at   timestamptz not null,
    used_at      timestamptz,
    revoked_at   timestamptz,
    check ((member_id is null) <> (staff_id is null))
);
create index refresh_tokens_family on refresh_tokens (family_id);

create table audit_log (
    audit_id      uuid primary key default uuid_v7(),
    recorded_at   timestamptz not null default now(),
    actor_kind    text not null,
    actor_id      uuid,
    action        text not null,
    subject_kind  text not null,
    subject_id    uuid,
    details       jsonb not null default '{}'
);
create index audit_log_subject on audit_log (subject_kind, subject_id, recorded_at);

-- Member numbers carry a Luhn check digit so a mistyped number is caught at the till.
create function with_check_digit(digits text) returns text
language plpgsql immutable strict as $$
declare
    total int := 0;
    d int;
    n int := length(digits);
begin
    for i in 1..n loop
        d := substr(digits, n - i + 1, 1)::int;
        if i % 2 = 1 then
            d := d * 2;
            if d > 9 then d := d - 9; end if;
        end if;
        total := total + d;
    end loop;
    return digits || ((10 - total % 10) % 10)::text;
end
$$;

alter table members
    alter column member_number set default with_check_digit(nextval('member_number_seq')::text);
