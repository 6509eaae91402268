"""The SQLite store: the embedded default, one file under var/, written from one thread.

Every sqlite3 call runs on the store's own worker thread (a ThreadPool of one, started by
``open()`` and stopped by ``close()``), so the reactor thread never waits on the disk and the
connection is only ever used by one thread. The file is in WAL mode with
``synchronous=NORMAL``: readers (the ``fep`` command) do not block the daemon's writes, and a
commit costs no fsync until checkpoint. Each ``write()`` is one transaction with one
``executemany`` of ``INSERT OR IGNORE`` per record kind, its rows sorted by the table's key
(readings, intervals and events are WITHOUT ROWID tables keyed on (meter, quantity, time)
since migration 0014, so sorted rows land on neighbouring pages). The page cache is
``CACHE_KIB``; SQLite checkpoints by itself at ``WAL_AUTOCHECKPOINT_PAGES``, the store
runs a passive WAL checkpoint every ``CHECKPOINT_EVERY`` writes as well, and the WAL file is
cut back to ``WAL_LIMIT_BYTES`` after checkpoints.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from fep.errors import StoreError
from fep.interfaces import IStore
from fep.model import (
    EventKind,
    IntervalBlock,
    Meter,
    MeterEvent,
    Quality,
    Reading,
    Record,
    Severity,
    utcnow,
)
from fep.reactors import ITimeAndThreads
from fep.store import migrations
from fep.store.rows import (
    TABLES,
    IntervalRow,
    decode_value,
    interval_blocks,
    obis_filter,
    obis_of,
    parse_time,
    parse_time_or_none,
    record_rows,
    text_time,
    unit_of,
    utc,
)

log = Logger()

T = TypeVar("T")

MEMORY = ":memory:"

# The page cache of the store's connection, KiB (SQLite's default is 2 MiB).
CACHE_KIB = 64 * 1024
# A passive WAL checkpoint after this many writes; the WAL file is cut back to this size.
CHECKPOINT_EVERY = 100
WAL_LIMIT_BYTES = 64 * 1024 * 1024
# SQLite checkpoints by itself once the WAL holds this many pages (its default is 1,000):
# a page that several commits changed is then written back to the database once.
WAL_AUTOCHECKPOINT_PAGES = 16384

# The unique keys of the rows of fep.store.rows.record_rows.
_READING_KEY = itemgetter(0, 1, 8)  # meter, obis, read_at
_INTERVAL_KEY = itemgetter(0, 1, 2)  # meter, obis, start_time
_EVENT_KEY = itemgetter(0, 1, 4)  # meter, code, time

INSERT_READING = (
    "INSERT OR IGNORE INTO readings (meter, obis, value, value_text, value_type, unit_code,"
    " scaler, meter_time, read_at, received_time, quality, source, native_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_INTERVAL = (
    "INSERT OR IGNORE INTO intervals (meter, obis, start_time, period_s, value, value_text,"
    " value_type, status, unit_code, scaler, received_time, source)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (meter, code, kind, severity, time, text, received_time,"
    " source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_METER = (
    "INSERT INTO meters (id, protocol, route, serial, address, credentials, metadata,"
    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET protocol = excluded.protocol, route = excluded.route,"
    " serial = excluded.serial, address = excluded.address,"
    " credentials = excluded.credentials, metadata = excluded.metadata,"
    " updated_at = excluded.updated_at"
)
METER_COLUMNS = "id, protocol, route, serial, address, credentials, metadata"
READING_COLUMNS = (
    "meter, obis, value, value_text, value_type, unit_code, scaler, meter_time,"
    " received_time, quality, source, native_id"
)


@implementer(IStore)
class SqliteStore:
    """IStore on one SQLite file (or ``:memory:`` for tests)."""

    def __init__(
        self,
        path: str,
        reactor: ITimeAndThreads | None = None,
        *,
        url: str | None = None,
        threadpool: ThreadPool | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast(ITimeAndThreads, default_reactor)
        self.path = path
        self.url = url if url is not None else f"sqlite:{path}"
        self._reactor: ITimeAndThreads = reactor
        # A given pool (tests pass one that runs work at once) is used instead of our own.
        self._given_pool = threadpool
        self._pool: ThreadPool | None = None
        self._conn: sqlite3.Connection | None = None
        self._migrated = False
        self._writes = 0  # writes since the last checkpoint (store thread only)
        self.checkpoints = 0

    # -- lifecycle -----------------------------------------------------------------------

    def _start_thread(self) -> None:
        if self._pool is None:
            pool = self._given_pool or ThreadPool(
                minthreads=1, maxthreads=1, name=f"fep-store {self.url}"
            )
            pool.start()
            self._pool = pool

    def _call(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``work(connection, *args)`` on the store thread; sqlite errors become
        StoreError naming the store."""
        if self._pool is None:
            return fail(StoreError(f"{self.url}: store is not open"))

        def run() -> T:
            try:
                return work(self._connection(), *args)
            except (sqlite3.Error, OSError) as e:
                raise StoreError(f"{self.url}: {e}") from e

        return deferToThreadPool(self._reactor, self._pool, run)

    def interact(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``work(connection, *args)`` on the store thread: how the tables of other
        modules (the collection engine's jobs, fep.collect.jobstore) share this store's file,
        thread and connection. ``work`` runs its own BEGIN/COMMIT."""
        return self._call(work, *args)

    def _connection(self) -> sqlite3.Connection:
        # Runs on the store thread only.
        if self._conn is None:
            if self.path != MEMORY and not self.path.startswith("file:"):
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                _create_private(self.path)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per write().
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # Deleted and replaced rows (a meter's metadata that held a key) are zeroed,
            # not left in free pages.
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Another process (the `fep` command) may hold the write lock for a moment.
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self._conn = conn
        return self._conn

    def open(self) -> Deferred[None]:
        """Start the store thread, open the file and apply pending migrations."""
        d = self.upgrade()

        def opened(applied: list[str]) -> None:
            for name in applied:
                log.info("store {url}: applied migration {name}", url=self.url, name=name)

        return d.addCallback(opened)

    def upgrade(self) -> Deferred[list[str]]:
        """Apply pending migrations (opening the file first if need be)."""
        self._start_thread()
        return Deferred.fromCoroutine(self._upgrade())

    async def _upgrade(self) -> list[str]:
        try:
            return await self._call(_apply_migrations)
        except BaseException:
            # A store that could not open keeps no thread: the caller may never call
            # close(), and a live worker thread would keep the process from exiting.
            await self.close()
            raise

    def close(self) -> Deferred[None]:
        if self._pool is None:
            return succeed(None)
        pool = self._pool

        def shut(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None

        def stop(result: object) -> object:
            # The one worker is idle now that its last job ran, so the join is immediate.
            pool.stop()
            if self._pool is pool:
                self._pool = None
            return result

        d: Deferred[None] = self._call(shut)
        return d.addBoth(stop)

    # -- writes --------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> Deferred[int]:
        """Commit a batch in one transaction; fires with how many rows were new."""
        return self._call(self._write, records)

    def _write(self, conn: sqlite3.Connection, records: Sequence[Record]) -> int:
        new = _write(conn, records)
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY:
            self._writes = 0
            # PASSIVE: never waits for a reader (the `fep` command); what it cannot copy
            # back now, the next one will.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        return new

    def add_meters(self, meters: Sequence[Meter]) -> Deferred[int]:
        return self._call(_add_meters, meters)

    # -- queries -------------------------------------------------------------------------

    def meters(self) -> Deferred[list[Meter]]:
        return self._call(_meters, None)

    def meter(self, meter_id: str) -> Deferred[Meter | None]:
        def one(conn: sqlite3.Connection) -> Meter | None:
            found = _meters(conn, meter_id)
            return found[0] if found else None

        return self._call(one)

    def readings(
        self,
        meter_id: str,
        since: datetime | None = None,
        obis: str | None = None,
        limit: int | None = None,
    ) -> Deferred[list[Reading]]:
        """A meter's readings ordered by time then OBIS; ``since`` is inclusive."""
        return self._call(_readings, meter_id, since, obis, limit)

    def intervals(
        self, meter_id: str, obis: str | None = None, since: datetime | None = None
    ) -> Deferred[list[IntervalBlock]]:
        """A meter's stored intervals, joined into blocks of consecutive intervals, ordered
        by OBIS then start; ``since`` (inclusive) filters on interval start."""
        return self._call(_intervals, meter_id, obis, since)

    def events(self, meter_id: str, since: datetime | None = None) -> Deferred[list[MeterEvent]]:
        """A meter's events ordered by time then code; ``since`` is inclusive."""
        return self._call(_events, meter_id, since)

    def count(self, table: str) -> Deferred[int]:
        if table not in TABLES:
            return fail(StoreError(f"{self.url}: no table {table!r} (one of {', '.join(TABLES)})"))

        def counted(conn: sqlite3.Connection) -> int:
            (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            return int(n)

        return self._call(counted)


# The functions below run on the store thread.


def _create_private(path: str) -> None:
    """Make a new database file of mode 0600 (SQLite gives its -wal and -shm files the
    mode of the database file); an existing file is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _apply_migrations(conn: sqlite3.Connection) -> list[str]:
    conn.execute(migrations.CREATE_TABLE["sqlite"])
    applied = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    names = []
    for migration in migrations.pending(migrations.load("sqlite"), applied):
        # executescript would commit on its own; run the file's statements inside our BEGIN
        # so a failing migration leaves nothing behind.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, text_time(utcnow())),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        names.append(migration.name)
    return names


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (complete_statement respects quotes and
    comments, so a ';' inside a string does not split)."""
    statements: list[str] = []
    current = ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current)
            current = ""
    if current.strip() and not _only_comments(current):
        raise StoreError(f"unterminated statement in migration: {current.strip()[:60]}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def _write(conn: sqlite3.Connection, records: Sequence[Record]) -> int:
    readings, intervals, events = record_rows(records)
    # Key order: each row goes next to the previous one in the table's B-tree.
    readings.sort(key=_READING_KEY)
    intervals.sort(key=_INTERVAL_KEY)
    events.sort(key=_EVENT_KEY)
    before = conn.total_changes
    conn.execute("BEGIN")
    try:
        if readings:
            conn.executemany(INSERT_READING, readings)
        if intervals:
            conn.executemany(INSERT_INTERVAL, intervals)
        if events:
            conn.executemany(INSERT_EVENT, events)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    # INSERT OR IGNORE counts only the rows it really inserted.
    return conn.total_changes - before


def _add_meters(conn: sqlite3.Connection, meters: Sequence[Meter]) -> int:
    now = text_time(utcnow())
    rows = [
        (
            m.id,
            m.protocol,
            m.route,
            m.serial,
            m.address,
            m.credentials,
            json.dumps(dict(m.metadata), sort_keys=True),
            now,
            now,
        )
        for m in meters
    ]
    conn.execute("BEGIN")
    try:
        conn.executemany(UPSERT_METER, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(rows)


def meter_of(row: Sequence[Any]) -> Meter:
    return Meter(
        id=row[0],
        protocol=row[1],
        route=row[2],
        serial=row[3],
        address=row[4],
        credentials=row[5],
        metadata=json.loads(row[6]) if row[6] else {},
    )


def _meters(conn: sqlite3.Connection, meter_id: str | None) -> list[Meter]:
    if meter_id is None:
        rows = conn.execute(f"SELECT {METER_COLUMNS} FROM meters ORDER BY id").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {METER_COLUMNS} FROM meters WHERE id = ?", (meter_id,)
        ).fetchall()
    return [meter_of(row) for row in rows]


def _readings(
    conn: sqlite3.Connection,
    meter_id: str,
    since: datetime | None,
    obis: str | None,
    limit: int | None,
) -> list[Reading]:
    sql = f"SELECT {READING_COLUMNS} FROM readings WHERE meter = ?"
    params: list[Any] = [meter_id]
    if since is not None:
        sql += " AND read_at >= ?"
        params.append(text_time(utc(since)))
    if obis is not None:
        sql += " AND obis = ?"
        params.append(obis_filter(obis))
    sql += " ORDER BY read_at, obis"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [
        Reading(
            meter=row[0],
            obis=obis_of(row[1]),
            value=decode_value(row[2], row[3], row[4]),
            unit=unit_of(row[5]),
            scaler=row[6],
            meter_time=parse_time_or_none(row[7]),
            received_time=parse_time(row[8]),
            quality=Quality(row[9]),
            source=row[10],
            native_id=row[11],
        )
        for row in conn.execute(sql, params)
    ]


def _intervals(
    conn: sqlite3.Connection, meter_id: str, obis: str | None, since: datetime | None
) -> list[IntervalBlock]:
    sql = (
        "SELECT meter, obis, start_time, period_s, value, value_text, value_type, status,"
        " unit_code, scaler, received_time, source FROM intervals WHERE meter = ?"
    )
    params: list[Any] = [meter_id]
    if obis is not None:
        sql += " AND obis = ?"
        params.append(obis_filter(obis))
    if since is not None:
        sql += " AND start_time >= ?"
        params.append(text_time(utc(since)))
    sql += " ORDER BY obis, start_time"
    rows: list[IntervalRow] = [
        (
            row[0],
            row[1],
            parse_time(row[2]),
            row[3],
            decode_value(row[4], row[5], row[6]),
            row[7],
            row[8],
            row[9],
            parse_time(row[10]),
            row[11],
        )
        for row in conn.execute(sql, params)
    ]
    return interval_blocks(rows)


def _events(conn: sqlite3.Connection, meter_id: str, since: datetime | None) -> list[MeterEvent]:
    sql = (
        "SELECT meter, code, kind, severity, time, text, received_time, source"
        " FROM events WHERE meter = ?"
    )
    params: list[Any] = [meter_id]
    if since is not None:
        sql += " AND time >= ?"
        params.append(text_time(utc(since)))
    sql += " ORDER BY time, code"
    return [
        MeterEvent(
            meter=row[0],
            code=row[1],
            kind=EventKind(row[2]),
            severity=Severity(row[3]),
            time=parse_time(row[4]),
            text=row[5],
            received_time=parse_time(row[6]),
            source=row[7],
        )
        for row in conn.execute(sql, params)
    ]
