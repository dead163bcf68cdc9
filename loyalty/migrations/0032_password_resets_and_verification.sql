-- Password resets and contact verification (issue 16; docs/decisions/0017-password-resets-and-
-- verification.md). Both hold secrets only as digests; both are member-owned (member_id first in
-- their keys, docs/scaling.md).

-- When the member proved they read the e-mail or phone they have now; null: not proven. A
-- change of the contact clears its mark (trigger below), whatever statement makes it.
alter table members add column email_verified_at timestamptz,
                    add column phone_verified_at timestamptz;

-- A reset requested for a member: the token (32 random bytes, sent once in
-- member.password_reset_requested) is kept as its SHA-256 only. Spent at most once; a reset
-- confirmed spends every other reset of the member too. Rows live a day past their expiry
-- (deleted when the member next asks), long enough to tell "already used" from "unknown".
create table member_password_resets (
    member_id     uuid not null references members,
    reset_id      uuid not null default uuid_v7(),
    token_hash    bytea not null,
    channel       text not null check (channel in ('email', 'phone')),
    requested_at  timestamptz not null default now(),
    expires_at    timestamptz not null,
    used_at       timestamptz,
    primary key (member_id, reset_id)
);
-- Not unique: a unique index must hold the distribution key under Citus; 256 random bits do
-- not collide.
create index member_password_resets_token on member_password_resets (token_hash);

-- The one live verification code per member and channel: six digits, kept as a digest of the
-- member, channel and code; a new request replaces it, a right answer or too many wrong ones
-- delete it.
create table member_verification_codes (
    member_id    uuid not null references members,
    channel      text not null check (channel in ('email', 'phone')),
    code_hash    bytea not null,
    attempts     int not null default 0,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null,
    primary key (member_id, channel)
);

-- A changed e-mail or phone is not verified, and a code or reset sent to the old one no longer
-- works. A member who may no longer sign in (suspended, erased, merged) keeps no reset or code.
create function members_forget_unproven_contacts() returns trigger language plpgsql as $$
begin
    if new.email is distinct from old.email then
        new.email_verified_at := null;
        delete from member_verification_codes where member_id = new.member_id and channel = 'email';
        delete from member_password_resets where member_id = new.member_id and channel = 'email';
    end if;
    if new.phone is distinct from old.phone then
        new.phone_verified_at := null;
        delete from member_verification_codes where member_id = new.member_id and channel = 'phone';
        delete from member_password_resets where member_id = new.member_id and channel = 'phone';
    end if;
    if new.status not in ('active', 'dormant') and old.status in ('active', 'dormant') then
        delete from member_verification_codes where member_id = new.member_id;
        delete from member_password_resets where member_id = new.member_id;
    end if;
    return new;
end $$;

create trigger members_forget_unproven_contacts before update of email, phone, status on members
    for each row when (new.email is distinct from old.email or new.phone is distinct from old.phone
                       or new.status is distinct from old.status)
    execute function members_forget_unproven_contacts();
