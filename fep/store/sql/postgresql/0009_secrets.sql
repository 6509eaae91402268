-- fep schema 9 (PostgreSQL): secrets at rest (issue 14). Kept column for column the same
-- as sql/sqlite/0009_secrets.sql. One row per secret of a meter (meter '' holds the
-- configuration's secrets, `secret:NAME` in fep.ini): the value sealed with AES-256-GCM under
-- its own data key, the data key wrapped by the master key whose id is key_id
-- (fep.vault). Nothing here reveals a value: fingerprint is an HMAC under a key derived
-- from the master key.

CREATE TABLE secrets (
    id          bigserial PRIMARY KEY,
    meter       text NOT NULL,
    name        text NOT NULL,
    key_id      text NOT NULL,
    fingerprint text NOT NULL,
    nonce       bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    wrapped_key bytea NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (meter, name)
);
