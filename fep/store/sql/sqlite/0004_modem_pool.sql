-- fep schema 4 (SQLite): modem pool call records, one row per dial attempt (issue 6).
-- Kept column for column the same as sql/postgresql/0004_modem_pool.sql. Statistics per
-- line and per site are sums over these rows.

CREATE TABLE modem_calls (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    line              TEXT NOT NULL,
    number            TEXT NOT NULL,
    site              TEXT NOT NULL,
    started           TEXT NOT NULL,
    seconds           REAL NOT NULL,
    connected_seconds REAL NOT NULL,
    result            TEXT NOT NULL,
    outcome           TEXT NOT NULL,
    error             TEXT NULL
);
CREATE INDEX modem_calls_line ON modem_calls (line, started);
CREATE INDEX modem_calls_site ON modem_calls (site, started);
