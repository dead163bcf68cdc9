-- Sessions that end: see docs/decisions/0011-revoking-access-tokens.md.
--
-- A session is a refresh-token family; every access token names its session (claim `sid`).
-- Each API process keeps in memory, per member or staff account, whether it may sign in, its
-- role and its sessions ended lately, and forgets it when told through NOTIFY on the channel
-- loyalty_sessions (payload `member:<id>` or `staff:<id>`). The triggers below send that in
-- the transaction that makes the change, whatever statement makes it (the API, the CLI or
-- SQL typed by hand); PostgreSQL delivers it only if the transaction commits.

-- A session lives at most LOYALTY_SESSION_MAX_AGE_SECONDS from its first sign-in: every
-- successor in a family carries the family's start, and its expiry is capped by it. Families
-- already running start at their oldest token. The default is for instances of the previous
-- version, which keep signing people in during a rolling upgrade.
alter table refresh_tokens add column session_started_at timestamptz not null default now();
update refresh_tokens t
   set session_started_at = f.started
  from (select family_id, min(issued_at) as started from refresh_tokens group by family_id) f
 where t.family_id = f.family_id;

-- A principal's sessions, for ending them all and for what a process reads on first sight.
create index refresh_tokens_member on refresh_tokens (member_id, revoked_at)
    where member_id is not null;
create index refresh_tokens_staff on refresh_tokens (staff_id, revoked_at)
    where staff_id is not null;

-- A session ended (log-out, a refresh token used twice, a merge, or the ends below). One row
-- per token of the family fires; identical notifications of one transaction arrive once.
create function refresh_tokens_announce_end() returns trigger language plpgsql as $$
begin
    perform pg_notify('loyalty_sessions',
                      case when new.member_id is not null then 'member:' || new.member_id
                           else 'staff:' || new.staff_id end);
    return null;
end $$;

create trigger refresh_tokens_announce_end after update of revoked_at on refresh_tokens
    for each row when (old.revoked_at is null and new.revoked_at is not null)
    execute function refresh_tokens_announce_end();

-- A member who may no longer sign in (suspended, erased, merged) loses every session; one
-- who may again (reactivated) is announced too, so no process keeps refusing them. Moves
-- between active and dormant (the dormancy job, by the thousand) change neither.
create function members_announce_standing() returns trigger language plpgsql as $$
declare
    member uuid := coalesce(new.member_id, old.member_id);
begin
    if tg_op = 'UPDATE' and new.status not in ('active', 'dormant') then
        update refresh_tokens set revoked_at = now()
         where member_id = member and revoked_at is null;
    end if;
    perform pg_notify('loyalty_sessions', 'member:' || member);
    return null;
end $$;

create trigger members_announce_standing after update of status on members
    for each row when ((old.status in ('active', 'dormant'))
                       is distinct from (new.status in ('active', 'dormant')))
    execute function members_announce_standing();

create trigger members_announce_removal after delete on members
    for each row execute function members_announce_standing();

-- A staff account deactivated or given another role loses every session: what a session may
-- do is what it was granted at sign-in. Reactivation is announced too.
create function staff_announce_standing() returns trigger language plpgsql as $$
declare
    account uuid := coalesce(new.staff_id, old.staff_id);
begin
    if tg_op = 'UPDATE' and (not new.active or new.role is distinct from old.role) then
        update refresh_tokens set revoked_at = now()
         where staff_id = account and revoked_at is null;
    end if;
    perform pg_notify('loyalty_sessions', 'staff:' || account);
    return null;
end $$;

create trigger staff_announce_standing after update of active, role on staff
    for each row when (old.active is distinct from new.active
                       or old.role is distinct from new.role)
    execute function staff_announce_standing();

create trigger staff_announce_removal after delete on staff
    for each row execute function staff_announce_standing();
