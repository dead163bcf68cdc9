-- Bulk points grants: one grant credits the same points to every member it targets (a list, a
-- segment, a campaign's treated group), in member-id batches that may be interrupted and run
-- again. The database itself guarantees one entry per member per grant, whoever runs it and
-- however often.

alter table point_entries add column grant_id uuid;
create unique index point_entries_grant on point_entries (member_id, grant_id)
    where grant_id is not null;

create table point_grants (
    grant_id         uuid primary key,
    -- Staff requests carry an Idempotency-Key; a campaign keeps its grant's id itself.
    idempotency_key  text unique,
    request_hash     bytea,
    points           bigint not null check (points > 0),
    reason           text not null,
    source           text not null check (source in ('staff', 'campaign')),
    staff_id         uuid references staff,
    campaign_id      uuid,
    -- {"kind": "members", "member_ids": [...]}, {"kind": "segment", "segment_id": ...} or
    -- {"kind": "campaign", "campaign_id": ...}.
    target           jsonb not null,
    -- Fixed when the grant is made, so every member's lot expires alike even if the earning
    -- rules change while it runs (null: the lots never expire).
    rule_version     int not null references earning_rule_versions,
    expires_at       timestamptz,
    status           text not null default 'running' check (status in ('running', 'done')),
    -- A list's distinct ids, and how many of them no member has (skipped).
    members_listed   bigint,
    unknown_members  bigint not null default 0,
    members_granted  bigint not null default 0,
    points_granted   bigint not null default 0,
    -- The last member id a committed batch reached: where the next batch, or a resumed run,
    -- starts.
    progress         uuid,
    created_at       timestamptz not null,
    finished_at      timestamptz,
    check ((idempotency_key is null) = (request_hash is null)),
    check ((source = 'campaign') = (campaign_id is not null)),
    check ((status = 'done') = (finished_at is not null))
);
create index point_grants_campaign on point_grants (campaign_id) where campaign_id is not null;
