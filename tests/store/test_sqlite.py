"""The SQLite store: the shared store behaviours on a file, plus what is SQLite's own."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.errors import ConfigError, StoreError
from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Reading, Record, Severity
from fep.store import migrations, open_store
from fep.store import sqlite as sqlite_module
from fep.store.rows import record_rows
from fep.store.sqlite import (
    INSERT_EVENT,
    INSERT_INTERVAL,
    INSERT_READING,
    SqliteStore,
    _statements,
)
from tests.store.behaviours import StoreBehaviours, reading


class SqliteStoreTests(StoreBehaviours, unittest.TestCase):
    dialect = "sqlite"

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "var", "fep.sqlite")

    def new_store(self) -> SqliteStore:
        return SqliteStore(self.path, reactor)

    async def test_open_creates_parent_directories_and_a_wal_file(self) -> None:
        store = await self.opened()
        await store.write([reading()])
        self.assertTrue(os.path.exists(self.path))
        (mode,) = sqlite3.connect(self.path).execute("PRAGMA journal_mode").fetchone()
        self.assertEqual(mode, "wal")

    async def test_times_are_stored_as_sortable_utc_text(self) -> None:
        store = await self.opened()
        await store.write([reading()])
        (read_at,) = sqlite3.connect(self.path).execute("SELECT read_at FROM readings").fetchone()
        self.assertEqual(read_at, "2024-03-01T12:00:00.123456Z")

    async def test_decimals_are_stored_as_text(self) -> None:
        store = await self.opened()
        await store.write([reading()])
        (value,) = sqlite3.connect(self.path).execute("SELECT value FROM readings").fetchone()
        self.assertEqual(value, "1234.567")

    async def test_every_call_runs_off_the_reactor_thread(self) -> None:
        import threading

        store = await self.opened()
        seen: list[str] = []
        await store._call(lambda conn: seen.append(threading.current_thread().name))
        self.assertNotEqual(seen, [threading.current_thread().name])

    async def test_migrations_are_recorded_once(self) -> None:
        store = await self.opened()
        await store.upgrade()
        rows = (
            sqlite3.connect(self.path)
            .execute("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetchall()
        )
        known = [(m.version, m.name) for m in migrations.load("sqlite")]
        self.assertEqual(rows[0], (1, "0001_initial"))
        self.assertEqual(rows, known)

    async def test_a_file_that_cannot_be_made_fails_open_and_leaves_no_thread(self) -> None:
        blocker = os.path.join(self.mktemp())
        with open(blocker, "w"):
            pass
        # The parent "directory" is a file: mkdir fails.
        store = SqliteStore(os.path.join(blocker, "db", "fep.sqlite"), reactor)
        try:
            await store.open()
        except StoreError:
            pass
        else:
            self.fail("open() succeeded")
        self.assertIsNone(store._pool)


class MemorySqliteTests(unittest.TestCase):
    async def test_memory_store_works(self) -> None:
        store = open_store("sqlite::memory:", reactor)
        await store.open()
        self.addCleanup(store.close)
        self.assertEqual(await store.write([reading()]), 1)


class OpenStoreTests(unittest.TestCase):
    def test_sqlite_url_gives_a_sqlite_store_with_a_relative_path(self) -> None:
        store = open_store("sqlite:var/x.sqlite", reactor)
        self.assertIsInstance(store, SqliteStore)
        assert isinstance(store, SqliteStore)
        self.assertEqual(store.path, "var/x.sqlite")

    def test_unknown_scheme_is_a_config_error_naming_the_url(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            open_store("mysql://fep@db/fep", reactor)
        self.assertIn("mysql://fep@db/fep", str(caught.exception))

    def test_unknown_scheme_error_hides_the_password(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            open_store("mysql://fep:s3cret@db:3306/fep", reactor)
        self.assertNotIn("s3cret", str(caught.exception))
        self.assertIn("mysql://fep:***@db:3306/fep", str(caught.exception))

    def test_password_in_a_libpq_style_string_is_hidden(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            open_store("host=db user=fep password=s3cret dbname=fep", reactor)
        self.assertNotIn("s3cret", str(caught.exception))

    def test_empty_sqlite_path_is_a_config_error(self) -> None:
        self.assertRaises(ConfigError, open_store, "sqlite:", reactor)


# Rows of each kind in the populated database the migration test converts. The acceptance
# figure is 1,000,000 readings (set FEP_MIGRATION_ROWS=1000000; a few minutes); the default
# keeps the test to a few seconds.
MIGRATION_ROWS = int(os.environ.get("FEP_MIGRATION_ROWS", "20000"))
TABLE_COLUMNS = {
    "readings": "meter, obis, value, value_text, value_type, unit_code, scaler, meter_time,"
                " read_at, received_time, quality, source, native_id",
    "intervals": "meter, obis, start_time, period_s, value, value_text, value_type, status,"
                 " unit_code, scaler, received_time, source",
    "events": "meter, code, kind, severity, time, text, received_time, source",
}


def populated_records(n: int) -> list[Record]:
    """``n`` readings of every value type, ``n`` intervals and ``n // 10`` events."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    values: list[Any] = [Decimal("1.5"), 7, True, None, "text\twith\nbreaks", Decimal("-0.001")]
    records: list[Record] = [
        reading(values[i % len(values)], meter=f"m{i % 997}",
                meter_time=None if i % 13 == 0 else base + timedelta(seconds=i),
                received_time=base + timedelta(seconds=i), native_id=None if i % 2 else "x")
        for i in range(n)
    ]
    for m in range(max(1, n // 96)):
        records.append(IntervalBlock(f"m{m}", ObisCode.parse("1.8.0"), base,
                                     timedelta(minutes=15),
                                     tuple(Decimal(v) / 8 for v in range(96)),
                                     received_time=base, source="dlms"))
    for i in range(n // 10):
        records.append(MeterEvent(f"m{i % 97}", f"c{i % 7}", EventKind.POWER_OUTAGE,
                                  Severity.MAJOR, base + timedelta(minutes=i), "t", base))
    return records


class CompactSchemaTests(unittest.TestCase):
    """Migration 0014: readings, intervals and events as WITHOUT ROWID tables keyed on their
    unique key, no second index, every row kept."""

    timeout = 120 if MIGRATION_ROWS <= 100_000 else 3600

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "fep.sqlite")
        os.makedirs(os.path.dirname(self.path))

    def schema_before_0014(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute(migrations.CREATE_TABLE["sqlite"])
        for migration in migrations.load("sqlite"):
            if migration.version >= 14:
                continue
            conn.execute("BEGIN")
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 'x')",
                         (migration.version, migration.name))
            conn.execute("COMMIT")
        return conn

    def table_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        conn = sqlite3.connect(self.path)
        try:
            return {table: conn.execute(
                f"SELECT {columns} FROM {table} ORDER BY {columns}").fetchall()
                for table, columns in TABLE_COLUMNS.items()}
        finally:
            conn.close()

    async def test_the_migration_keeps_every_row_of_a_populated_database(self) -> None:
        conn = self.schema_before_0014()
        readings, intervals, events = record_rows(populated_records(MIGRATION_ROWS))
        conn.execute("BEGIN")
        conn.executemany(INSERT_READING, readings)
        conn.executemany(INSERT_INTERVAL, intervals)
        conn.executemany(INSERT_EVENT, events)
        conn.execute("COMMIT")
        conn.close()
        before = self.table_rows()
        self.assertEqual(len(before["readings"]), MIGRATION_ROWS)
        self.assertGreater(len(before["intervals"]), 0)
        self.assertGreater(len(before["events"]), 0)

        store = SqliteStore(self.path, reactor)
        await store.open()
        self.addCleanup(store.close)
        after = self.table_rows()
        # Counts and contents, row for row (the sorted rows are the checksum).
        self.assertEqual({t: len(r) for t, r in after.items()},
                         {t: len(r) for t, r in before.items()})
        self.assertEqual(after, before)

        check = sqlite3.connect(self.path)
        self.addCleanup(check.close)
        for table in TABLE_COLUMNS:
            (sql,) = check.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                   (table,)).fetchone()
            self.assertIn("WITHOUT ROWID", sql)
        indexes = check.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND"
                                " tbl_name IN ('readings', 'intervals', 'events')").fetchall()
        self.assertEqual(indexes, [])
        # The unique key still deduplicates, and the store reads what was migrated.
        records = populated_records(MIGRATION_ROWS)
        self.assertEqual(await store.write(records[:500]), 0)
        self.assertEqual(len(await store.readings("m5")),
                         len([r for r in records if getattr(r, "meter", "") == "m5"
                              and isinstance(r, Reading)]))

    async def test_batches_are_written_in_key_order_and_checkpointed_periodically(
        self,
    ) -> None:
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 3)
        store = SqliteStore(self.path, reactor)
        await store.open()
        self.addCleanup(store.close)
        records = populated_records(600)
        shuffled = records[::-1]
        for i in range(7):
            await store.write(shuffled[i * 100:(i + 1) * 100])
        self.assertEqual(store.checkpoints, 2)
        self.assertEqual(await store.count("readings"), 600)
        pragmas = await store._call(lambda conn: (
            conn.execute("PRAGMA cache_size").fetchone()[0],
            conn.execute("PRAGMA journal_size_limit").fetchone()[0],
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]))
        self.assertEqual(pragmas, (-65536, 64 * 1024 * 1024, 16384))
        # Rows sorted by key before the INSERT: seen through a connection that traces them.
        seen: list[str] = []

        def traced(conn: sqlite3.Connection) -> int:
            conn.set_trace_callback(seen.append)
            try:
                return sqlite_module._write(conn, backwards)
            finally:
                conn.set_trace_callback(None)

        backwards = [r for r in shuffled if isinstance(r, Reading)][:50]
        await store._call(lambda conn: conn.execute("DELETE FROM readings"))
        self.assertEqual(await store._call(traced), 50)
        meters = [line.split("'")[1] for line in seen if line.startswith("INSERT OR IGNORE")]
        self.assertEqual(len(meters), 50)
        self.assertEqual(meters, sorted(meters))
        self.assertNotEqual(meters, [r.meter for r in backwards])  # they came unsorted
