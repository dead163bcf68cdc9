-- Pending lots are found per member (the ledger read, the release batches walk members in id
-- order), so index them by member first.
drop index point_lots_pending;
create index point_lots_pending on point_lots (member_id, available_at) where released_at is null;
