-- fep schema 11 (PostgreSQL): the analysis tier's tables (fep.analysis.store).
-- Kept column for column the same as sql/sqlite/0011_analysis.sql. Times are timestamptz
-- like the intervals' start_time; energy is numeric in the channel's unit.

-- The network model: areas as a tree (parent), and each area's summary and member meters.
CREATE TABLE areas (
    id      text PRIMARY KEY,
    name    text NOT NULL DEFAULT '',
    kind    text NOT NULL,
    parent  text NULL
);

CREATE TABLE area_meters (
    area      text NOT NULL,
    meter     text NOT NULL,
    role      text NOT NULL,
    direction text NOT NULL,
    phase     text NOT NULL DEFAULT '',
    CONSTRAINT area_meters_unique UNIQUE (area, meter)
);
CREATE INDEX area_meters_meter ON area_meters (meter);

-- Validation exceptions: a rule's finding about a meter's channel over [since, until).
CREATE TABLE validation_exceptions (
    meter    text NOT NULL,
    obis     text NOT NULL,
    rule     text NOT NULL,
    since    timestamptz NOT NULL,
    until    timestamptz NOT NULL,
    flag     integer NOT NULL,
    details  text NOT NULL DEFAULT '{}',
    found_at timestamptz NOT NULL,
    CONSTRAINT validation_exceptions_unique UNIQUE (meter, obis, rule, since)
);
CREATE INDEX validation_exceptions_since ON validation_exceptions (since);

-- The validation flags of each interval (Quality bits), beside the value, never in it.
CREATE TABLE interval_flags (
    meter      text NOT NULL,
    obis       text NOT NULL,
    start_time timestamptz NOT NULL,
    flags      integer NOT NULL,
    CONSTRAINT interval_flags_unique UNIQUE (meter, obis, start_time)
);

-- Estimated consumption of intervals the store lacks; a real interval always wins.
CREATE TABLE estimates (
    meter      text NOT NULL,
    obis       text NOT NULL,
    start_time timestamptz NOT NULL,
    period_s   integer NOT NULL,
    value      numeric NOT NULL,
    method     text NOT NULL,
    source     text NOT NULL DEFAULT '',
    made_at    timestamptz NOT NULL,
    CONSTRAINT estimates_unique UNIQUE (meter, obis, start_time)
);

-- The energy balance of an area over [since, until) (a day), as last computed.
CREATE TABLE balances (
    area        text NOT NULL,
    since       timestamptz NOT NULL,
    until       timestamptz NOT NULL,
    input       numeric NOT NULL,
    consumption numeric NOT NULL,
    loss        numeric NOT NULL,
    loss_rate   numeric NULL,
    members     integer NOT NULL,
    complete    numeric NOT NULL,
    estimated   numeric NOT NULL,
    intervals   integer NOT NULL,
    computed_at timestamptz NOT NULL,
    CONSTRAINT balances_unique UNIQUE (area, since, until)
);
