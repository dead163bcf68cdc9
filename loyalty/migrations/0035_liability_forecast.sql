-- The liability forecast (loyalty/insights/liability.py) reads lots' ages in whole months
-- between business days, as PostgreSQL's age() counts them: a lot earned on 10 January is one
-- month old from 10 February, twelve months old on the day a rolling twelve-month expiry takes
-- it; negative when ``later`` is before ``earlier``. One expression, strict and without a FROM,
-- so the planner inlines it. The forecast groups lots by their business days first and applies
-- this to the groups: computed for every row, age() took most of the time of a scan of lots.
create function whole_months(earlier date, later date) returns int
language sql immutable strict as $$
    select (extract(year from age(later, earlier)) * 12
            + extract(month from age(later, earlier)))::int
$$;
