-- fep schema 4 (PostgreSQL): modem pool call records, one row per dial attempt (issue 6).
-- Kept column for column the same as sql/sqlite/0004_modem_pool.sql. Statistics per line
-- and per site are sums over these rows.

CREATE TABLE modem_calls (
    id                bigserial PRIMARY KEY,
    line              text NOT NULL,
    number            text NOT NULL,
    site              text NOT NULL,
    started           timestamptz NOT NULL,
    seconds           double precision NOT NULL,
    connected_seconds double precision NOT NULL,
    result            text NOT NULL,
    outcome           text NOT NULL,
    error             text NULL
);
CREATE INDEX modem_calls_line ON modem_calls (line, started);
CREATE INDEX modem_calls_site ON modem_calls (site, started);
