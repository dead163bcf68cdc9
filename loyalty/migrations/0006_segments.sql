-- Segments: saved filters over members, stored as their typed definition (schemas/segments.py)
-- and compiled to parameterised SQL each time they are used (loyalty/segments.py). RFM scores
-- per member, recomputed in one statement by loyalty.rfm.refresh_rfm.

create table segments (
    segment_id   uuid primary key default uuid_v7(),
    name         text not null,
    description  text not null default '',
    definition   jsonb not null,
    created_by   uuid references staff,
    created_at   timestamptz not null,
    updated_by   uuid references staff,
    updated_at   timestamptz not null
);

-- One row per member who has purchased at least once (and is active or dormant). Scores are
-- 1 to 5 by quintile, 5 the best; equal measures always have equal scores.
create table member_rfm (
    member_id         uuid primary key references members,
    last_purchase_at  timestamptz not null,
    recency_days      int not null check (recency_days >= 0),
    frequency         int not null check (frequency >= 0),
    monetary          bigint not null,
    recency_score     smallint not null check (recency_score between 1 and 5),
    frequency_score   smallint not null check (frequency_score between 1 and 5),
    monetary_score    smallint not null check (monetary_score between 1 and 5),
    window_days       int not null check (window_days > 0),
    computed_at       timestamptz not null
);

-- A member's purchases include those of the members merged into them (as the tier measure
-- counts them): segment conditions and the RFM refresh find those members by this index
-- instead of scanning every member once per member.
create index members_merged_into on members (merged_into) where merged_into is not null;
