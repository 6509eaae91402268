-- fep schema 12 (PostgreSQL): the analysis service's runs, stored outages and edits
-- (fep.analysis.store). Kept column for column the same as sql/sqlite/0012_*.sql.

-- The daemon's analysis runs: the last run of each analysis for a day, with its summary.
CREATE TABLE analysis_runs (
    day         text NOT NULL,
    analysis    text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NULL,
    ok          integer NOT NULL DEFAULT 0,
    summary     text NOT NULL DEFAULT '{}',
    error       text NULL,
    CONSTRAINT analysis_runs_unique UNIQUE (day, analysis)
);

-- Outages as the analysis service found them: kind `meter` (a meter's power outage), `area`
-- (many members of an area out at once) or `comms` (a suspected outage: every meter of an
-- area silent in a collection cycle). `until` NULL: still open.
CREATE TABLE outages (
    kind     text NOT NULL,
    subject  text NOT NULL,
    since    timestamptz NOT NULL,
    until    timestamptz NULL,
    source   text NOT NULL DEFAULT '',
    meters   text NOT NULL DEFAULT '',
    details  text NOT NULL DEFAULT '{}',
    found_at timestamptz NOT NULL,
    CONSTRAINT outages_unique UNIQUE (kind, subject, since)
);
CREATE INDEX outages_since ON outages (since);

-- Operators' edits of interval values: a replacement or an acceptance with its reason, who
-- asked and who approved (four eyes), the value before and after; never in `intervals`.
CREATE TABLE interval_edits (
    id           bigserial PRIMARY KEY,
    meter        text NOT NULL,
    obis         text NOT NULL,
    start_time   timestamptz NOT NULL,
    action       text NOT NULL,
    value_before numeric NULL,
    value_after  numeric NULL,
    reason       text NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL,
    status       text NOT NULL,
    decided_by   text NULL,
    decided_at   timestamptz NULL,
    note         text NOT NULL DEFAULT ''
);
CREATE INDEX interval_edits_meter ON interval_edits (meter, obis, start_time);
