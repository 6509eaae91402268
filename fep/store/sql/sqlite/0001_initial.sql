-- fep schema 1 (SQLite): meters, readings, load-profile intervals, events.
-- Kept column for column the same as sql/postgresql/0001_initial.sql.
-- Times are ISO-8601 UTC text with microseconds (2024-03-01T12:00:00.000000Z), so text
-- order is time order. Numbers are kept as decimal text in `value` so they stay exact;
-- `value_text` holds text values and `value_type` says which Python type to rebuild:
-- D decimal, I int, B bool, S str, N None.

CREATE TABLE meters (
    id          TEXT PRIMARY KEY,
    protocol    TEXT NOT NULL,
    route       TEXT NOT NULL,
    serial      TEXT NULL,
    address     TEXT NULL,
    credentials TEXT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE readings (
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
    CONSTRAINT readings_unique UNIQUE (meter, obis, read_at)
);
CREATE INDEX readings_meter_read_at ON readings (meter, read_at);

CREATE TABLE intervals (
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
    CONSTRAINT intervals_unique UNIQUE (meter, obis, start_time)
);

CREATE TABLE events (
    meter         TEXT NOT NULL,
    code          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    time          TEXT NOT NULL,
    text          TEXT NOT NULL DEFAULT '',
    received_time TEXT NOT NULL,
    source        TEXT NOT NULL DEFAULT '',
    CONSTRAINT events_unique UNIQUE (meter, code, time)
);
CREATE INDEX events_meter_time ON events (meter, time);
