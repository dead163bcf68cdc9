-- Where each audited request came from (issue 16: "who, which member, what, when, from where"):
-- the client's address as the API's rate limits see it, behind trusted proxies the nearest
-- untrusted hop (loyalty/access/addresses.py). Null for what no request asked for (jobs, the
-- CLI). Text, not inet: a test client or a proxy may name a peer that is not an IP address.
alter table audit_log add column address text;
