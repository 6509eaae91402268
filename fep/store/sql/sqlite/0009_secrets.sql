-- fep schema 9 (SQLite): secrets at rest (issue 14). Kept column for column the same as
-- sql/postgresql/0009_secrets.sql. One row per secret of a meter (meter '' holds the
-- configuration's secrets, `secret:NAME` in fep.ini): the value sealed with AES-256-GCM under
-- its own data key, the data key wrapped by the master key whose id is key_id
-- (fep.vault). Nothing here reveals a value: fingerprint is an HMAC under a key derived
-- from the master key.

CREATE TABLE secrets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    meter       TEXT NOT NULL,
    name        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    wrapped_key BLOB NOT NULL,
    created     TEXT NOT NULL,
    UNIQUE (meter, name)
);
