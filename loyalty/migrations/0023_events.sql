-- What writes events into the outbox (issue 15) beyond the statements of loyalty/ themselves.
--
-- outbox_api_version(): the API_VERSION of loyalty/core/outbox.py, for the one writer that
-- cannot be handed it as a parameter, the status trigger below. A test holds the two equal; a
-- new version of the payloads is a migration that replaces this function.
create function outbox_api_version() returns text language sql immutable
    as $$ select '2026-12-01' $$;

-- member.status_changed, written by the trigger that already records every status change in
-- member_status_changes (migration 0010): whatever statement changes a member's status (staff,
-- a dormant member's purchase or check-in reactivating them, an imported purchase), the event
-- is written by the same statement. A merge says member.merged instead (loyalty/members/
-- merge.py). The dormancy job, which records its own history rows set-based, writes its events
-- the same way (loyalty/insights/dormancy.py).
create or replace function members_record_status() returns trigger language plpgsql as $$
declare
    credited uuid;
    why text;
begin
    if old.status = 'dormant' and new.status = 'active' then
        select c.campaign_id into credited
          from campaign_members cm join campaigns c on c.campaign_id = cm.campaign_id
         where cm.member_id = new.member_id and cm.arm = 'treated'
           and c.launched_at >= old.status_changed_at
         order by c.launched_at desc, c.campaign_id desc
         limit 1;
    end if;
    why := coalesce(nullif(current_setting('loyalty.status_reason', true), ''),
                    case when old.status = 'dormant' and new.status = 'active'
                         then 'activity' else 'update' end);
    insert into member_status_changes (member_id, changed_at, from_status, to_status, reason,
                                       campaign_id)
    values (new.member_id, new.status_changed_at, old.status, new.status, why, credited);
    if new.status in ('active', 'dormant', 'suspended', 'erased') then
        insert into outbox (type, occurred_at, api_version, member_id, data)
        values ('member.status_changed', new.status_changed_at, outbox_api_version(),
                new.member_id,
                jsonb_build_object('member_id', new.member_id,
                                   'member_number', new.member_number,
                                   'from_status', old.status, 'to_status', new.status,
                                   'reason', why, 'changed_at', new.status_changed_at,
                                   'campaign_id', credited));
    end if;
    return null;
end $$;

-- points.expiring_soon is sent once per member and expiry day, however often its job runs: the
-- job claims (member, day) here in the statement that writes the events. Days past are removed
-- by the same job.
create table expiry_reminders (
    member_id   uuid not null,
    expires_on  date not null,
    sent_at     timestamptz not null,
    primary key (member_id, expires_on)
);
