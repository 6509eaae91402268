-- fep schema 5 (SQLite): DLMS invocation counters (issue 14). Kept column for column the
-- same as sql/postgresql/0005_dlms_counters.sql.
--   kind 'send':     key CLIENT_SYSTEM_TITLE_HEX:METER, value the first counter not yet reserved
--   kind 'received': key the meter's system title in hex, value the last counter accepted
-- On SQLite these rows are the high-water marks of the counter file in the data directory
-- (DATA_DIR/dlms-invocation-counters.json): a file missing or below them refuses to start.

CREATE TABLE dlms_counters (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
