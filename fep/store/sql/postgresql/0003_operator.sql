-- fep schema 3 (PostgreSQL): the operator tier's alarms and their notifications.
-- Kept column for column the same as sql/sqlite/0003_operator.sql; PostgreSQL also sends a
-- NOTIFY on channel fep_alarm (payload: the alarm as JSON) for every new alarm, so the
-- monitor tier can LISTEN instead of polling.

CREATE TABLE alarms (
    id          bigserial PRIMARY KEY,
    meter       text NOT NULL,
    kind        text NOT NULL,
    severity    text NOT NULL,
    code        text NOT NULL,
    event_time  timestamptz NOT NULL,
    text        text NOT NULL DEFAULT '',
    meter_group text NULL,
    raised_at   timestamptz NOT NULL,
    last_time   timestamptz NOT NULL,
    count       integer NOT NULL DEFAULT 1,
    node        text NOT NULL DEFAULT '',
    -- The event that raised it: a replayed or re-read event raises nothing new.
    CONSTRAINT alarms_event_unique UNIQUE (meter, code, event_time)
);
CREATE INDEX alarms_raised_at ON alarms (raised_at);
CREATE INDEX alarms_meter_kind ON alarms (meter, kind, last_time);

CREATE TABLE alarm_notifications (
    alarm_id bigint NOT NULL REFERENCES alarms (id),
    channel  text NOT NULL,
    target   text NOT NULL,
    outcome  text NOT NULL,
    detail   text NOT NULL DEFAULT '',
    sent_at  timestamptz NOT NULL
);
CREATE INDEX alarm_notifications_alarm ON alarm_notifications (alarm_id);

CREATE FUNCTION fep_alarm_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('fep_alarm', json_build_object(
        'id', NEW.id, 'meter', NEW.meter, 'kind', NEW.kind, 'severity', NEW.severity,
        'code', NEW.code, 'time', NEW.event_time, 'text', NEW.text,
        'group', NEW.meter_group, 'node', NEW.node)::text);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER alarms_notify AFTER INSERT ON alarms
    FOR EACH ROW EXECUTE FUNCTION fep_alarm_notify();
