-- fep schema 10 (SQLite): control plans (fep.collect.plans): a command of the vocabulary over
-- a group of meters, approved by a second operator, released at a rate; each meter's outcome
-- and the plan's audit trail. Kept column for column the same as
-- sql/postgresql/0010_plans.sql. Times are POSIX seconds (REAL); params and the rate
-- limiter's state are JSON text.

CREATE TABLE plans (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    action       TEXT NOT NULL,
    params       TEXT NOT NULL DEFAULT '{}',
    target       TEXT NOT NULL,
    status       TEXT NOT NULL,
    rate         REAL NOT NULL,
    line_rate    REAL NULL,
    attempts     INTEGER NOT NULL DEFAULT 3,
    retry_delay  REAL NOT NULL DEFAULT 30,
    starts_at    REAL NULL,
    deadline_at  REAL NULL,
    deadline_in  REAL NULL,
    created_by   TEXT NOT NULL,
    created_at   REAL NOT NULL,
    submitted_by TEXT NULL,
    submitted_at REAL NULL,
    decided_by   TEXT NULL,
    decided_at   REAL NULL,
    reason       TEXT NULL,
    started_at   REAL NULL,
    finished_at  REAL NULL,
    limiter      TEXT NOT NULL DEFAULT '{}',
    updated_at   REAL NOT NULL
);
CREATE INDEX plans_status ON plans (status);

-- One row per meter of a plan, in release order (seq); line: its resource (fep.collect.limits).
CREATE TABLE plan_meters (
    plan        INTEGER NOT NULL,
    meter       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    route       TEXT NOT NULL,
    line        TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    command     INTEGER NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    reason      TEXT NULL,
    released_at REAL NULL,
    finished_at REAL NULL,
    PRIMARY KEY (plan, meter)
);
CREATE INDEX plan_meters_state ON plan_meters (plan, state, seq);
CREATE INDEX plan_meters_released ON plan_meters (state, plan);

CREATE TABLE plan_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    plan    INTEGER NOT NULL,
    at      REAL NOT NULL,
    who     TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX plan_audit_plan ON plan_audit (plan, id);
