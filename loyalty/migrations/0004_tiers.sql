-- Tiers: the member's current tier lives on the balance row (written under its version, like
-- points), with the history of every change. The tier programme itself is part of the
-- versioned earning rules.

alter table point_balances add column tier text;
alter table point_balances add column tier_since timestamptz;

create table member_tiers (
    member_id   uuid not null references members,
    change_id   uuid not null,
    from_tier   text,
    to_tier     text,
    reason      text not null,
    measure     bigint not null,
    purchase_id uuid,
    changed_at  timestamptz not null,
    primary key (member_id, change_id)
);
create index member_tiers_history on member_tiers (member_id, changed_at desc);

-- The qualifying measure sums a member's purchases over a window.
create index purchases_member_time on purchases (member_id, occurred_at);
