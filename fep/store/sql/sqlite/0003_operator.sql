-- fep schema 3 (SQLite): the operator tier's alarms and their notifications.
-- Kept column for column the same as sql/postgresql/0003_operator.sql (times as ISO-8601
-- UTC text, as in 0001). SQLite has no NOTIFY: listeners need PostgreSQL.

CREATE TABLE alarms (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    meter       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    code        TEXT NOT NULL,
    event_time  TEXT NOT NULL,
    text        TEXT NOT NULL DEFAULT '',
    meter_group TEXT NULL,
    raised_at   TEXT NOT NULL,
    last_time   TEXT NOT NULL,
    count       INTEGER NOT NULL DEFAULT 1,
    node        TEXT NOT NULL DEFAULT '',
    CONSTRAINT alarms_event_unique UNIQUE (meter, code, event_time)
);
CREATE INDEX alarms_raised_at ON alarms (raised_at);
CREATE INDEX alarms_meter_kind ON alarms (meter, kind, last_time);

CREATE TABLE alarm_notifications (
    alarm_id INTEGER NOT NULL REFERENCES alarms (id),
    channel  TEXT NOT NULL,
    target   TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '',
    sent_at  TEXT NOT NULL
);
CREATE INDEX alarm_notifications_alarm ON alarm_notifications (alarm_id);
