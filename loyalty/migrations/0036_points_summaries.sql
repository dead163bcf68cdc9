-- The read model of GET /v1/me/points (loyalty/points/summaries.py, docs/decisions/0019): the
-- member's PointsSummary as it was answered, encoded, with what it was computed from, so that a
-- repeated read is one statement by primary key and no settling or encoding in Python.
--
-- A row holds while the member's balance row is still at `balance_version` (every writer of a
-- member's points bumps point_balances.version), the newest earning rules are `rules_version`
-- (point_value comes from them), the process computes summaries on the same `basis` (the
-- summary's shape, the programme's currency, the expiring window), and now is in
-- [`valid_from`, `valid_until`): `valid_until` is the first moment the summary changes by time
-- alone (a pending lot released, a lot expired, a lot entering the 90-day expiring window),
-- null when nothing will. Nobody invalidates a row: a stale one is simply not used, and the
-- next read writes it again.
--
-- A table of its own, not columns on point_balances: every purchase locks and updates the
-- balance row; a read filling its cache there would wait in the writers' lock queue (and make
-- them wait), and each fill would add a dead tuple to the hottest table of the schema. Here a
-- fill touches only this row, which no writer reads or locks.
create table point_summaries (
    member_id uuid primary key references members (member_id),
    balance_version bigint not null,
    rules_version bigint not null,
    basis text not null,
    valid_from timestamptz not null,
    valid_until timestamptz,
    body bytea not null,
    check (valid_until is null or valid_until > valid_from)
);
