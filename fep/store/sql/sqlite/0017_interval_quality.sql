-- fep schema 15 (SQLite): what the status page's charts read, kept small so a page view reads
-- a few rows (fep.analysis.store). Same as sql/postgresql/0017_interval_quality.sql.

-- The stored balances by day (the loss over time of every area): a range of days, not
-- the whole table.
CREATE INDEX balances_since ON balances (since);

-- Each meter's day of the analysed channel by quality class (fep.analysis.quality), as
-- counted by the day's last VEE run: valid, suspect, estimated, edited, missing.
CREATE TABLE interval_quality (
    meter       TEXT NOT NULL,
    obis        TEXT NOT NULL,
    day         TEXT NOT NULL,
    intervals   INTEGER NOT NULL,
    valid       INTEGER NOT NULL,
    suspect     INTEGER NOT NULL,
    estimated   INTEGER NOT NULL,
    edited      INTEGER NOT NULL,
    missing     INTEGER NOT NULL,
    computed_at TEXT NOT NULL,
    CONSTRAINT interval_quality_unique UNIQUE (meter, obis, day)
);
CREATE INDEX interval_quality_day ON interval_quality (obis, day);

-- The sum of interval_quality over a day's meters, written by each VEE run of the day.
CREATE TABLE interval_quality_days (
    obis        TEXT NOT NULL,
    day         TEXT NOT NULL,
    meters      INTEGER NOT NULL,
    intervals   INTEGER NOT NULL,
    valid       INTEGER NOT NULL,
    suspect     INTEGER NOT NULL,
    estimated   INTEGER NOT NULL,
    edited      INTEGER NOT NULL,
    missing     INTEGER NOT NULL,
    computed_at TEXT NOT NULL,
    CONSTRAINT interval_quality_days_unique UNIQUE (obis, day)
);
