-- Scheduled jobs and the members' status history.
--
-- job_runs: every run of a job, scheduled or started by hand. A scheduled run is for one tick
-- of its job's schedule, and a tick is run once: the unique index below is what keeps two
-- schedulers (an old leader still finishing, a new one catching up) from running it twice. A
-- run whose process died stays 'running' until the next run of that job finds it unheld and
-- marks it 'abandoned'; a scheduled tick found abandoned is run again in the same row.

create table job_runs (
    run_id         bigint generated always as identity primary key,
    job            text not null,
    trigger        text not null check (trigger in ('schedule', 'manual')),
    scheduled_for  timestamptz,
    as_of          timestamptz not null,
    started_at     timestamptz not null,
    finished_at    timestamptz,
    outcome        text not null default 'running'
                   check (outcome in ('running', 'succeeded', 'failed', 'abandoned')),
    attempts       int not null default 1,
    counts         jsonb not null default '{}',
    error          text,
    instance       text not null,
    started_by     uuid references staff,
    check ((trigger = 'schedule') = (scheduled_for is not null))
);
create unique index job_runs_tick on job_runs (job, scheduled_for) where scheduled_for is not null;
create index job_runs_by_job on job_runs (job, run_id);
create index job_runs_running on job_runs (job) where outcome = 'running';

-- Every change of a member's status, with the moment and the reason: the history the churn,
-- cohort and reactivation figures are computed from (a member's status at any past moment is
-- the last change before it, or 'active' from joining). Dormancy rows carry the reactivation
-- campaign wave the member was handed to; reactivation rows carry the campaign credited with
-- it (the latest one that treated the member while dormant).
create table member_status_changes (
    member_id    uuid not null,
    change_id    bigint generated always as identity,
    changed_at   timestamptz not null,
    from_status  text not null,
    to_status    text not null,
    reason       text not null,
    campaign_id  uuid,
    primary key (member_id, change_id)
);
-- For figures over a period, and for the reactivation job's recent dormancies.
create index member_status_changes_at on member_status_changes (changed_at);

-- Each wave of the reactivation job is a campaign copied from the configured template.
alter table campaigns add column template_id uuid references campaigns;

-- A dormant member who buys, takes part or checks in is active again, whichever statement
-- moved their last activity: one rule here rather than one in each of those statements.
create function members_reactivate() returns trigger language plpgsql as $$
begin
    new.status := 'active';
    new.status_changed_at := now();
    return new;
end $$;

create trigger members_reactivate before update on members
    for each row when (old.status = 'dormant' and new.status = 'dormant'
                       and new.last_activity_at > old.last_activity_at)
    execute function members_reactivate();

-- Every status change is recorded, by whatever statement made it. Statements that change
-- many members at once (the dormancy job) record their own rows in the same statement, set
-- based, and say so with the transaction setting loyalty.status_recorded = 'on'; the WHEN
-- clause then skips the per-row call.
create function members_record_status() returns trigger language plpgsql as $$
declare
    credited uuid;
begin
    if old.status = 'dormant' and new.status = 'active' then
        select c.campaign_id into credited
          from campaign_members cm join campaigns c on c.campaign_id = cm.campaign_id
         where cm.member_id = new.member_id and cm.arm = 'treated'
           and c.launched_at >= old.status_changed_at
         order by c.launched_at desc, c.campaign_id desc
         limit 1;
    end if;
    insert into member_status_changes (member_id, changed_at, from_status, to_status, reason,
                                       campaign_id)
    values (new.member_id, new.status_changed_at, old.status, new.status,
            coalesce(nullif(current_setting('loyalty.status_reason', true), ''),
                     case when old.status = 'dormant' and new.status = 'active'
                          then 'activity' else 'update' end),
            credited);
    return null;
end $$;

create trigger members_record_status after update on members
    for each row when (old.status is distinct from new.status
                       and current_setting('loyalty.status_recorded', true)
                           is distinct from 'on')
    execute function members_record_status();
