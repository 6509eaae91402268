-- fep schema 14 (SQLite): readings, intervals and events kept in their unique key's order.
-- Each table becomes a WITHOUT ROWID table whose primary key is its unique key (meter,
-- quantity, time): one B-tree per table that holds the rows, deduplicates them and serves
-- the per-meter queries, instead of a rowid table plus a unique index plus a second index
-- (readings_meter_read_at, events_meter_time) that led with `meter` as well. Columns and
-- their meaning are unchanged; every row is copied. PostgreSQL keeps its schema here.

CREATE TABLE readings_new (
    meter         TEXT NOT NULL,
    obis          TEXT NOT NULL,
    value         TEXT NULL,
    value_text    TEXT NULL,
    value_type    TEXT NOT NULL,
    unit_code     INTEGER NULL,
    scaler        INTEGER NOT NULL DEFAULT 0,
    meter_time    TEXT NULL,
    read_at       TEXT NOT NULL,
    received_time TEXT NOT NULL,
    quality       INTEGER NOT NULL DEFAULT 0,
    source        TEXT NOT NULL DEFAULT '',
    native_id     TEXT NULL,
    CONSTRAINT readings_unique PRIMARY KEY (meter, obis, read_at)
) WITHOUT ROWID;
INSERT INTO readings_new (meter, obis, value, value_text, value_type, unit_code, scaler,
                          meter_time, read_at, received_time, quality, source, native_id)
    SELECT meter, obis, value, value_text, value_type, unit_code, scaler, meter_time, read_at,
           received_time, quality, source, native_id
    FROM readings ORDER BY meter, obis, read_at;
DROP TABLE readings;
ALTER TABLE readings_new RENAME TO readings;

CREATE TABLE intervals_new (
    meter         TEXT NOT NULL,
    obis          TEXT NOT NULL,
    start_time    TEXT NOT NULL,
    period_s      INTEGER NOT NULL,
    value         TEXT NULL,
    value_text    TEXT NULL,
    value_type    TEXT NOT NULL,
    status        INTEGER NOT NULL DEFAULT 0,
    unit_code     INTEGER NULL,
    scaler        INTEGER NOT NULL DEFAULT 0,
    received_time TEXT NOT NULL,
    source        TEXT NOT NULL DEFAULT '',
    CONSTRAINT intervals_unique PRIMARY KEY (meter, obis, start_time)
) WITHOUT ROWID;
INSERT INTO intervals_new (meter, obis, start_time, period_s, value, value_text, value_type,
                           status, unit_code, scaler, received_time, source)
    SELECT meter, obis, start_time, period_s, value, value_text, value_type, status,
           unit_code, scaler, received_time, source
    FROM intervals ORDER BY meter, obis, start_time;
DROP TABLE intervals;
ALTER TABLE intervals_new RENAME TO intervals;

CREATE TABLE events_new (
    meter         TEXT NOT NULL,
    code          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    time          TEXT NOT NULL,
    text          TEXT NOT NULL DEFAULT '',
    received_time TEXT NOT NULL,
    source        TEXT NOT NULL DEFAULT '',
    CONSTRAINT events_unique PRIMARY KEY (meter, code, time)
) WITHOUT ROWID;
INSERT INTO events_new (meter, code, kind, severity, time, text, received_time, source)
    SELECT meter, code, kind, severity, time, text, received_time, source
    FROM events ORDER BY meter, code, time;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
