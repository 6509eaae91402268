-- fep schema 1 (PostgreSQL): meters, readings, load-profile intervals, events.
-- Kept column for column the same as sql/sqlite/0001_initial.sql.
-- Values: `value` holds numbers exactly (numeric), `value_text` holds text values, and
-- `value_type` says which Python type to rebuild: D decimal, I int, B bool, S str, N None.

CREATE TABLE meters (
    id          text PRIMARY KEY,
    protocol    text NOT NULL,
    route       text NOT NULL,
    serial      text NULL,
    address     text NULL,
    credentials text NULL,
    metadata    text NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

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
    native_id     text NULL,
    CONSTRAINT readings_unique UNIQUE (meter, obis, read_at)
);
CREATE INDEX readings_meter_read_at ON readings (meter, read_at);

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
    source        text NOT NULL DEFAULT '',
    CONSTRAINT intervals_unique UNIQUE (meter, obis, start_time)
);

CREATE TABLE events (
    meter         text NOT NULL,
    code          text NOT NULL,
    kind          text NOT NULL,
    severity      text NOT NULL,
    time          timestamptz NOT NULL,
    text          text NOT NULL DEFAULT '',
    received_time timestamptz NOT NULL,
    source        text NOT NULL DEFAULT '',
    CONSTRAINT events_unique UNIQUE (meter, code, time)
);
CREATE INDEX events_meter_time ON events (meter, time);
