"""The SQLite store: the shared store behaviours on a file, plus what is SQLite's own."""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import reactor
from twisted.trial import unittest

from fep.errors import ConfigError, StoreError
from fep.store import migrations, open_store
from fep.store.sqlite import SqliteStore
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
