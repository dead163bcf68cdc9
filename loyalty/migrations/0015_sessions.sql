-- Sessions that end: a session is a refresh-token family.

-- A session lives at most LOYALTY_SESSION_MAX_AGE_SECONDS from its first sign-in: every
-- successor in a family carries the family's start, and its expiry is capped by it. Families
-- already running start at their oldest token. The default is for instances of the previous
-- version, which keep signing people in during a rolling upgrade.
alter table refresh_tokens add column session_started_at timestamptz not null default now();
update refresh_tokens t
   set session_started_at = f.started
  from (select family_id, min(issued_at) as started from refresh_tokens group by family_id) f
 where t.family_id = f.family_id;
