-- Staff search finds a member by the start of their e-mail address ("taro" finds
-- taro@example.com). The unique index members_email compares by the database's collation, which
-- a LIKE prefix cannot use; text_pattern_ops can.
create index members_email_prefix on members (email text_pattern_ops) where email is not null;
