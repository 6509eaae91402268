-- fep schema 11 (SQLite): the analysis tier's tables (fep.analysis.store).
-- Kept column for column the same as sql/postgresql/0011_analysis.sql. Times are UTC text
-- like the intervals' start_time; energy is decimal text in the channel's unit.

-- The network model: areas as a tree (parent), and each area's summary and member meters.
CREATE TABLE areas (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL DEFAULT '',
    kind    TEXT NOT NULL,
    parent  TEXT NULL
);

CREATE TABLE area_meters (
    area      TEXT NOT NULL,
    meter     TEXT NOT NULL,
    role      TEXT NOT NULL,
    direction TEXT NOT NULL,
    phase     TEXT NOT NULL DEFAULT '',
    CONSTRAINT area_meters_unique UNIQUE (area, meter)
);
CREATE INDEX area_meters_meter ON area_meters (meter);

-- Validation exceptions: a rule's finding about a meter's channel over [since, until).
CREATE TABLE validation_exceptions (
    meter    TEXT NOT NULL,
    obis     TEXT NOT NULL,
    rule     TEXT NOT NULL,
    since    TEXT NOT NULL,
    until    TEXT NOT NULL,
    flag     INTEGER NOT NULL,
    details  TEXT NOT NULL DEFAULT '{}',
    found_at TEXT NOT NULL,
    CONSTRAINT validation_exceptions_unique UNIQUE (meter, obis, rule, since)
);
CREATE INDEX validation_exceptions_since ON validation_exceptions (since);

-- The validation flags of each interval (Quality bits), beside the value, never in it.
CREATE TABLE interval_flags (
    meter      TEXT NOT NULL,
    obis       TEXT NOT NULL,
    start_time TEXT NOT NULL,
    flags      INTEGER NOT NULL,
    CONSTRAINT interval_flags_unique UNIQUE (meter, obis, start_time)
);

-- Estimated consumption of intervals the store lacks; a real interval always wins.
CREATE TABLE estimates (
    meter      TEXT NOT NULL,
    obis       TEXT NOT NULL,
    start_time TEXT NOT NULL,
    period_s   INTEGER NOT NULL,
    value      TEXT NOT NULL,
    method     TEXT NOT NULL,
    source     TEXT NOT NULL DEFAULT '',
    made_at    TEXT NOT NULL,
    CONSTRAINT estimates_unique UNIQUE (meter, obis, start_time)
);

-- The energy balance of an area over [since, until) (a day), as last computed.
CREATE TABLE balances (
    area        TEXT NOT NULL,
    since       TEXT NOT NULL,
    until       TEXT NOT NULL,
    input       TEXT NOT NULL,
    consumption TEXT NOT NULL,
    loss        TEXT NOT NULL,
    loss_rate   TEXT NULL,
    members     INTEGER NOT NULL,
    complete    TEXT NOT NULL,
    estimated   TEXT NOT NULL,
    intervals   INTEGER NOT NULL,
    computed_at TEXT NOT NULL,
    CONSTRAINT balances_unique UNIQUE (area, since, until)
);
