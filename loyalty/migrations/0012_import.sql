-- Import of history (loyalty import members | purchases, see docs/importing.md).
--
-- A brand's own id for a member (its old member number or customer id), kept apart from
-- member_number: ours carries a Luhn check digit the till relies on and comes from our
-- sequence, and a brand's numbers neither pass that check nor stay clear of the numbers the
-- sequence will hand out later. The import finds members again by this id, so importing the
-- same file twice adds nobody, and purchases name their member by it.
alter table members add column external_id text;
create unique index members_external_id on members (external_id) where external_id is not null;
