-- fep schema 18 (SQLite): why the analysis service ran a day (fep.analysis.daemon), and the
-- days re-collected since their analysis, waiting for it. Same as sql/postgresql/0018.

-- `scheduled` (at `at`), `collection` (after the day's collection), `missed` (a daemon
-- started late), `re-collection` (values of the day collected again since it was analysed).
ALTER TABLE analysis_runs ADD COLUMN reason TEXT NOT NULL DEFAULT 'scheduled';

-- Meters whose intervals or events of a day were collected again since the day was
-- analysed: the day is analysed again soon after; kept so a restart loses none.
CREATE TABLE analysis_pending (
    day      TEXT NOT NULL,
    meter    TEXT NOT NULL,
    noted_at TEXT NOT NULL,
    CONSTRAINT analysis_pending_unique UNIQUE (day, meter)
);
