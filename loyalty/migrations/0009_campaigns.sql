-- Campaigns: an audience (a segment, or a list of members), an action, a schedule, a budget
-- cap and a holdout. At launch every member of the audience is assigned, once, to the treated
-- or the control group (campaign_members); results compare the two.

create table campaigns (
    campaign_id      uuid primary key default uuid_v7(),
    name             text not null,
    description      text not null default '',
    segment_id       uuid references segments,
    member_list      uuid[],
    action           jsonb not null,
    starts_at        timestamptz,
    ends_at          timestamptz,
    holdout_percent  int not null default 0 check (holdout_percent between 0 and 90),
    max_members      bigint check (max_members > 0),
    channel          text check (channel in ('marketing_email', 'push')),
    status           text not null default 'draft'
                     check (status in ('draft', 'scheduled', 'launching', 'launched')),
    launched_at      timestamptz,
    eligible         bigint,
    treated          bigint,
    control          bigint,
    messaged         bigint,
    actioned         bigint,
    grant_id         uuid,
    created_by       uuid references staff,
    created_at       timestamptz not null default now(),
    check ((segment_id is null) <> (member_list is null)),
    check (ends_at is null or starts_at is null or starts_at < ends_at)
);
create index campaigns_due on campaigns (starts_at) where status = 'scheduled';
-- Points multipliers in force are looked up at every purchase of a treated member.
create index campaigns_multipliers on campaigns (campaign_id)
    where status = 'launched' and action->>'type' = 'points_multiplier';

-- No foreign keys here, on purpose: the rows are written only by a launch's assignment, which
-- selects the members from `members` and holds the campaign's row, and neither members nor
-- campaigns are ever deleted. A per-row check of both was half the time of assigning a
-- million members (19 s of 37 s, EXPLAIN ANALYZE).
create table campaign_members (
    member_id         uuid not null,
    campaign_id       uuid not null,
    arm               text not null check (arm in ('treated', 'control')),
    status_at_launch  text not null,
    messaged          boolean not null default false,
    primary key (member_id, campaign_id)
);
create index campaign_members_arm on campaign_members (campaign_id, arm, member_id);
