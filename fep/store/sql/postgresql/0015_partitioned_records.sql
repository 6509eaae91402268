-- fep schema 15 (PostgreSQL): readings, intervals and events partitioned by month.
-- Each table becomes a table partitioned by range of its time column (read_at, start_time,
-- time), with the same name and columns (queries and COPY are unchanged), monthly
-- partitions named TABLE_pYYYY_MM (UTC months) and a DEFAULT partition TABLE_default that
-- takes any row no monthly partition covers (a meter whose clock says 2000 or 2099), so no
-- row is ever refused for its time. The unique key (meter, quantity, time) is the one index:
-- the second indexes readings_meter_read_at and events_meter_time are gone (partition
-- pruning on the time column plus the unique key's leading `meter` serve the per-meter
-- queries; docs/operations.md). Every row is copied. Monthly partitions are made here for
-- the months holding rows within the last ten years and for this month and the three
-- after; fep makes the later ones ahead (fep.store.partitions); rows outside those months
-- go to DEFAULT and move to their month's partition when it is made.

SET LOCAL TIME ZONE 'UTC';

ALTER TABLE readings RENAME TO readings_unpartitioned;
ALTER TABLE readings_unpartitioned RENAME CONSTRAINT readings_unique TO readings_unpartitioned_unique;
DROP INDEX readings_meter_read_at;
CREATE TABLE readings (
    meter         text NOT NULL,
    obis          text NOT NULL,
    value         numeric NULL,
    value_text    text NULL,
    value_type    char(1) NOT NULL,
    unit_code     integer NULL,
    scaler        integer NOT NULL DEFAULT 0,
    meter_time    timestamptz NULL,
    read_at       timestamptz NOT NULL,
    received_time timestamptz NOT NULL,
    quality       integer NOT NULL DEFAULT 0,
    source        text NOT NULL DEFAULT '',
    native_id     text NULL
) PARTITION BY RANGE (read_at);

ALTER TABLE intervals RENAME TO intervals_unpartitioned;
ALTER TABLE intervals_unpartitioned RENAME CONSTRAINT intervals_unique TO intervals_unpartitioned_unique;
CREATE TABLE intervals (
    meter         text NOT NULL,
    obis          text NOT NULL,
    start_time    timestamptz NOT NULL,
    period_s      integer NOT NULL,
    value         numeric NULL,
    value_text    text NULL,
    value_type    char(1) NOT NULL,
    status        integer NOT NULL DEFAULT 0,
    unit_code     integer NULL,
    scaler        integer NOT NULL DEFAULT 0,
    received_time timestamptz NOT NULL,
    source        text NOT NULL DEFAULT ''
) PARTITION BY RANGE (start_time);

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_unique TO events_unpartitioned_unique;
DROP INDEX events_meter_time;
CREATE TABLE events (
    meter         text NOT NULL,
    code          text NOT NULL,
    kind          text NOT NULL,
    severity      text NOT NULL,
    time          timestamptz NOT NULL,
    text          text NOT NULL DEFAULT '',
    received_time timestamptz NOT NULL,
    source        text NOT NULL DEFAULT ''
) PARTITION BY RANGE (time);

-- Monthly partitions: the months with rows (within ten years back) and this month and the
-- three after. Month arithmetic on UTC wall-clock times (timestamp), bounds as timestamptz.
DO $$
DECLARE
    t record;
    this_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    m timestamp;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('readings', 'read_at'), ('intervals', 'start_time'),
                                   ('events', 'time')) AS v (name, column_name) LOOP
        FOR m IN EXECUTE format(
                'SELECT date_trunc(''month'', %I AT TIME ZONE ''UTC'') FROM %I'
                ' WHERE %I >= $1 AND %I < $2'
                ' UNION SELECT generate_series($3, $3 + interval ''3 months'','
                ' interval ''1 month'') ORDER BY 1',
                t.column_name, t.name || '_unpartitioned', t.column_name, t.column_name)
            USING (this_month - interval '10 years') AT TIME ZONE 'UTC',
                  (this_month + interval '4 months') AT TIME ZONE 'UTC', this_month LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           t.name || to_char(m, '"_p"YYYY_MM'), t.name,
                           m AT TIME ZONE 'UTC',
                           (m + interval '1 month') AT TIME ZONE 'UTC');
        END LOOP;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t.name || '_default', t.name);
    END LOOP;
END
$$;

-- Every row, then the unique key (built once per partition, faster than row by row).
INSERT INTO readings (meter, obis, value, value_text, value_type, unit_code, scaler,
                      meter_time, read_at, received_time, quality, source, native_id)
    SELECT meter, obis, value, value_text, value_type, unit_code, scaler, meter_time, read_at,
           received_time, quality, source, native_id
    FROM readings_unpartitioned;
DROP TABLE readings_unpartitioned;
ALTER TABLE readings ADD CONSTRAINT readings_unique UNIQUE (meter, obis, read_at);

INSERT INTO intervals (meter, obis, start_time, period_s, value, value_text, value_type,
                       status, unit_code, scaler, received_time, source)
    SELECT meter, obis, start_time, period_s, value, value_text, value_type, status,
           unit_code, scaler, received_time, source
    FROM intervals_unpartitioned;
DROP TABLE intervals_unpartitioned;
ALTER TABLE intervals ADD CONSTRAINT intervals_unique UNIQUE (meter, obis, start_time);

INSERT INTO events (meter, code, kind, severity, time, text, received_time, source)
    SELECT meter, code, kind, severity, time, text, received_time, source
    FROM events_unpartitioned;
DROP TABLE events_unpartitioned;
ALTER TABLE events ADD CONSTRAINT events_unique UNIQUE (meter, code, time);
