-- fep schema 15 (PostgreSQL): what the status page's charts read, kept small so a page view reads
-- a few rows (fep.analysis.store). Same as sql/sqlite/0017_interval_quality.sql.

-- The stored balances by day (the loss over time of every area): a range of days, not
-- the whole table.
CREATE INDEX balances_since ON balances (since);

-- Each meter's day of the analysed channel by quality class (fep.analysis.quality), as
-- counted by the day's last VEE run: valid, suspect, estimated, edited, missing.
CREATE TABLE interval_quality (
    meter       text NOT NULL,
    obis        text NOT NULL,
    day         text NOT NULL,
    intervals   integer NOT NULL,
    valid       integer NOT NULL,
    suspect     integer NOT NULL,
    estimated   integer NOT NULL,
    edited      integer NOT NULL,
    missing     integer NOT NULL,
    computed_at timestamptz NOT NULL,
    CONSTRAINT interval_quality_unique UNIQUE (meter, obis, day)
);
CREATE INDEX interval_quality_day ON interval_quality (obis, day);

-- The sum of interval_quality over a day's meters, written by each VEE run of the day.
CREATE TABLE interval_quality_days (
    obis        text NOT NULL,
    day         text NOT NULL,
    meters      integer NOT NULL,
    intervals   integer NOT NULL,
    valid       integer NOT NULL,
    suspect     integer NOT NULL,
    estimated   integer NOT NULL,
    edited      integer NOT NULL,
    missing     integer NOT NULL,
    computed_at timestamptz NOT NULL,
    CONSTRAINT interval_quality_days_unique UNIQUE (obis, day)
);
