-- fep schema 20 (PostgreSQL): closed days of intervals kept as one row per series and day.
--
-- An interval row costs 120-130 bytes (tuple header, times, keys and its share of the unique
-- index) for one number. A meter's channel brings 96 a day, and once a day is closed its
-- intervals do not change. fep.store.compaction moves such days, when they are regular, out of
-- interval_rows into interval_days: one row holds the day's values as an array (12-15 bytes an
-- interval). A day is regular when its intervals share one period (at least a minute,
-- dividing the day, starts on its multiples from midnight UTC), one source, unit, scaler and
-- value type (exact numbers: 'D' decimal or 'I' integer), and every value is a number.
--   vals            the values in order of start time (numeric keeps each one exactly)
--   slots           NULL when every interval of the day is there; else each value's place
--                   in the day (0 = the interval starting at midnight)
--   statuses        NULL when every status is 0; else each value's status
--   received_times  NULL when the day came at one time (received_time); else each value's
--                   (received_time is then the latest)
-- The view intervals reads both tables, with the names and columns of before and one more,
-- start_day (the UTC midnight of start_time): a query bounded by start_day as well as by
-- start_time reads only the partitions of those days in both tables.
-- Writers keep writing interval_rows; a batch holding intervals older than two days skips
-- those a day row already holds (fep.store.copy), so each interval is stored once.

SET LOCAL TIME ZONE 'UTC';

CREATE TABLE interval_days (
    day_start      timestamptz NOT NULL,
    received_time  timestamptz NOT NULL,
    series         integer NOT NULL,
    source         integer NOT NULL,
    period_s       integer NOT NULL,
    unit_code      smallint NULL,
    scaler         smallint NOT NULL DEFAULT 0,
    value_type     "char" NOT NULL,
    vals           numeric[] NOT NULL,
    slots          smallint[] NULL,
    statuses       integer[] NULL,
    received_times timestamptz[] NULL
) PARTITION BY RANGE (day_start);
ALTER TABLE interval_days ADD CONSTRAINT interval_days_unique UNIQUE (series, day_start);

-- The same monthly partitions as interval_rows has (fep makes the later ones ahead, as for
-- the other record tables), and a DEFAULT one.
DO $$
DECLARE
    p record;
    name text;
BEGIN
    FOR p IN SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'interval_rows'::regclass ORDER BY 1 LOOP
        name := 'interval_days' || substr(p.name, length('intervals') + 1);
        EXECUTE format('CREATE TABLE %I PARTITION OF interval_days %s', name, p.bound);
    END LOOP;
    IF to_regclass('interval_days_default') IS NULL THEN
        CREATE TABLE interval_days_default PARTITION OF interval_days DEFAULT;
    END IF;
END
$$;

DROP VIEW intervals;
CREATE VIEW intervals AS
    SELECT s.meter, s.quantity AS obis, r.start_time, r.period_s, r.value, r.value_text,
           r.value_type::text::char(1) AS value_type, r.status,
           r.unit_code::integer AS unit_code, r.scaler::integer AS scaler, r.received_time,
           o.name AS source, date_trunc('day', r.start_time, 'UTC') AS start_day
    FROM interval_rows r
    JOIN record_series s ON s.id = r.series
    JOIN record_sources o ON o.id = r.source
    UNION ALL
    SELECT s.meter, s.quantity AS obis,
           d.day_start + make_interval(secs => d.period_s * coalesce(d.slots[u.i], u.i - 1))
               AS start_time,
           d.period_s, u.value, NULL::text AS value_text,
           d.value_type::text::char(1) AS value_type, coalesce(d.statuses[u.i], 0) AS status,
           d.unit_code::integer AS unit_code, d.scaler::integer AS scaler,
           coalesce(d.received_times[u.i], d.received_time) AS received_time,
           o.name AS source, d.day_start AS start_day
    FROM interval_days d
    CROSS JOIN LATERAL unnest(d.vals) WITH ORDINALITY AS u (value, i)
    JOIN record_series s ON s.id = d.series
    JOIN record_sources o ON o.id = d.source;

-- How far compaction has gone. compacted_before: the intervals before this instant were
-- examined by a run that ended (a row that comes later for such a day stays in
-- interval_rows; `fep db compact --since` looks again). day_rows_before: day rows may hold
-- intervals before this instant (set as a run starts, under the compaction lock): a writer
-- holding the lock shared checks only the intervals before it against the day rows.
CREATE TABLE interval_compaction (
    one               boolean PRIMARY KEY DEFAULT true CHECK (one),
    compacted_before  timestamptz NULL,
    day_rows_before   timestamptz NOT NULL
);
