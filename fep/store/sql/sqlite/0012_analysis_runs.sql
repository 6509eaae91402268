-- fep schema 12 (SQLite): the analysis service's runs, stored outages and edits
-- (fep.analysis.store). Kept column for column the same as sql/postgresql/0012_*.sql.

-- The daemon's analysis runs: the last run of each analysis for a day, with its summary.
CREATE TABLE analysis_runs (
    day         TEXT NOT NULL,
    analysis    TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NULL,
    ok          INTEGER NOT NULL DEFAULT 0,
    summary     TEXT NOT NULL DEFAULT '{}',
    error       TEXT NULL,
    CONSTRAINT analysis_runs_unique UNIQUE (day, analysis)
);

-- Outages as the analysis service found them: kind `meter` (a meter's power outage), `area`
-- (many members of an area out at once) or `comms` (a suspected outage: every meter of an
-- area silent in a collection cycle). `until` NULL: still open.
CREATE TABLE outages (
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    since    TEXT NOT NULL,
    until    TEXT NULL,
    source   TEXT NOT NULL DEFAULT '',
    meters   TEXT NOT NULL DEFAULT '',
    details  TEXT NOT NULL DEFAULT '{}',
    found_at TEXT NOT NULL,
    CONSTRAINT outages_unique UNIQUE (kind, subject, since)
);
CREATE INDEX outages_since ON outages (since);

-- Operators' edits of interval values: a replacement or an acceptance with its reason, who
-- asked and who approved (four eyes), the value before and after; never in `intervals`.
CREATE TABLE interval_edits (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    meter        TEXT NOT NULL,
    obis         TEXT NOT NULL,
    start_time   TEXT NOT NULL,
    action       TEXT NOT NULL,
    value_before TEXT NULL,
    value_after  TEXT NULL,
    reason       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    status       TEXT NOT NULL,
    decided_by   TEXT NULL,
    decided_at   TEXT NULL,
    note         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX interval_edits_meter ON interval_edits (meter, obis, start_time);
