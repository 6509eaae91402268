"""The secret store: sealed secrets in the store's ``secrets`` table (migration 0009),
SQLite or PostgreSQL, through the store's own ``interact`` (its thread or its pool).

Sealing and opening are fep.vault's; this module keeps the rows. A clear value exists only
in memory, in what ``values()`` returns: never in a row, a log event or an error message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from fep.interfaces import ISecretStore
from fep.model import utcnow
from fep.store.rows import parse_time, text_time
from fep.vault import MasterKey, Sealed, SecretInfo, open_sealed, rewrap, seal

COLUMNS = "id, meter, name, key_id, fingerprint, nonce, ciphertext, wrapped_key, created"
UPSERT = (
    "INSERT INTO secrets (meter, name, key_id, fingerprint, nonce, ciphertext, wrapped_key,"
    " created) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
    " ON CONFLICT (meter, name) DO UPDATE SET key_id = excluded.key_id,"
    " fingerprint = excluded.fingerprint, nonce = excluded.nonce,"
    " ciphertext = excluded.ciphertext, wrapped_key = excluded.wrapped_key,"
    " created = excluded.created"
)
REWRAP = (
    "UPDATE secrets SET key_id = {p}, fingerprint = {p}, wrapped_key = {p} WHERE id = {p}"
)


@attrs.frozen
class SecretRow:
    info: SecretInfo
    sealed: Sealed


def _row(row: Sequence[Any]) -> SecretRow:
    created = row[8] if isinstance(row[8], datetime) else parse_time(row[8])
    info = SecretInfo(int(row[0]), row[1], row[2], row[3], row[4], created)
    return SecretRow(info, Sealed(row[3], row[4], bytes(row[5]), bytes(row[6]), bytes(row[7])))


def _where(meter: str | None, name: str | None, p: str) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if meter is not None:
        clauses.append(f"meter = {p}")
        args.append(meter)
    if name is not None:
        clauses.append(f"name = {p}")
        args.append(name)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _params(sealed: Sealed) -> list[Any]:
    return [sealed.key_id, sealed.fingerprint, sealed.nonce, sealed.ciphertext,
            sealed.wrapped_key]


Rewrap = Callable[[str, str, Sealed], Sealed]

# -- SQLite (runs on the store thread)


def sqlite_put(conn: sqlite3.Connection, meter: str, name: str, sealed: Sealed) -> SecretRow:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(UPSERT.format(p="?"),
                     [meter, name, *_params(sealed), text_time(utcnow())])
        rows = sqlite_rows(conn, meter, name)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return rows[0]


def sqlite_rows(conn: sqlite3.Connection, meter: str | None, name: str | None = None) -> list[
    SecretRow
]:
    where, args = _where(meter, name, "?")
    sql = f"SELECT {COLUMNS} FROM secrets{where} ORDER BY meter, name"
    return [_row(r) for r in conn.execute(sql, args).fetchall()]


def sqlite_delete(conn: sqlite3.Connection, meter: str, name: str) -> bool:
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = conn.execute("DELETE FROM secrets WHERE meter = ? AND name = ?",
                         (meter, name)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return n > 0


def sqlite_rewrap(conn: sqlite3.Connection, transform: Rewrap) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = sqlite_rows(conn, None)
        for row in rows:
            new = transform(row.info.meter, row.info.name, row.sealed)
            conn.execute(REWRAP.format(p="?"),
                         (new.key_id, new.fingerprint, new.wrapped_key, row.info.id))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(rows)


# -- PostgreSQL (txpostgres interactions: one transaction each)


async def postgres_put(cursor: Any, meter: str, name: str, sealed: Sealed) -> SecretRow:
    await cursor.execute(UPSERT.format(p="%s"), [meter, name, *_params(sealed), utcnow()])
    rows = await postgres_rows(cursor, meter, name)
    return rows[0]


async def postgres_rows(cursor: Any, meter: str | None, name: str | None = None,
                        lock: bool = False) -> list[SecretRow]:
    where, args = _where(meter, name, "%s")
    sql = f"SELECT {COLUMNS} FROM secrets{where} ORDER BY meter, name"
    await cursor.execute(sql + (" FOR UPDATE" if lock else ""), args)
    return [_row(r) for r in cursor.fetchall()]


async def postgres_delete(cursor: Any, meter: str, name: str) -> bool:
    await cursor.execute("DELETE FROM secrets WHERE meter = %s AND name = %s", (meter, name))
    return bool(cursor.rowcount)


async def postgres_rewrap(cursor: Any, transform: Rewrap) -> int:
    rows = await postgres_rows(cursor, None, lock=True)
    for row in rows:
        new = transform(row.info.meter, row.info.name, row.sealed)
        await cursor.execute(REWRAP.format(p="%s"),
                             (new.key_id, new.fingerprint, new.wrapped_key, row.info.id))
    return len(rows)


@implementer(ISecretStore)
class SecretStore:
    """ISecretStore on an open SqliteStore or PostgresStore, sealing under ``master``."""

    def __init__(self, store: Any, master: MasterKey) -> None:
        from fep.store.postgres import PostgresStore

        self.store = store
        self.master = master
        self.postgres = isinstance(store, PostgresStore)

    @property
    def master_key_id(self) -> str:
        return self.master.key_id

    def _do(self, sqlite_work: Callable[..., Any], postgres_work: Callable[..., Any],
            *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = self.store.interact(
            postgres_work if self.postgres else sqlite_work, *args)
        return d

    def put(self, meter: str, name: str, value: str) -> Deferred[SecretInfo]:
        sealed = seal(self.master, meter, name, value.encode())
        d = self._do(sqlite_put, postgres_put, meter, name, sealed)
        return d.addCallback(lambda row: row.info)

    def values(self, meter: str | None = None) -> Deferred[dict[str, dict[str, str]]]:
        def opened(rows: list[SecretRow]) -> dict[str, dict[str, str]]:
            found: dict[str, dict[str, str]] = {}
            for row in rows:
                clear = open_sealed(self.master, row.info.meter, row.info.name, row.sealed)
                found.setdefault(row.info.meter, {})[row.info.name] = clear.decode()
            return found

        return self._do(sqlite_rows, postgres_rows, meter).addCallback(opened)

    def infos(self, meter: str | None = None) -> Deferred[list[SecretInfo]]:
        d = self._do(sqlite_rows, postgres_rows, meter)
        return d.addCallback(lambda rows: [row.info for row in rows])

    def delete(self, meter: str, name: str) -> Deferred[bool]:
        d: Deferred[bool] = self._do(sqlite_delete, postgres_delete, meter, name)
        return d

    def rotate_master(self, new: MasterKey) -> Deferred[int]:
        old = self.master

        def transform(meter: str, name: str, sealed: Sealed) -> Sealed:
            return rewrap(old, new, meter, name, sealed)

        def done(count: int) -> int:
            self.master = new
            return count

        d: Deferred[int] = self._do(sqlite_rewrap, postgres_rewrap, transform)
        return d.addCallback(done)


def read_sync(url: str, meter: str, names: Sequence[str]) -> list[SecretRow]:
    """The rows of ``names`` of ``meter``, read with a short blocking connection of its own
    (for the configuration's ``secret:NAME`` values, resolved before the daemon's reactor
    runs). A store without the table yet has none."""
    marks = ", ".join("?" for _ in names)
    sql = f"SELECT {COLUMNS} FROM secrets WHERE meter = ? AND name IN ({marks})"
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error:
            return []
        try:
            return [_row(r) for r in conn.execute(sql, [meter, *names]).fetchall()]
        except sqlite3.Error:
            return []
        finally:
            conn.close()
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        cur = conn.cursor()
        try:
            cur.execute(sql.replace("?", "%s"), [meter, *names])
        except psycopg2.errors.UndefinedTable:
            return []
        return [_row(r) for r in cur.fetchall()]
    finally:
        conn.close()
