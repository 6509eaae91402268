"""The parts of the test harness that keep the suite within its time (docs/testing.md, "Suite
time"): databases made and dropped in the background, child Pythons keeping their bytecode,
property tests' example counts by scale."""

from __future__ import annotations

import psycopg2
from twisted.trial import unittest

import tests.scale
from tests.daemon.harness import wait_for
from tests.postgres import _admin, drop_later, fresh_database, postgres_server, with_database
from tests.processes import BYTECODE_CACHE, share_child_bytecode
from tests.scale import examples


class DropLaterTests(unittest.TestCase):
    async def test_a_database_handed_over_is_dropped_without_the_test_waiting(self) -> None:
        base = postgres_server()
        name = "fep_test_drop_later"
        _admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        _admin(base, f"CREATE DATABASE {name}")
        kept = psycopg2.connect(with_database(base, name))  # ended by the drop (FORCE)
        self.addCleanup(kept.close)
        drop_later(base, name)

        async def gone() -> bool:
            conn = psycopg2.connect(base)
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    return cursor.fetchone() is None
            finally:
                conn.close()

        await wait_for(gone, 30, f"database {name} to be dropped", every=0.05)


class FreshDatabaseTests(unittest.TestCase):
    def test_each_call_gives_a_database_of_its_own_and_empty(self) -> None:
        # The second is the spare the first call had made in the background.
        urls = [fresh_database(self), fresh_database(self)]
        self.assertNotEqual(urls[0], urls[1])
        for url in urls:
            conn = psycopg2.connect(url)
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM information_schema.tables "
                                   "WHERE table_schema = 'public'")
                    self.assertEqual(cursor.fetchone(), (0,))
            finally:
                conn.close()


class ChildBytecodeTests(unittest.TestCase):
    def test_children_get_a_bytecode_cache_when_writing_bytecode_is_off(self) -> None:
        environ = {"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/bin"}
        share_child_bytecode(environ)
        self.assertEqual(environ, {"PYTHONPYCACHEPREFIX": str(BYTECODE_CACHE), "PATH": "/bin"})

    def test_otherwise_the_environment_is_left_alone(self) -> None:
        for environ in ({"PATH": "/bin"},
                        {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/elsewhere"}):
            before = dict(environ)
            share_child_bytecode(environ)
            self.assertEqual(environ, before)


class ExamplesTests(unittest.TestCase):
    def test_a_quarter_and_at_least_a_hundred_unless_full(self) -> None:
        self.patch(tests.scale, "FULL", False)
        self.assertEqual([examples(n) for n in (2000, 600, 300, 100)], [500, 150, 100, 100])
        self.patch(tests.scale, "FULL", True)
        self.assertEqual([examples(n) for n in (2000, 600, 300, 100)], [2000, 600, 300, 100])
