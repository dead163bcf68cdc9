-- Member numbers that cannot be counted through, and the keys that find look-alike members.
--
-- New member numbers: 11 random digits (the first not 0) and the Luhn check digit the till
-- relies on. The sequence handed out 10000016, 10000024, ... in order, so any terminal could
-- read the membership one number after another; with ten million members, a random number
-- names someone once in ten thousand guesses. The bits come from gen_random_uuid() (a strong
-- source, unlike random()); a number already given is drawn again. Numbers given so far stay:
-- cards are printed with them, and lengths differ, so a new number never meets an old one. Two
-- sign-ups drawing the same number at once: the unique index refuses the second and
-- loyalty.members draws again.
create function random_member_number() returns text
language plpgsql volatile as $$
declare
    candidate text;
begin
    loop
        candidate := with_check_digit((10000000000 + ('x' || encode(
            substring(uuid_send(gen_random_uuid()) from 11 for 6), 'hex'))::bit(48)::bigint
            % 90000000000)::text);
        exit when not exists (select 1 from members where member_number = candidate);
    end loop;
    return candidate;
end
$$;

alter table members alter column member_number set default random_member_number();

-- Unicode TR39 skeletons (loyalty.normalize.skeleton) of the e-mail and of the name's search
-- key: t<Cyrillic a>ro@demo.example and taro@demo.example, 田口 and 田ロ, have the same one, so
-- GET /v1/members/duplicates lists them together. Computed in Python from Unicode's data, so
-- written by the service with the e-mail and the name; members from before this migration (and
-- rows written by hand) have none until the member_skeletons job fills them, which the partial
-- index finds without a scan.
alter table members add column email_skeleton text, add column name_skeleton text;
create index members_email_skeleton on members (email_skeleton) where email_skeleton is not null;
create index members_name_skeleton on members (name_skeleton);
create index members_without_skeleton on members (member_id) where name_skeleton is null;
