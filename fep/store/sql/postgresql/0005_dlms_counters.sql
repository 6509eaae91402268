-- fep schema 5 (PostgreSQL): DLMS invocation counters (issue 14). Kept column for column the
-- same as sql/sqlite/0005_dlms_counters.sql.
--   kind 'send':     key CLIENT_SYSTEM_TITLE_HEX:METER, value the first counter not yet reserved
--   kind 'received': key the meter's system title in hex, value the last counter accepted
-- On PostgreSQL these rows are the counters themselves, shared by every node (reserved with
-- one INSERT ... ON CONFLICT DO UPDATE ... RETURNING per block). On SQLite they are the
-- high-water marks of the counter file in the data directory: a file missing or below them
-- refuses to start.

CREATE TABLE dlms_counters (
    kind  text NOT NULL,
    key   text NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (kind, key)
);
