-- fep schema 2 (SQLite): the collection engine's tasks, jobs (with their leases), commands
-- and their audit trail, daily communication statistics, and where inbound sessions are.
-- Kept column for column the same as sql/postgresql/0002_collect.sql. Times here are POSIX
-- seconds (REAL), as the engine's clock gives them; options/params are JSON text.

CREATE TABLE tasks (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    schedule    TEXT NOT NULL,
    target      TEXT NOT NULL DEFAULT 'all',
    items       TEXT NOT NULL DEFAULT '',
    priority    INTEGER NOT NULL DEFAULT 2,
    retries     INTEGER NOT NULL DEFAULT 2,
    retry_delay REAL NOT NULL DEFAULT 60,
    backoff     REAL NOT NULL DEFAULT 2,
    deadline    REAL NULL,
    starts_at   REAL NULL,
    ends_at     REAL NULL,
    options     TEXT NOT NULL DEFAULT '{}',
    enabled     INTEGER NOT NULL DEFAULT 1,
    next_due    REAL NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task         TEXT NULL,
    meter        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    route        TEXT NOT NULL,
    resource     TEXT NOT NULL,
    items        TEXT NOT NULL DEFAULT '',
    params       TEXT NOT NULL DEFAULT '{}',
    command      INTEGER NULL,
    pinned       TEXT NULL,
    priority     INTEGER NOT NULL,
    due          REAL NOT NULL,
    run_at       REAL NOT NULL,
    deadline     REAL NULL,
    max_attempts INTEGER NOT NULL DEFAULT 1,
    retry_delay  REAL NOT NULL DEFAULT 60,
    backoff      REAL NOT NULL DEFAULT 2,
    status       TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    node         TEXT NULL,
    lease_until  REAL NULL,
    started_at   REAL NULL,
    finished_at  REAL NULL,
    result       TEXT NULL,
    error        TEXT NULL,
    bytes_in     INTEGER NOT NULL DEFAULT 0,
    bytes_out    INTEGER NOT NULL DEFAULT 0,
    records      INTEGER NOT NULL DEFAULT 0,
    first_ok     INTEGER NULL
);
-- One job per task run and meter, whichever node expands the run.
CREATE UNIQUE INDEX jobs_task_run ON jobs (task, meter, due) WHERE task IS NOT NULL;
CREATE INDEX jobs_runnable ON jobs (status, run_at);
CREATE INDEX jobs_resource ON jobs (resource, status);
CREATE INDEX jobs_meter ON jobs (meter, due);

CREATE TABLE commands (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    meter             TEXT NOT NULL,
    action            TEXT NOT NULL,
    params            TEXT NOT NULL DEFAULT '{}',
    requested_by      TEXT NOT NULL,
    requested_at      REAL NOT NULL,
    status            TEXT NOT NULL,
    approval_required INTEGER NOT NULL DEFAULT 0,
    approved_by       TEXT NULL,
    approved_at       REAL NULL,
    job               INTEGER NULL,
    outcome           TEXT NULL,
    progress          TEXT NOT NULL DEFAULT '{}',
    finished_at       REAL NULL
);

CREATE TABLE command_audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    command  INTEGER NOT NULL,
    at       REAL NOT NULL,
    who      TEXT NOT NULL,
    action   TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX command_audit_command ON command_audit (command, id);

-- Daily communication statistics: one row per day and scope (task, route, channel, meter).
-- first_ok: jobs that succeeded at their first attempt; ok: that succeeded at all.
CREATE TABLE collect_stats (
    day     TEXT NOT NULL,
    scope   TEXT NOT NULL,
    key     TEXT NOT NULL,
    jobs    INTEGER NOT NULL DEFAULT 0,
    first_ok INTEGER NOT NULL DEFAULT 0,
    ok      INTEGER NOT NULL DEFAULT 0,
    failed  INTEGER NOT NULL DEFAULT 0,
    missed  INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, scope, key)
);

-- Inbound sessions (GPRS modems that dialled in) live on one node: jobs for their resource
-- are leased only by that node.
CREATE TABLE session_homes (
    resource   TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    updated_at REAL NOT NULL
);
